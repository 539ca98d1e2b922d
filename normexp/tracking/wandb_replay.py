"""Replay the results store into W&B: an offline W&B run for every stored run that has none.

The store is the source of truth and a committed store carries no W&B files (git ignores every
``wandb/`` folder), so a user who wants W&B's dashboards replays the store instead of training
again (``make wandb-sync``). A replayed run is written by the live run's own code
(``WandbMirror.for_run``, ``log``, ``finish``): the same id (the run key), name, group, tags,
config (with ``protocol.stage``), metric names against ``epoch``, summary and media; it differs
only where W&B records the replaying process instead of the training one (start time, host), so
the machine's metadata is left out. The store keeps no console output, so a replayed run's Logs
tab is empty; a live run's holds its output (normexp.tracking.wandb_mirror.LIVE_SETTINGS).

A run has a W&B run when its live run wrote one (``<run>/wandb/offline-run-*-<key>`` or
``run-*-<key>``, its mirror without error) or a replay finished one: ``<run>/wandb/replay/``
holds the replay's files and ``done.json`` once W&B's file of the run is complete (its exit
record written). A replay cut short leaves no ``done.json``: the next call removes its files and
replays the run again, so nothing is half-uploaded and a second call replays nothing.

    python -m normexp.tracking.wandb_replay [--profile P] [--results-dir R] [--workers N]
"""

import argparse
import multiprocessing
import os
import shutil
import struct
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from tqdm import tqdm

from normexp.tracking.store import (
    ENDED,
    RECORD_PROFILE,
    RunRecord,
    atomic_write_json,
    default_results_dir,
    experiments_in_store,
    iter_records,
    profile_dir,
    read_json,
)
from normexp.tracking.wandb_mirror import WandbMirror, exit_code

REPLAY_DIR = "replay"  # <run>/wandb/replay/: the replay's W&B files (git-ignored, as wandb/ is)
DONE = "done.json"  # in REPLAY_DIR once the replayed W&B run is complete
# Overrides of the live settings: nothing of the replaying process goes into the run (its
# console, host and program, Python packages, git state are not the training's).
REPLAY_SETTINGS = {
    "console": "off",
    "x_disable_meta": True,
    "x_save_requirements": False,
    "disable_git": True,
    "disable_code": True,
}
CHUNK = 16  # runs per task of a worker: a task's runs are marked done when their files are
COMPLETE_TIMEOUT_S = 60.0  # how long a worker waits for W&B's service to write a run's file


# --- W&B's offline run file -------------------------------------------------------------------


def read_records(run_file: Path) -> Iterator:
    """The records of a ``.wandb`` file (W&B's transaction log: a LevelDB-style log of protobuf
    ``Record`` messages in 32 KiB blocks), as ``wandb sync`` reads them; a torn last record (a
    file still being written) ends the iteration."""
    from wandb.proto import wandb_internal_pb2  # only when a run file is read

    data = Path(run_file).read_bytes()
    if data[:4] != b":W&B":
        return
    block, header = 32768, 7
    pos, buf = 7, b""
    while pos + header <= len(data):
        left = block - pos % block
        if left < header:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + header])
        if pos + header + length > len(data):
            return
        buf += data[pos + header : pos + header + length]
        pos += header + length
        if kind in (1, 4):  # FULL or LAST chunk
            record = wandb_internal_pb2.Record()
            record.ParseFromString(buf)
            buf = b""
            yield record


def is_complete(run_file: Path) -> bool:
    """Whether W&B finished writing the run file: its exit record is in it."""
    try:
        return any(r.WhichOneof("record_type") == "exit" for r in read_records(run_file))
    except (OSError, ValueError):  # not there yet, or a record cut in the middle
        return False


# --- which runs lack a W&B run ----------------------------------------------------------------


def replay_folder(record: RunRecord) -> Path:
    return record.path / "wandb" / REPLAY_DIR


def live_runs(record: RunRecord) -> list[Path]:
    """The W&B run folders a live run wrote (offline or synced online) with its run file."""
    folder = record.path / "wandb"
    found = [*folder.glob(f"offline-run-*-{record.key}"), *folder.glob(f"run-*-{record.key}")]
    return sorted(p for p in found if (p / f"run-{record.key}.wandb").exists())


def replayed_run(record: RunRecord) -> Path | None:
    """The complete replayed W&B run folder of a stored run, or None."""
    done = read_json(replay_folder(record) / DONE)
    folder = done and replay_folder(record) / done.get("folder", "")
    return folder if folder and folder.is_dir() else None


def has_wandb_run(record: RunRecord) -> bool:
    """A live run wrote one (its mirror without error), or a replay completed one."""
    if replayed_run(record) is not None:
        return True
    summary = read_json(record.path / "summary.json") or {}
    return bool(live_runs(record)) and not summary.get("wandb_error")


def to_replay(folder: Path) -> list[RunRecord]:
    """The ended runs (ok, diverged, failed) of a profile's folder, their files passing the
    store's check, that have no W&B run."""
    out = []
    for experiment in experiments_in_store(folder):
        for record in iter_records(folder, experiment):
            status = record.status
            if status is None or status.get("status") not in ENDED or record.check():
                continue
            if not has_wandb_run(record):
                out.append(record)
    return out


