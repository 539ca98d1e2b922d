"""Inputs and float64 references for the norm-library tests (tests/unit/test_norms_*.py): each
layer is compared with a reference written here with explicit reductions, so a layer that pools
over the wrong set of values, or updates its running statistics wrongly, fails."""

import pytest
import torch
from torch import nn

EPS = 1e-5
C = 4  # channels of the layer-level tests


def image_input(n: int = 8, c: int = C, h: int = 3, w: int = 4, seed: int = 0) -> torch.Tensor:
    """Mean and scale differ per sample and per channel, so pooling over wrong axes shows."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g)
    scale = torch.linspace(0.5, 3.0, c).view(1, c, 1, 1)
    shift = torch.randn(n, c, 1, 1, generator=g) * 2 + torch.arange(n).view(n, 1, 1, 1) * 0.5
    return x * scale + shift


def dense_input(n: int = 8, c: int = C, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=g) * torch.linspace(0.5, 3.0, c)
    return x + torch.randn(n, 1, generator=g) * 2 + torch.arange(n).view(n, 1) * 0.5


INPUTS = pytest.mark.parametrize("make_x", [image_input, dense_input], ids=["image", "dense"])


def cview(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-channel vector -> broadcastable against x."""
    return t.reshape(1, -1, *([1] * (x.dim() - 2)))


def stat_dims(x: torch.Tensor) -> tuple[int, ...]:
    return (0, *range(2, x.dim()))


def set_affine(layer: nn.Module, c: int = C) -> tuple[torch.Tensor | None, torch.Tensor]:
    """Non-trivial γ (if the layer has one) and β; returns them in float64."""
    weight = torch.linspace(0.5, 2.0, c)
    bias = torch.linspace(-1.0, 1.5, c)
    with torch.no_grad():
        if getattr(layer, "weight", None) is not None:
            layer.weight.copy_(weight)
        if getattr(layer, "bias", None) is not None:
            layer.bias.copy_(bias)
    has_weight = getattr(layer, "weight", None) is not None
    return (weight.double() if has_weight else None), bias.double()


def set_running(layer: nn.Module, mean: torch.Tensor, var: torch.Tensor) -> None:
    with torch.no_grad():
        layer.running_mean.copy_(mean)
        layer.running_var.copy_(var)


def batch_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float64 (mean, biased var, unbiased var) per channel over (N, H, W)."""
    x = x.double()
    dims = stat_dims(x)
    mean = x.mean(dim=dims)
    sq = ((x - cview(mean, x)) ** 2).sum(dim=dims)
    count = x.numel() // x.shape[1]
    return mean, sq / count, sq / (count - 1)


def bn_reference(x, mean, var, weight, bias, eps=EPS) -> torch.Tensor:
    x = x.double()
    y = (x - cview(mean, x)) / torch.sqrt(cview(var, x) + eps)
    return y * cview(weight, x) + cview(bias, x)


def ghost_reference(x, group_size, weight, bias, eps=EPS) -> torch.Tensor:
    """BN whose statistics are those of each consecutive group of ``group_size`` samples."""
    x = x.double()
    out = torch.empty_like(x)
    for start in range(0, x.shape[0], group_size):
        chunk = x[start : start + group_size]
        mean, var, _ = batch_stats(chunk)
        out[start : start + group_size] = bn_reference(chunk, mean, var, weight, bias, eps)
    return out


def renorm_r_d(x, running_mean, running_var, rmax, dmax, eps=EPS):
    mean, var, _ = batch_stats(x)
    sigma_b = torch.sqrt(var + eps)
    sigma = torch.sqrt(running_var.double() + eps)
    r_raw = sigma_b / sigma
    d_raw = (mean - running_mean.double()) / sigma
    return r_raw, d_raw, r_raw.clamp(1 / rmax, rmax), d_raw.clamp(-dmax, dmax)


def renorm_reference(x, running_mean, running_var, rmax, dmax, weight, bias, eps=EPS):
    """γ·((x−μ_B)/σ_B·r + d) + β with r, d clipped and without gradient."""
    xd = x.double()  # differentiable: the gradient reaches x through μ_B and σ_B only
    dims = stat_dims(xd)
    mean = xd.mean(dim=dims)
    var = ((xd - cview(mean, xd)) ** 2).mean(dim=dims)
    with torch.no_grad():
        _, _, r, d = renorm_r_d(x.detach(), running_mean, running_var, rmax, dmax, eps)
    xhat = (xd - cview(mean, xd)) / torch.sqrt(cview(var, xd) + eps)
    return (xhat * cview(r, xd) + cview(d, xd)) * cview(weight, xd) + cview(bias, xd)


# --- models of the weight-side and registry tests ----------------------------------------------

CNN = {"name": "cnn", "widths": [4, 8], "convs_per_stage": 1, "activation": "relu"}
MLP = {"name": "mlp", "hidden": 16, "depth": 2, "activation": "relu"}
MODELS = {"cnn": CNN, "mlp": MLP}
NORM_KWARGS = {"group": {"num_groups": 2}, "ghost_batch": {"group_size": 4}}


def norm_cfg(name: str, position: str = "pre") -> dict:
    return {"name": name, "position": position, **NORM_KWARGS.get(name, {})}


def model_input(model: str, n: int = 8, seed: int = 0) -> torch.Tensor:
    side = 8 if model == "cnn" else 32  # the MLP reads flattened 3x32x32 images
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


def weighted_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
