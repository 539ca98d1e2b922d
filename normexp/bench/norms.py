"""Forward+backward time of each norm written here against the closest native PyTorch op."""

import torch
from torch import nn

from normexp.bench.timing import interleaved_median
from normexp.norms.registry import make_norm

# (ours, native reference, target ratio): the targets for the layers written here.
PAIRS = {
    "ghost_batch": (dict(group_size=8), lambda c: nn.BatchNorm2d(c), 1.5),
    "batch_renorm": ({}, lambda c: nn.BatchNorm2d(c), 1.5),
    "noisy_batch": ({}, lambda c: nn.BatchNorm2d(c), 1.5),
    "mean_only_batch": ({}, lambda c: nn.BatchNorm2d(c), 1.5),
    "batch": ({}, lambda c: nn.BatchNorm2d(c), 1.1),
    "group": (dict(num_groups=8), lambda c: nn.GroupNorm(8, c), 1.1),
    "layer": ({}, lambda c: nn.GroupNorm(1, c), 1.1),
    "instance": ({}, lambda c: nn.InstanceNorm2d(c, affine=True), 1.1),
    "rms": ({}, lambda c: nn.RMSNorm([c, 16, 16]), 1.5),
}


def fwd_bwd(layer: nn.Module, x: torch.Tensor, grad: torch.Tensor):
    # A dense upstream gradient, as inside a network: `.sum().backward()` would hand every
    # layer a stride-0 gradient that native kernels first copy, which skews the ratios.
    def step() -> None:
        x.grad = None
        layer(x).backward(grad)

    return step


def bench_norms(shape: tuple[int, int, int, int] = (64, 32, 16, 16), repeats: int = 41) -> list:
    """Rows of (name, ours ms, native ms, ratio, target) on CNN-sized tensors."""
    torch.manual_seed(0)
    rows = []
    for name, (kwargs, native, target) in PAIRS.items():
        x = torch.randn(shape, requires_grad=True)
        grad = torch.randn(shape)
        ours = make_norm(name, shape[1], **kwargs).train()
        ref = native(shape[1]).train()
        pair = {"ours": fwd_bwd(ours, x, grad), "ref": fwd_bwd(ref, x, grad)}
        t = interleaved_median(pair, repeats)
        rows.append(
            {
                "bench": "norm fwd+bwd",
                "name": name,
                "reference": type(ref).__name__,
                "ours_ms": 1e3 * t["ours"],
                "reference_ms": 1e3 * t["ref"],
                "ratio": t["ours"] / t["ref"],
                "target": f"<= {target}",
                "meets_target": t["ours"] / t["ref"] <= target,
            }
        )
    return rows
