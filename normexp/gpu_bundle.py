"""The anchors' scale on one GPU, as one prepared command (README "On a GPU").

``python -m normexp.gpu_bundle build --out bundle/`` writes a self-contained folder: the code,
the pure-python wheels the training path needs beyond PyTorch and numpy (Hydra, OmegaConf, ...),
the data (PTB characters whole; the largest class-balanced CIFAR-10 subset that keeps the bundle
and the repository's tracked files within 64 MiB, or the bundle alone with ``--alone``), a
MANIFEST.json of sha256 checksums and ``run_gpu.sh``. On any CUDA machine with PyTorch,
``bash bundle/run_gpu.sh`` checks every file, unpacks data and wheels under ``bundle/work/``,
calibrates each run's epoch time, trains C7 at Cooijmans et al.'s scale and C4 in the GN paper's
protocol (every cell at once, as many epochs as fit the budget) and packs the runs into
``gpu_results.tar.gz``; ``import`` puts them into the results store (``results/<profile>/runs/``).

The CIFAR-10 subset is written in the standard layout (pickled ``data_batch_1..5`` and
``test_batch``), so the suite's loader reads it unchanged; its content fingerprints are those of
the full set, so the runs set ``data.verify=false`` and the manifest's checksums verify the data
instead; ``gpu.cifar_subset`` (the subset's content hash) and the explicit ``data.n_*`` sizes put
the subset into every run's config and key.

Imports only the standard library at module level: ``run`` executes before the wheels are in.
"""

import argparse
import hashlib
import json
import lzma
import math
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MIB = 1 << 20
LIMIT_MIB = 64  # the device tool's working-tree limit; also a quick scp
MARGIN_MIB = 3  # left free for the store's growth between building and sending
# What the training path imports beyond the standard library, PyTorch and numpy (checked by
# tests/e2e/test_gpu_bundle.py in an environment without them). Versions: this environment's.
PACKAGES = (
    "hydra-core",
    "omegaconf",
    "antlr4-python3-runtime",
    "hydra-joblib-launcher",
    "joblib",
    "cloudpickle",  # joblib 1.6 no longer vendors it
    "tqdm",
    "packaging",
    "PyYAML",  # its wheel is compiled, but yaml/ falls back to pure python: .so files are skipped
)
CODE = ("normexp", "hydra_plugins", "configs", "experiments", "pyproject.toml")
PTB_FILES = ("ptb.char.train.txt", "ptb.char.valid.txt", "ptb.char.test.txt")
CIFAR = "cifar-10-batches-py"
CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
ROW = 3 * 32 * 32
NUM_CLASSES = 10
MANIFEST = "MANIFEST.json"
RESULTS_PACK = "gpu_results.tar.gz"
PLAN = "gpu_plan.json"
# Parts: experiments that share one epoch count (C4's ghost BN and its references are compared).
PARTS = {
    "C7": ("gpu_rnn_cooijmans",),
    "C4": ("gpu_small_batch_devices", "gpu_small_batch_norms"),
}
CELLS = {"gpu_rnn_cooijmans": 3, "gpu_small_batch_devices": 5, "gpu_small_batch_norms": 4}
CIFAR_EXPERIMENTS = ("gpu_small_batch_devices", "gpu_small_batch_norms")
CALIBRATION_STEPS = {"paper": 30, "smoke": 2}
PROFILE_EPOCHS = {"paper": {"C7": 30, "C4": 100}, "smoke": {"C7": 2, "C4": 1}}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            h.update(block)
    return h.hexdigest()


def tracked_bytes(repo: Path = REPO) -> int:
    """Bytes of the repository's tracked files (what travels with a bundle inside the tree)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=repo, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return 0  # not a checkout: nothing else travels
    paths = (repo / p for p in out.decode().split("\0") if p)
    return sum(p.lstat().st_size for p in paths if p.is_symlink() or p.is_file())


def travelling_bytes(alone: bool, repo: Path = REPO) -> int:
    """What travels beside the bundle: nothing when it is copied alone (scp to a CUDA machine),
    the tracked files when the whole working tree is sent with it (the device tool)."""
    return 0 if alone else tracked_bytes(repo)


# --- build ------------------------------------------------------------------------------------


def copy_code(out: Path) -> None:
    """The tracked files of the suite's code and configs (symlinks kept as links)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", *CODE], cwd=REPO, capture_output=True, check=True
    ).stdout.decode()
    for rel in filter(None, listed.split("\0")):
        src, dst = REPO / rel, out / "code" / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            dst.symlink_to(os.readlink(src))
        elif src.is_file():  # deleted but not yet committed: skipped
            shutil.copy2(src, dst)


