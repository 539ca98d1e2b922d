"""Packed replicas (normexp.models.packed) against separate runs: time per replica-image of a
training step (forward, backward, SGD update, schedule), K runs packed into one grouped model vs
the same K runs stepped one after another, for the quick CNN and ResNet-20 at batch 2, 8 and 32
(the ResNet at 4 too) and the MLP (3 x 256) at 2 and 8: the table the planner's frozen choice
(normexp/protocol/pack.py, PACK_TABLE) and the cost model (normexp/bench/cost.py) read.

Both sides run as the suite trains (channels-last, the suite's SGD with Nesterov momentum and
weight decay, its one-cycle schedule), interleaved in one process on one thread, timed on this
process's CPU clock. Each row's mark is the fp64 check of the same packing: the largest relative
difference of any parameter or buffer after one packed step against the separate steps."""

import time
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from normexp.bench.harness import MODEL as CNN
from normexp.bench.harness import NORM, SGD
from normexp.bench.timing import interleaved_median
from normexp.models import build_model
from normexp.models.packed import pack_inputs, pack_models, replica_losses, replica_state_dict
from normexp.train.optim import build_optimizer, build_scheduler, peak_lr
from normexp.train.packed_optim import packed_optimizer

CL = torch.channels_last  # as the suite runs (runtime.channels_last)
RESNET20 = {"name": "resnet", "depth": 20, "width_mult": 1, "shortcut": "A", "activation": "relu"}
MLP = {"name": "mlp", "hidden": 256, "depth": 3, "activation": "relu", "weight_side": "none"}
MODELS = {"CNN quick": CNN, "ResNet-20": RESNET20, "MLP": MLP}
OPTIM = SGD
LR_MULTS = (0.5, 0.7, 1.0, 1.4, 2.0)  # each replica its own, as an LR selection's candidates
TARGET = 1.4  # the bar at batch 2 (#30); larger batches are reported
Step = Callable[[Sequence[Tensor], Tensor], None]  # one training step on K batches


def replicas(k: int, model: dict, norm: dict = NORM) -> list[nn.Module]:
    """K separate models with their own initial weights (seeds 0..K-1), in training mode."""
    out = []
    for seed in range(k):
        torch.manual_seed(seed)
        out.append(build_model(model, norm).train())
    return out


def _optim(k: int) -> list[dict]:
    return [{**OPTIM, "lr_mult": LR_MULTS[i % len(LR_MULTS)]} for i in range(k)]


def _batches(k: int, steps: int, batch_size: int, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(0)
    xs = torch.randn(steps, k, batch_size, 3, 32, 32, generator=g, dtype=dtype)
    ys = torch.randint(10, (steps, k, batch_size), generator=g)
    return xs, ys


def _separate_step(models: Sequence[nn.Module], batch_size: int, total: int) -> Step:
    configs = _optim(len(models))
    optims = [build_optimizer(m, o, batch_size) for m, o in zip(models, configs, strict=True)]
    scheds = [build_scheduler(opt, OPTIM, total) for opt in optims]

    def step(xs: Sequence[Tensor], ys: Tensor) -> None:
        for model, opt, sched, x, y in zip(models, optims, scheds, xs, ys, strict=True):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()

    return step


def _packed_step(packed: nn.Module, batch_size: int, total: int) -> Step:
    peaks = [peak_lr(o, batch_size) for o in _optim(packed.k)]
    opt = packed_optimizer(packed, OPTIM, peaks)
    sched = build_scheduler(opt, OPTIM, total)

    def step(xs: Sequence[Tensor], ys: Tensor) -> None:
        loss = replica_losses(packed(pack_inputs(list(xs))), ys).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()

    return step


def equivalence_error(k: int, batch_size: int, model: dict = CNN, norm: dict = NORM) -> float:
    """Largest |packed - separate| over every replica's parameters and buffers after one
    training step in float64, relative to each tensor's largest magnitude (at least 1)."""
    models = [m.double() for m in replicas(k, model, norm)]
    packed = pack_models(models)
    xs, ys = _batches(k, 1, batch_size, torch.float64)
    _packed_step(packed, batch_size, 10)(xs[0], ys[0])
    _separate_step(models, batch_size, 10)(xs[0], ys[0])
    worst = 0.0
    for i, m in enumerate(models):
        mine = replica_state_dict(packed, i)
        for name, ref in m.state_dict().items():
            diff = (mine[name].double() - ref.double()).abs().max().item()
            worst = max(worst, diff / max(1.0, ref.double().abs().max().item()))
    return worst


def _steps(step: Step, xs: list[list[Tensor]], ys: Tensor) -> Callable[[], None]:
    def run() -> None:
        for x, y in zip(xs, ys, strict=True):
            step(x, y)

    return run


def bench_replicas(
    cases: Sequence[tuple[str, int, int]] = (
        *((name, 4, b) for name in ("CNN quick", "ResNet-20") for b in (2, 8, 32)),
        *((name, 8, 2) for name in ("CNN quick", "ResNet-20")),
        ("ResNet-20", 4, 4),
        ("MLP", 4, 2),
        ("MLP", 4, 8),
    ),
    repeats: int = 9,
) -> list[dict]:
    """Rows of (model, K, batch): per replica-image, K separate steps vs one packed step."""
    rows = []
    errors = {name: equivalence_error(3, 2, MODELS[name]) for name in {c[0] for c in cases}}
    for name, k, batch_size in cases:
        model = MODELS[name]
        steps = max(1, 16 // batch_size)  # a few steps per call where one step is short
        xs, ys = _batches(k, steps, batch_size)
        xs_cl = [[x.contiguous(memory_format=CL) for x in step_xs] for step_xs in xs]
        total = steps * (repeats + 2) + 1
        separate = _separate_step([m.to(memory_format=CL) for m in replicas(k, model)],
                                  batch_size, total)  # fmt: skip
        packed = pack_models(replicas(k, model)).to(memory_format=CL)
        packed_step = _packed_step(packed, batch_size, total)

        t = interleaved_median(
            {"separate": _steps(separate, xs_cl, ys), "packed": _steps(packed_step, xs_cl, ys)},
            repeats=repeats,
            warmup=2,
            clock=time.process_time,  # one thread: CPU time, whatever else the machine runs
        )
        images = k * steps * batch_size
        ratio = t["separate"] / t["packed"]
        at_target = batch_size == 2 and name != "MLP"  # the bar: the conv nets
        rows.append(
            {
                "bench": "replicas",
                "name": f"K={k} {name}, b={batch_size}",
                "reference": f"{k} separate runs",
                "ours": f"{1e3 * t['packed'] / images:.2f} ms/img",
                "reference_value": f"{1e3 * t['separate'] / images:.2f} ms/img",
                "ratio": ratio,
                "target": f">= {TARGET} at b=2" if at_target else "report",
                "meets_target": ratio >= TARGET if at_target else True,
                "mark": f"{'ok' if ratio >= TARGET or not at_target else 'MISSES'}, "
                f"fp64 rel. err {errors[name]:.0e}",
            }
        )
    return rows