def offline_runs(folder: Path) -> list[Path]:
    """A profile folder's complete offline W&B runs, for ``wandb sync``: training runs' live
    ones, the replayed ones and the report runs' (``<profile>/wandb/``)."""
    found = set(folder.glob("runs/*/*/wandb/offline-run-*"))
    found |= set(folder.glob("wandb/offline-run-*"))
    for done in folder.glob(f"runs/*/*/wandb/{REPLAY_DIR}/{DONE}"):
        record = RunRecord(folder, done.parents[3].name, done.parents[2].name)
        if (run := replayed_run(record)) is not None:
            found.add(run)
    return sorted(p for p in found if p.is_dir())


# --- the replay -------------------------------------------------------------------------------


def _replay_one(path: Path) -> Path:
    """Write the offline W&B run of the stored run in ``path``; returns its run file (W&B's
    service may still be writing it)."""
    record = RunRecord(path.parents[2], path.parent.name, path.name)
    folder = replay_folder(record)
    shutil.rmtree(folder, ignore_errors=True)  # a replay cut short: start again
    folder.mkdir(parents=True)
    config = read_json(path / "config.json")
    summary = {k: v for k, v in read_json(path / "summary.json").items() if k != "wandb_error"}
    mirror = WandbMirror.for_run(config, record.key, folder, "offline", REPLAY_SETTINGS)
    for epoch in record.metrics():
        mirror.log(epoch)
    mirror.finish(summary, exit_code(record.status["status"]), run_dir=path)
    if mirror.error:
        raise RuntimeError(mirror.error)
    (run_file,) = folder.glob(f"wandb/offline-run-*-{record.key}/run-{record.key}.wandb")
    return run_file


def _mark_done(run_file: Path) -> None:
    run_folder = run_file.parent
    replay = run_folder.parents[1]
    atomic_write_json(
        replay / DONE,
        {"folder": str(run_folder.relative_to(replay)), "run_id": run_file.stem[len("run-") :],
         "replayed_at": time.time()},
    )  # fmt: skip


def replay_paths(paths: Sequence[str]) -> list[tuple[str, str | None]]:
    """Replay the stored runs in ``paths`` one after another in this process, then mark each
    done once its run file is complete; (path, error or None) per run."""
    import wandb  # only in the processes that replay

    outcome: dict[str, str | None] = {}
    pending: dict[str, Path] = {}
    for path in paths:
        try:
            pending[path] = _replay_one(Path(path))
        except Exception as exc:  # noqa: BLE001 - one run's failure is reported, not fatal
            outcome[path] = f"{type(exc).__name__}: {exc}".splitlines()[0]
    deadline = time.monotonic() + COMPLETE_TIMEOUT_S
    while pending:
        for path, run_file in list(pending.items()):
            if is_complete(run_file):
                _mark_done(run_file)
                outcome[path] = None
                del pending[path]
        if pending and time.monotonic() > deadline:
            wandb.teardown()  # returns once W&B's service has written every file
            for path, run_file in pending.items():
                complete = is_complete(run_file)
                if complete:
                    _mark_done(run_file)
                outcome[path] = None if complete else "W&B left its run file incomplete"
            break
        time.sleep(0.02 if pending else 0)
    return [(p, outcome[p]) for p in paths]


def _chunks(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def replay(
    folder: Path, workers: int | None = None, progress: bool = True
) -> tuple[int, list[tuple[str, str]]]:
    """Replay every run of the profile folder ``folder`` that lacks a W&B run: (runs replayed,
    [(run folder, error)] of those that failed), with a progress bar. ``workers`` processes,
    each with its own W&B service (default: one per core); with one, in this process."""
    todo = [str(r.path) for r in to_replay(folder)]
    if not todo:
        return 0, []
    workers = max(1, min(workers or os.cpu_count() or 1, -(-len(todo) // CHUNK)))
    bar = tqdm(total=len(todo), unit="run", desc=f"W&B replay ({folder.name})",
               disable=not progress, dynamic_ncols=True)  # fmt: skip
    results: list[tuple[str, str | None]] = []
    with bar:
        if workers == 1:
            for chunk in _chunks(todo, CHUNK):
                results += replay_paths(chunk)
                bar.update(len(chunk))
        else:
            context = multiprocessing.get_context("spawn")  # no W&B state inherited
            with ProcessPoolExecutor(workers, mp_context=context) as pool:
                futures = [pool.submit(replay_paths, c) for c in _chunks(todo, CHUNK)]
                try:
                    for future in as_completed(futures):
                        done = future.result()
                        results += done
                        bar.update(len(done))
                except BaseException:
                    for future in futures:
                        future.cancel()
                    raise
    failed = [(p, e) for p, e in results if e is not None]
    return len(results) - len(failed), failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m normexp.tracking.wandb_replay",
                                     description=__doc__.split("\n\n")[0])  # fmt: skip
    parser.add_argument("--results-dir", type=Path, default=default_results_dir(),
                        help="the store (default: $NORMEXP_RESULTS_DIR or ./results)")
    parser.add_argument("--profile", default=RECORD_PROFILE,
                        help=f"whose runs to replay (default: {RECORD_PROFILE})")
    parser.add_argument("--workers", type=int, default=None,
                        help="replaying processes (default: one per core)")  # fmt: skip
    args = parser.parse_args(argv)
    folder = profile_dir(args.results_dir, args.profile)
    try:
        replayed, failed = replay(folder, args.workers)
    except KeyboardInterrupt:
        print("\nwandb replay: interrupted; the runs replayed so far are kept, the next call "
              "replays the rest", file=sys.stderr)  # fmt: skip
        return 130
    for path, error in failed:
        print(f"wandb replay: {path}: {error}", file=sys.stderr)
    print(f"wandb replay: {replayed} run(s) replayed into {folder}/runs/*/*/wandb/{REPLAY_DIR}/")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