def fetch_wheels(out: Path, wheels_from: Path | None) -> None:
    """One wheel per package of PACKAGES, at this environment's version: copied from
    ``wheels_from`` when it has it, else ``pip download`` (sdists built into wheels here)."""
    from importlib.metadata import version  # this tool imports only what its step needs

    dest = out / "wheels"
    dest.mkdir(parents=True, exist_ok=True)
    for name in PACKAGES:
        spec = f"{name}=={version(name)}"
        norm = name.lower().replace("-", "_")
        found = [
            w for w in (wheels_from.glob("*.whl") if wheels_from else ())
            if w.name.lower().startswith(f"{norm}-{version(name)}-")
        ]
        if found:
            shutil.copy2(found[0], dest / found[0].name)
            continue
        tmp = out / ".download"
        pip = [sys.executable, "-m", "pip", "-q"]
        subprocess.run([*pip, "download", "--no-deps", "-d", str(tmp), spec], check=True)
        for got in tmp.iterdir():
            if got.suffix == ".whl":
                shutil.move(got, dest / got.name)
            else:  # an sdist (antlr4-python3-runtime 4.9.3 has no wheel): built here, offline
                subprocess.run(
                    [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dest), str(got)],
                    check=True,
                )
                got.unlink()
        tmp.rmdir()


