"""CPU speed options, each against PyTorch's default step on the quick VGG (BN, batch 32,
one thread as a sweep worker runs; the default SGD on CPU tensors is PyTorch's per-parameter
loop): channels-last memory format, the multi-tensor (foreach) and fused SGD, and torch.compile.
The suite keeps an option only where this bench shows it helps."""

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from normexp.bench.harness import MODEL, NORM
from normexp.models import build_model

ADOPT = 1.05  # below a 5% gain an option is not worth its cost (compile time, complexity)
# What the suite does with each option (runtime.channels_last). torch.compile is adopted per
# cell, where its own rows (normexp/bench/compiled.py: ResNet-20 vs this CNN, batch 32 and 128,
# compile cold and warm) show a gain that repays the compile within a run (runtime.compile
# auto, normexp/train/compiling.py); this CNN is not one of those cells.
ADOPTED = {"channels_last"}
# Adopted for what another section measures (runtime.fused_sgd: one kernel per parameter; no
# gain on this CNN, whose step is its convolutions, 1.1-1.4x on the MLP's).
ADOPTED_ELSEWHERE = {"fused SGD": "adopted: gains on the MLP (section sgd)"}
Step = Callable[[torch.Tensor, torch.Tensor], None]


def make_step(channels_last: bool = False, sgd: str = "default", compiled: bool = False) -> Step:
    torch.manual_seed(0)
    model = build_model(MODEL, NORM)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    flags = {"default": {}, "foreach": dict(foreach=True), "fused": dict(fused=True)}
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, **flags[sgd])
    forward = torch.compile(model) if compiled else model

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        loss = F.cross_entropy(forward(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def steps_per_s(step: Step, batch: tuple[torch.Tensor, torch.Tensor], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        step(*batch)
    return n / (time.perf_counter() - t0)


def bench_options(batch_size: int = 32, steps: int = 60, rounds: int = 3) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    batch = (torch.randn(batch_size, 3, 32, 32, generator=g), torch.randint(10, (batch_size,)))
    candidates = {
        "channels_last": dict(channels_last=True),
        "fused SGD": dict(sgd="fused"),
        "foreach SGD": dict(sgd="foreach"),
        "torch.compile": dict(compiled=True),
    }
    steps_fns = {"default": make_step()}
    compile_s = {}
    for name, kwargs in candidates.items():
        try:
            steps_fns[name] = make_step(**kwargs)
            t0 = time.perf_counter()
            steps_fns[name](*batch)  # the first call compiles, where there is compiling
            compile_s[name] = time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001 - an option this machine lacks is reported
            steps_fns.pop(name, None)
            compile_s[name] = f"unavailable: {type(exc).__name__}: {str(exc)[:80]}"
    for fn in steps_fns.values():
        steps_per_s(fn, batch, 5)  # warm-up
    rates: dict[str, list[float]] = {name: [] for name in steps_fns}
    for _ in range(rounds):  # interleaved rounds, best of each
        for name, fn in steps_fns.items():
            rates[name].append(steps_per_s(fn, batch, steps))
    base = max(rates["default"])
    rows = []
    for name in candidates:
        if name not in rates:
            note = compile_s[name]
            rows.append(_row(name, note, f"{base:.1f} step/s", float("nan")))
            continue
        best = max(rates[name])
        first = f"first step {compile_s[name]:.1f} s" if name == "torch.compile" else ""
        ours = f"{best:.1f} step/s {first}".strip()
        rows.append(_row(name, ours, f"{base:.1f} step/s", best / base))
    return rows


def _row(name: str, ours: str, ref: str, ratio: float) -> dict:
    helps = ratio > ADOPT
    if name in ADOPTED_ELSEWHERE:
        mark = ADOPTED_ELSEWHERE[name]
    elif name in ADOPTED:
        mark = "adopted" if helps else "ADOPTED BUT NO GAIN"
    else:
        mark = "helps; not adopted" if helps else "no gain; not adopted"
    return {
        "bench": "cpu option",
        "name": f"{name}, b=32",
        "reference": "default step",
        "ours": ours,
        "reference_value": ref,
        "ratio": ratio,
        "target": f"> {ADOPT} helps",
        "meets_target": True,  # a comparison, not a target: the mark says what the suite does
        "mark": mark,
    }
