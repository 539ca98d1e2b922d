"""Fused SGD (``runtime.fused_sgd``) against PyTorch's per-parameter loop: the suite's own
training steps (normexp.train.fit.train_epoch on the Classification task: its data, forward,
backward, SGD with Nesterov momentum and weight decay, one-cycle schedule, running metrics), the
same run built twice from one seed, differing only in the optimizer's kernel, interleaved on one
thread and timed on this process's CPU clock; per training image. The cost model's
FUSED_SGD_SPEEDUP (normexp/bench/cost.py) reads the MLP's rows; the conv nets' rows show why
they are not priced (their steps are convolutions, the update a small share).

The last row is the same-math check: the two optimizers stepped on the same gradients in
float64, the largest difference of any parameter relative to its largest value."""

import copy
import statistics
import time
from pathlib import Path

import torch

from normexp.bench.harness import MODEL as CNN
from normexp.bench.harness import SGD, suite_config
from normexp.bench.replicas import MLP, RESNET20
from normexp.models import build_model
from normexp.train.classification import Classification
from normexp.train.device import seed_everything
from normexp.train.fit import train_epoch
from normexp.train.optim import build_optimizer

# (name, model, batch): the MLP over the batches mlp_small_batch sweeps (it never packs on a
# CPU, so every one of its runs steps this optimizer), the conv nets at batch 32, unpacked
IMAGES = 512  # training images per timed call (at least 4 steps)
CASES = (
    ("MLP", MLP, 2),
    ("MLP", MLP, 8),
    ("MLP", MLP, 32),
    ("MLP", MLP, 128),
    ("CNN quick", CNN, 32),
    ("ResNet-20", RESNET20, 32),
)


class _NoBar:
    def update(self, n: int) -> None:
        pass


def _hooks(data_dir: Path, model: dict, batch_size: int, fused: bool) -> Classification:
    steps = max(4, IMAGES // batch_size)
    cfg = suite_config(data_dir, steps * batch_size, batch_size, model=model)
    cfg["runtime"] = {**cfg["runtime"], "threads": 1, "compile": "off", "fused_sgd": fused}
    cfg["train"]["epochs"] = 100  # the schedule spans every timed call: no call at LR 0
    seed_everything(0, True)
    return Classification(cfg, torch.device("cpu"), None)


def step_ms_per_image(data_dir: Path, model: dict, batch_size: int, repeats: int) -> dict:
    """CPU ms per training image of the suite's steps, {"loop": ..., "fused": ...}."""
    torch.set_num_threads(1)
    hooks = {k: _hooks(data_dir, model, batch_size, k == "fused") for k in ("loop", "fused")}
    assert [h.optimizer.defaults.get("fused") for h in hooks.values()] == [None, True]
    times: dict[str, list[float]] = {k: [] for k in hooks}
    cpu = torch.device("cpu")
    for r in range(repeats + 1):  # the first round warms up
        for name, h in hooks.items():
            t0 = time.process_time()
            train_epoch(h, 1, cpu, _NoBar())
            if r:
                times[name].append(time.process_time() - t0)
    images = {k: h.steps_per_epoch * h.batch_size for k, h in hooks.items()}
    return {k: 1e3 * statistics.median(v) / images[k] for k, v in times.items()}


def same_math(steps: int = 20) -> float:
    """The largest parameter difference, relative to the parameter's largest value, between
    the fused and the looped SGD after ``steps`` updates on the same float64 gradients (the
    MLP, the suite's SGD settings)."""
    torch.manual_seed(0)
    model = build_model(MLP, {"name": "batch", "position": "pre"}).double()
    models = {k: copy.deepcopy(model) for k in ("loop", "fused")}
    optims = {
        k: build_optimizer(m, {**SGD, "lr_mult": 1.0}, 8, k == "fused") for k, m in models.items()
    }
    g, params = torch.Generator().manual_seed(1), list(model.parameters())
    for _ in range(steps):
        grads = [1e-2 * torch.randn(p.shape, generator=g, dtype=p.dtype) for p in params]
        for name, m in models.items():
            for p, grad in zip(m.parameters(), grads, strict=True):
                p.grad = grad.clone()
            optims[name].step()
    pairs = zip(models["loop"].parameters(), models["fused"].parameters(), strict=True)
    return max(((a - b).abs().max() / a.abs().max()).item() for a, b in pairs)


def bench_sgd(data_dir: Path, repeats: int = 7) -> list[dict]:
    rows = []
    for name, model, batch_size in CASES:
        t = step_ms_per_image(data_dir, model, batch_size, repeats)
        rows.append(
            {
                "bench": "sgd",
                "name": f"{name} BN, b={batch_size}",
                "reference": "looped SGD",
                "ours": f"{t['fused']:.3f} ms/img",
                "reference_value": f"{t['loop']:.3f} ms/img",
                "ratio": t["loop"] / t["fused"],
                "target": "report",
                "meets_target": True,  # a measurement: the cost model reads the MLP's
            }
        )
    diff = same_math()
    rows.append(
        {
            "bench": "sgd",
            "name": "fused vs looped, 20 steps",
            "reference": "looped SGD (fp64)",
            "ours": f"{diff:.1e} rel",
            "reference_value": "0",
            "ratio": 1.0,
            "target": "same math (< 1e-12)",
            "meets_target": diff < 1e-12,
        }
    )
    return rows