def write_xz(path: Path, payload: bytes, preset: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(lzma.compress(payload, preset=preset))


def pack_ptb(data_dir: Path, out: Path, preset: int) -> dict[str, str]:
    """PTB's character files, whole and xz-compressed; their sha256 as unpacked."""
    unpacked = {}
    for name in PTB_FILES:
        raw = (data_dir / "ptb" / name).read_bytes()
        write_xz(out / "data" / "ptb" / f"{name}.xz", raw, preset)
        unpacked[f"ptb/{name}"] = hashlib.sha256(raw).hexdigest()
    return unpacked


def cifar_batches(x, y, parts: int) -> list[bytes]:  # noqa: ANN001 - numpy arrays
    """Pickled batches of the standard layout (what normexp.data.cifar10 reads)."""
    import numpy as np  # only to pack the data subset: the bundle tool stays light

    return [
        pickle.dumps({"data": np.ascontiguousarray(d), "labels": [int(v) for v in lab]}, protocol=4)
        for d, lab in zip(np.array_split(x, parts), np.array_split(y, parts), strict=True)
    ]


def cifar_subset(labels, per_class: int):  # noqa: ANN001, ANN201 - numpy in, numpy out
    """Indices of the first ``per_class`` images of each class in a seeded order, sorted: class
    balanced, and nested (the subset of k is inside the subset of k + 1)."""
    import numpy as np  # only to pack the data subset: the bundle tool stays light

    order = np.random.default_rng(0).permutation(len(labels))
    chosen = [order[labels[order] == c][:per_class] for c in range(NUM_CLASSES)]
    if min(len(c) for c in chosen) < per_class:
        raise SystemExit(f"gpu_bundle: fewer than {per_class} images in some CIFAR-10 class")
    return np.sort(np.concatenate(chosen))


def pack_cifar(
    data_dir: Path, out: Path, room: int, test_per_class: int, train_per_class: int | None,
    preset: int, verify: bool,
) -> tuple[dict[str, str], dict]:
    """The largest class-balanced training subset whose files fit ``room`` bytes (or
    ``train_per_class``), and a class-balanced test subset, in the standard layout."""
    import numpy as np  # only to pack the data subset: the bundle tool stays light

    from normexp.data.cifar10 import load_cifar10  # torch: only to pack the data subset

    cifar = load_cifar10(data_dir, download=False, verify=verify)
    flat = {
        "train": (cifar.train_x.reshape(-1, ROW).numpy(), cifar.train_y.numpy().astype(np.uint8)),
        "test": (cifar.test_x.reshape(-1, ROW).numpy(), cifar.test_y.numpy().astype(np.uint8)),
    }
    folder = out / "data" / CIFAR
    meta = pickle.dumps({"label_names": list(cifar.classes), "num_cases_per_batch": 10000})
    write_xz(folder / "batches.meta.xz", meta, preset)
    tx, ty = flat["test"]
    t_idx = cifar_subset(ty, test_per_class)
    (test_raw,) = cifar_batches(tx[t_idx], ty[t_idx], 1)
    write_xz(folder / "test_batch.xz", test_raw, preset)
    x, y = flat["train"]
    fixed = sum(p.stat().st_size for p in folder.iterdir())
    if train_per_class is None:  # estimate from a sample's compression, then shrink to fit
        sample = x[cifar_subset(y, 100)].tobytes()
        ratio = len(lzma.compress(sample, preset=preset)) / len(sample)
        train_per_class = int((room - fixed) / (NUM_CLASSES * ROW * ratio * 1.01))
    while True:
        idx = cifar_subset(y, train_per_class)
        blobs = cifar_batches(x[idx], y[idx], len(CIFAR_TRAIN))
        for name, blob in zip(CIFAR_TRAIN, blobs, strict=True):
            write_xz(folder / f"{name}.xz", blob, preset)
        size = sum(p.stat().st_size for p in folder.iterdir())
        if size <= room or train_per_class <= 1:
            break
        train_per_class = int(train_per_class * room / size * 0.995)
    content = hashlib.sha256()
    for part in (x[idx], y[idx], tx[t_idx], ty[t_idx]):
        content.update(np.ascontiguousarray(part).tobytes())
    unpacked = {f"{CIFAR}/batches.meta": hashlib.sha256(meta).hexdigest()}
    unpacked[f"{CIFAR}/test_batch"] = hashlib.sha256(test_raw).hexdigest()
    for name, blob in zip(CIFAR_TRAIN, blobs, strict=True):
        unpacked[f"{CIFAR}/{name}"] = hashlib.sha256(blob).hexdigest()
    info = {
        "train_per_class": train_per_class,
        "test_per_class": test_per_class,
        "n_train_images": NUM_CLASSES * train_per_class,
        "n_test_images": NUM_CLASSES * test_per_class,
        "content_sha256": content.hexdigest(),
    }
    return unpacked, info


def bundle_files(bundle: Path) -> list[Path]:
    skip = {MANIFEST, "work", "results", RESULTS_PACK}
    return sorted(
        p for p in bundle.rglob("*")
        if (p.is_file() or p.is_symlink()) and p.relative_to(bundle).parts[0] not in skip
    )


def build(args: argparse.Namespace) -> dict:
    out = Path(args.out).resolve()
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    data_dir = Path(args.data_dir or os.environ.get("NORMEXP_DATA_DIR") or REPO / "data")
    preset = 0 if args.smoke else 6  # the smoke bundle is for tests: fast over small
    copy_code(out)
    fetch_wheels(out, Path(args.wheels_from) if args.wheels_from else None)
    shutil.copy2(REPO / "normexp" / "gpu_run.sh", out / "run_gpu.sh")
    (out / "run_gpu.sh").chmod(0o755)
    unpacked = pack_ptb(data_dir, out, preset)
    limit, tracked = int(args.limit_mib * MIB), travelling_bytes(args.alone)
    so_far = sum(p.lstat().st_size for p in bundle_files(out))
    room = limit - tracked - so_far - int(MARGIN_MIB * MIB) - 64 * 1024  # the manifest
    if room <= 0:
        raise SystemExit(f"gpu_bundle: no room for CIFAR-10 in {args.limit_mib} MiB")
    per_class = 40 if args.smoke and args.train_per_class is None else args.train_per_class
    # Ghost BN's test pass with batch statistics reads the test set in chunks of the training
    # batch (128): a multiple of 32 images (16 per class) splits into every group size (2..32).
    test_per_class = 32 if args.smoke else args.test_per_class // 16 * 16
    cifar_unpacked, cifar = pack_cifar(
        data_dir, out, room, test_per_class, per_class, preset, not args.no_verify
    )
    unpacked.update(cifar_unpacked)
    files = {
        str(p.relative_to(out)): ({"link": os.readlink(p)} if p.is_symlink() else
                                  {"sha256": sha256_file(p), "bytes": p.stat().st_size})
        for p in bundle_files(out)
    }
    manifest = {
        "format": 1,
        "smoke": bool(args.smoke),
        "git_commit": _git_commit(),
        "files": files,
        "unpacked": unpacked,
        "cifar": cifar,
        "tracked_bytes": tracked,
        "alone": bool(args.alone),
        "limit_bytes": limit,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    manifest["bundle_bytes"] = sum(p.lstat().st_size for p in out.rglob("*") if not p.is_dir())
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    total = manifest["bundle_bytes"] + tracked
    travels = "sent alone" if args.alone else f"+ {tracked / MIB:.1f} MiB of tracked files"
    print(
        f"gpu_bundle: {out}: {manifest['bundle_bytes'] / MIB:.1f} MiB ({travels} = "
        f"{total / MIB:.1f} of {args.limit_mib:g} MiB); CIFAR-10 {cifar['train_per_class']} "
        f"training and {cifar['test_per_class']} test images per class; PTB characters whole"
    )
    return manifest


def _git_commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, check=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


# --- on arrival -------------------------------------------------------------------------------


def verify(bundle: Path) -> dict:
    """The manifest, after every file it lists matched its sha256 (SystemExit naming the bad)."""
    manifest = json.loads((bundle / MANIFEST).read_text())
    bad = []
    for rel, entry in manifest["files"].items():
        p = bundle / rel
        if "link" in entry:
            ok = p.is_symlink() and os.readlink(p) == entry["link"] or p.is_dir()  # scp: a copy
        else:
            ok = p.is_file() and sha256_file(p) == entry["sha256"]
        if not ok:
            bad.append(rel)
    if bad:
        raise SystemExit(
            f"gpu_bundle: {len(bad)} file(s) of {bundle} fail their checksum or are missing "
            f"({', '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}); copy the bundle again"
        )
    return manifest


def unpack_data(bundle: Path, manifest: Mapping, dest: Path) -> Path:
    """The data, decompressed under ``dest`` and checked against the manifest's checksums of
    the unpacked files (done once; a second call checks and reuses them)."""
    for rel, digest in manifest["unpacked"].items():
        target = dest / rel
        if target.is_file() and sha256_file(target) == digest:
            continue
        raw = lzma.decompress((bundle / "data" / f"{rel}.xz").read_bytes())
        if hashlib.sha256(raw).hexdigest() != digest:
            raise SystemExit(f"gpu_bundle: {rel} unpacks to other bytes than were packed")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(raw)
    return dest


def install_wheels(wheels: Path, site: Path) -> Path:
    """Every wheel extracted into ``site`` (a wheel is a zip of its installed files): no pip,
    no index. Compiled extensions are skipped, so PyYAML runs as pure python anywhere."""
    site.mkdir(parents=True, exist_ok=True)
    for wheel in sorted(wheels.glob("*.whl")):
        with zipfile.ZipFile(wheel) as z:
            for member in z.namelist():
                top = member.split("/", 1)[0]
                if member.endswith((".so", ".pyd")) or top.endswith(".data"):
                    continue
                z.extract(member, site)
    return site


def run_env(bundle: Path, site: Path, data: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(bundle / "code"), str(site)])
    env["NORMEXP_DATA_DIR"] = str(data)
    env["WANDB_MODE"] = "disabled"
    env["PYTHONUNBUFFERED"] = "1"
    env["HYDRA_FULL_ERROR"] = "1"
    return env


def data_overrides(experiment: str, manifest: Mapping) -> list[str]:
    if experiment not in CIFAR_EXPERIMENTS:
        return ["data.download=false"]
    cifar = manifest["cifar"]
    n_val = NUM_CLASSES * min(50, max(1, cifar["train_per_class"] // 10))
    return [
        "data.download=false",
        "data.verify=false",  # the subset has its own checksums: the manifest's, checked first
        f"data.n_val={n_val}",
        f"data.n_train={cifar['n_train_images'] - n_val}",
        f"data.n_test={cifar['n_test_images']}",
        f"gpu.cifar_subset={cifar['content_sha256'][:16]}",
    ]


def sweep_command(
    experiment: str, profile: str, device: str, results: Path, work: Path, jobs: int,
    manifest: Mapping, extra: Sequence[str],
) -> list[str]:
    return [
        sys.executable, "-m", "normexp.run", "-m",
        f"experiment={experiment}",
        f"profile={profile}",
        "seed=0",
        f"train.device={device}",
        "tracking.mode=disabled",
        "runtime.threads=1",
        "runtime.progress=false",
        "hydra/sweeper=basic",  # no LR protocol here, and no pandas needed
        f"hydra.launcher.n_jobs={jobs}",
        f"hydra.sweep.dir={work / 'hydra' / experiment}",
        f"paths.results_dir={results}",
        *data_overrides(experiment, manifest),
        *extra,
    ]


def run_sweeps(
    commands: Mapping[str, list[str]], env: Mapping[str, str], log: Path, together: bool
) -> None:
    """Run the sweeps (all at once when ``together``), each logging to ``log``/<name>.log."""
    log.mkdir(parents=True, exist_ok=True)
    running = {}
    for name, cmd in commands.items():
        with open(log / f"{name}.log", "a") as f:
            running[name] = subprocess.Popen(
                cmd, cwd=env["PYTHONPATH"].split(os.pathsep)[0], env=dict(env), stdout=f,
                stderr=subprocess.STDOUT,
            )
        if not together:
            running[name].wait()
    failed = [n for n, p in running.items() if p.wait() != 0]
    if failed:
        tails = "\n".join(f"--- {n}:\n{(log / f'{n}.log').read_text()[-2000:]}" for n in failed)
        raise SystemExit(f"gpu_bundle: sweep(s) {', '.join(failed)} failed:\n{tails}")


def epoch_seconds(run_dir: Path, experiment: str, steps: int, manifest: Mapping) -> float:
    """One full epoch's seconds, from a calibration run of ``steps`` steps: its per-step time
    times the steps of an epoch, plus its evaluation (the epoch's time beyond training: the
    validation; the test set, evaluated once after the last epoch, is not in it)."""
    config = json.loads((run_dir / "config.json").read_text())
    summary = json.loads((run_dir / "summary.json").read_text())
    metrics = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    train = config["train"]
    if experiment in CIFAR_EXPERIMENTS:
        per_step, throughput = train["batch_size"], metrics["images_per_s"]
        epoch_steps = summary["n_train"] // train["batch_size"]
    else:
        per_step, throughput = train["batch_size"] * train["seq_len"], metrics["tokens_per_s"]
        epoch_steps = math.ceil((summary["n_train_tokens"] // train["batch_size"] - 1)
                                / train["seq_len"])
    train_s = steps * per_step / throughput
    eval_s = max(0.0, metrics["epoch_time_s"] - train_s)
    return epoch_steps * per_step / throughput + eval_s


def make_plan(
    args: argparse.Namespace, manifest: Mapping, env: Mapping[str, str], work: Path,
    profile: str, started: float,
) -> dict:
    """Epochs per part from a calibration of every cell (all at once, as they will train):
    the most that fit the budget left, the same for every cell of a part."""
    steps = CALIBRATION_STEPS[profile]
    store = work / "calibration"
    shutil.rmtree(store, ignore_errors=True)
    commands = {
        e: sweep_command(e, profile, args.device, store, work, _jobs(args, e), manifest,
                         [f"train.steps={steps}"])
        for part in PARTS.values() for e in part
    }
    run_sweeps(commands, env, work / "logs" / "calibration", together=args.jobs == 0)
    left_s = args.minutes * 60 - (time.monotonic() - started) - args.reserve_s
    plan = {"profile": profile, "device": args.device, "budget_s": round(left_s, 1), "parts": {}}
    for part, experiments in PARTS.items():
        slowest = max(
            epoch_seconds(run, e, steps, manifest)
            for e in experiments for run in (store / profile / "runs" / e).iterdir()
            if (run / "summary.json").is_file()
        )
        # Runs train in waves: all at once (--jobs 0), else each sweep's cells --jobs at a time,
        # one sweep after another; every wave gets an equal share of what is left.
        wave_s = left_s / (1 if args.jobs == 0 else sum(map(_waves, [args] * len(CELLS), CELLS)))
        fit = int(wave_s * 0.9 / slowest)  # 10% for process starts and the test pass
        plan["parts"][part] = {
            "epoch_s": round(slowest, 2),
            "epochs": max(1, min(PROFILE_EPOCHS[profile][part], fit)),
            "max_minutes": round(max(wave_s, slowest) / 60, 2),
        }
    return plan


def _jobs(args: argparse.Namespace, experiment: str) -> int:
    return CELLS[experiment] if args.jobs == 0 else min(args.jobs, CELLS[experiment])


def _waves(args: argparse.Namespace, experiment: str) -> int:
    return math.ceil(CELLS[experiment] / _jobs(args, experiment))


def pack_results(results: Path, profile: str, dest: Path, extra: Sequence[Path]) -> Path:
    """The GPU experiments' runs (as stored: <profile>/runs/<experiment>/<key>/) in one file."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest, "w:gz") as tar:
        for part in PARTS.values():
            for e in part:
                folder = results / profile / "runs" / e
                if folder.is_dir():
                    tar.add(folder, arcname=f"{profile}/runs/{e}")
        for path in extra:
            if path.exists():
                tar.add(path, arcname=f"gpu_bundle/{path.name}")
    return dest


def training_path_or_exit(where: subprocess.CompletedProcess) -> str:
    """The import check's line; a Python that cannot import the training path stops the command
    here, in one line, since every run would fail the same way."""
    if where.returncode == 0:
        return where.stdout.strip()
    last = where.stderr.strip().splitlines()[-1] if where.stderr.strip() else "no output"
    raise SystemExit(
        f"gpu_bundle: {where.args[0]} cannot import the training path ({last}); run_gpu.sh "
        "takes the Python that has PyTorch from PYTHON=/path/to/python"
    )


def run(args: argparse.Namespace) -> None:
    started = time.monotonic()
    bundle = Path(args.bundle).resolve()
    manifest = verify(bundle)
    print(f"gpu_bundle: {len(manifest['files'])} files match MANIFEST.json", flush=True)
    work = bundle / "work"
    data = unpack_data(bundle, manifest, work / "data")
    site = install_wheels(bundle / "wheels", work / "site")
    env = run_env(bundle, site, data)
    where = subprocess.run(  # which copies the runs will use: the bundle's, unless overridden
        [sys.executable, "-c", "import hydra, omegaconf, torch; "
         "print('hydra', hydra.__file__, '| torch', torch.__version__, torch.cuda.is_available())"],
        env=env, capture_output=True, text=True,
    )
    print(f"gpu_bundle: {training_path_or_exit(where)}", flush=True)
    profile = "smoke" if args.smoke else "paper"
    results = Path(args.results or bundle / "results").resolve()
    plan_file = results / PLAN
    if plan_file.is_file() and not args.replan:  # a rerun: same runs (keys), finished ones skip
        plan = json.loads(plan_file.read_text())
    else:
        plan = make_plan(args, manifest, env, work, profile, started)
        results.mkdir(parents=True, exist_ok=True)
        plan_file.write_text(json.dumps(plan, indent=1) + "\n")
    print(f"gpu_bundle: plan {json.dumps(plan['parts'])}", flush=True)
    commands = {}
    for part, experiments in PARTS.items():
        p = plan["parts"][part]
        for e in experiments:
            extra = [f"train.epochs={p['epochs']}", f"train.max_minutes={p['max_minutes']}"]
            commands[e] = sweep_command(
                e, plan["profile"], plan["device"], results, work, _jobs(args, e), manifest, extra
            )
    try:
        run_sweeps(commands, env, work / "logs", together=args.jobs == 0)
    finally:
        out = os.environ.get("OUT")
        dest = Path(args.pack or (Path(out) / RESULTS_PACK if out else bundle / RESULTS_PACK))
        logs = sorted((work / "logs").glob("*.log"))
        pack_results(results, plan["profile"], dest, [plan_file, *logs])
        print(f"gpu_bundle: runs packed into {dest} after {time.monotonic() - started:.0f} s")


# --- back home --------------------------------------------------------------------------------


def import_results(pack: Path, results_dir: Path) -> list[str]:
    """Put a results pack's runs into the store; a run already there is kept (never replaced)."""
    added = []
    with tarfile.open(pack) as tar:
        members = [
            m for m in tar.getmembers()
            if m.isfile() and len(Path(m.name).parts) == 5 and Path(m.name).parts[1] == "runs"
            and ".." not in Path(m.name).parts and not Path(m.name).is_absolute()
        ]
        for m in members:
            target = results_dir / m.name
            run_dir = target.parent
            if run_dir.is_dir() and run_dir.name not in added:
                continue
            if run_dir.name not in added:
                added.append(run_dir.name)
            run_dir.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(m) as src:  # type: ignore[union-attr]
                target.write_bytes(src.read())
    return added


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m normexp.gpu_bundle", description=__doc__.split("\n\n")[0]
    )
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write the bundle folder")
    b.add_argument("--out", default="bundle", help="the folder to write (default: bundle)")
    b.add_argument("--data-dir", help="holds ptb/ and cifar-10-batches-py/ ($NORMEXP_DATA_DIR)")
    b.add_argument("--limit-mib", type=float, default=LIMIT_MIB,
                   help="what may travel: the bundle + the repository's tracked files "
                   f"(default {LIMIT_MIB}; with --alone, the bundle only)")
    b.add_argument("--alone", action="store_true",
                   help="the bundle is copied by itself (e.g. scp): the repository's tracked "
                   "files do not count against --limit-mib, so CIFAR-10 gets that room")
    b.add_argument("--test-per-class", type=int, default=256, help="rounded to 16s")
    b.add_argument("--train-per-class", type=int, help="default: the most that fit")
    b.add_argument("--wheels-from", help="a folder of wheels to take before pip download")
    b.add_argument("--smoke", action="store_true", help="a tiny CIFAR-10 subset, fast packing")
    b.add_argument("--no-verify", action="store_true", help="skip CIFAR-10's fingerprints")
    r = sub.add_parser("run", help="verify, unpack, calibrate, train, pack (run_gpu.sh)")
    r.add_argument("--bundle", default=str(Path(__file__).resolve().parent.parent.parent))
    r.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    r.add_argument("--smoke", action="store_true", help="the smoke profile: seconds")
    r.add_argument("--minutes", type=float, default=7.0,
                   help="wall budget of the whole command (calibration included)")
    r.add_argument("--reserve-s", type=float, default=45.0,
                   help="of the budget, kept for process starts, data and the final packing")
    r.add_argument("--jobs", type=int, default=0,
                   help="runs at a time per sweep; 0: every cell of every part at once")
    r.add_argument("--results", help="the results store to write (default: BUNDLE/results)")
    r.add_argument("--pack", help=f"where the runs go (default: $OUT/{RESULTS_PACK})")
    r.add_argument("--replan", action="store_true", help="calibrate again despite a saved plan")
    i = sub.add_parser("import", help="put a results pack's runs into the store")
    i.add_argument("pack")
    i.add_argument("--results-dir", default=os.environ.get("NORMEXP_RESULTS_DIR", "results"))
    args = parser.parse_args(argv)
    if args.command == "build":
        build(args)
    elif args.command == "run":
        run(args)
    else:
        added = import_results(Path(args.pack), Path(args.results_dir))
        print(f"gpu_bundle: {len(added)} run(s) added to {args.results_dir}")


if __name__ == "__main__":
    main()
