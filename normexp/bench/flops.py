"""FLOP utilization: the suite's training-step FLOP rate (one thread, as a sweep worker runs)
as a fraction of a single-thread fp32 GEMM measured in the same process.

FLOPs are those of the matrix products (convolutions, linear layers) of one forward + backward
pass, counted once per model and batch size by ``torch.utils.flop_counter``; norms, activations
and the optimizer add time but no counted FLOPs, which is the point: at small batch the step is
far from the GEMM rate, and that gap is what a cheaper step can win back."""

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from normexp.bench.harness import MODEL, NORM, suite_images_per_s
from normexp.models import build_model

# One entry per model measured; adding a model (the CIFAR ResNet-20 when it exists) is one line.
MODELS: dict[str, tuple[dict, dict]] = {"VGG quick": (MODEL, NORM)}
BATCH_SIZES = (2, 32, 128)
GEMM_SIZE = 512
# Training images per measured run: enough steps to amortise the first ones at every batch size.
IMAGES = {2: 512, 32: 2048, 128: 4096}


def step_flops(model_cfg: dict, norm_cfg: dict, batch_size: int) -> int:
    """FLOPs of one training step's forward, loss and backward pass at ``batch_size``."""
    torch.manual_seed(0)
    model = build_model(model_cfg, norm_cfg).train()
    x, y = torch.randn(batch_size, 3, 32, 32), torch.randint(10, (batch_size,))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    return counter.get_total_flops()


def gemm_flop_rate(n: int = GEMM_SIZE, repeats: int = 20) -> float:
    """The machine's peak on this thread: the best FLOP/s of one n x n x n fp32 product. On a
    loaded machine the training runs (seconds long) are slowed and this best is not, so the
    utilization is then a lower bound; on an idle one both are clean."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    out = torch.empty(n, n)
    torch.mm(a, b, out=out)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.mm(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def bench_flops(data_dir: Path, repeats: int = 3) -> list[dict]:
    """Rows of (model, batch size): step GFLOP/s, GEMM GFLOP/s, their ratio. The GEMM is
    measured between training runs, and the best of each kept, so both see the same machine."""
    rows = []
    for label, (model_cfg, norm_cfg) in MODELS.items():
        for batch_size in BATCH_SIZES:
            flops_per_image = step_flops(model_cfg, norm_cfg, batch_size) / batch_size
            n = IMAGES[batch_size]
            kw = dict(model=model_cfg, norm=norm_cfg)
            step, gemm = [], []
            for _ in range(repeats):
                gemm.append(gemm_flop_rate())
                step.append(flops_per_image * suite_images_per_s(data_dir, n, batch_size, **kw))
            gemm.append(gemm_flop_rate())
            ours, ref = max(step), max(gemm)
            rows.append(
                {
                    "bench": "FLOP util",
                    "name": f"{label}, b={batch_size}",
                    "reference": f"GEMM {GEMM_SIZE}^3",
                    "ours": f"{ours / 1e9:.1f} GFLOP/s",
                    "reference_value": f"{ref / 1e9:.1f} GFLOP/s",
                    "ratio": ours / ref,
                    "target": "report",
                    "meets_target": True,  # a measurement, not a target
                    "mark": f"{flops_per_image / 1e6:.0f} MFLOP/img",
                    "mflop_per_image": flops_per_image / 1e6,
                    "batch_size": batch_size,
                    "model": label,
                }
            )
    return rows
