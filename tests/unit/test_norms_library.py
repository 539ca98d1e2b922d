"""The norm library beyond the base norms: BN variants (ghost, renorm, noisy, mean-only), RMSNorm,
weight-side normalization, precise BN, validity rules, and every registered norm training.

Each layer is compared with a float64 reference written here with explicit reductions, so a layer
that pools over the wrong set of values, or updates its running statistics wrongly, fails.
(Batch/layer/instance/group themselves are covered by test_norms_core.py.)
"""

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn
from torch.nn.utils import parametrize

from normexp.errors import ConfigError
from normexp.models import build_model, check_model
from normexp.norms.batch_variants import (
    BatchRenorm,
    GhostBatchNorm,
    MeanOnlyBatchNorm,
    NoisyBatchNorm,
)
from normexp.norms.layers import BatchNorm, RMSNorm
from normexp.norms.precise_bn import recompute_bn_stats
from normexp.norms.registry import NORMS, make_norm, norm_spec, norms_for
from normexp.norms.validity import check_norm
from normexp.norms.weight_side import (
    WEIGHT_NORM_GAIN,
    Standardize,
    apply_weight_side,
    l1_penalty,
)
from normexp.train.optim import parameter_groups
from tests.helpers import CONFIG_DIR

EPS = 1e-5
IMAGE_NORMS = norms_for("image")  # every norm with a layer for images (not the LSTM cells' own)
C = 4  # channels of the layer-level tests


pytestmark = pytest.mark.usefixtures("one_torch_thread", "torch_seed")


# --- inputs and float64 references -----------------------------------------------------------


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


# --- 1. ghost batch norm ---------------------------------------------------------------------


@INPUTS
@pytest.mark.parametrize("group_size", [2, 4])
def test_ghost_batch_training_output_uses_each_groups_statistics(make_x, group_size):
    x = make_x()
    layer = make_norm("ghost_batch", C, group_size=group_size).train()
    assert isinstance(layer, GhostBatchNorm)
    weight, bias = set_affine(layer)
    out = layer(x)
    expected = ghost_reference(x, group_size, weight, bias)
    torch.testing.assert_close(out.double(), expected, atol=5e-5, rtol=1e-5)
    # guard: whole-batch statistics would give something else on this input
    mean, var, _ = batch_stats(x)
    assert (expected - bn_reference(x, mean, var, weight, bias)).abs().max() > 0.1


@INPUTS
@pytest.mark.parametrize("group_size", [2, 4])
def test_ghost_batch_running_stats_average_the_groups_statistics(make_x, group_size):
    momentum = 0.3
    init_mean = torch.linspace(-1.0, 2.0, C)
    init_var = torch.linspace(0.5, 3.0, C)
    layer = make_norm("ghost_batch", C, group_size=group_size, momentum=momentum).train()
    set_running(layer, init_mean, init_var)
    x = make_x()
    layer(x)
    groups = [batch_stats(x[s : s + group_size]) for s in range(0, x.shape[0], group_size)]
    group_mean = torch.stack([g[0] for g in groups]).mean(0)
    group_var = torch.stack([g[2] for g in groups]).mean(0)  # unbiased, per group
    expected_mean = (1 - momentum) * init_mean.double() + momentum * group_mean
    expected_var = (1 - momentum) * init_var.double() + momentum * group_var
    torch.testing.assert_close(layer.running_mean.double(), expected_mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer.running_var.double(), expected_var, atol=1e-5, rtol=1e-5)
    assert int(layer.num_batches_tracked) == 1
    # guard: the whole batch's unbiased variance is a different number here
    whole = (1 - momentum) * init_var.double() + momentum * batch_stats(x)[2]
    assert (whole - expected_var).abs().max() > 0.05


@INPUTS
def test_ghost_batch_eval_uses_running_stats_and_leaves_them(make_x):
    layer = make_norm("ghost_batch", C, group_size=4).train()
    layer(make_x(seed=3) * 2 + 1)
    weight, bias = set_affine(layer)
    layer.eval()
    mean, var = layer.running_mean.clone(), layer.running_var.clone()
    tracked = int(layer.num_batches_tracked)
    x = make_x(n=6, seed=4)  # 6 does not split into groups of 4: eval must not care
    out = layer(x)
    expected = bn_reference(x, mean.double(), var.double(), weight, bias)
    torch.testing.assert_close(out.double(), expected, atol=5e-5, rtol=1e-5)
    assert torch.equal(layer.running_mean, mean) and torch.equal(layer.running_var, var)
    assert int(layer.num_batches_tracked) == tracked


def test_ghost_batch_refuses_a_training_batch_that_does_not_split():
    layer = make_norm("ghost_batch", C, group_size=4).train()
    with pytest.raises(ValueError, match="groups of 4"):
        layer(image_input(n=6))


@INPUTS
def test_ghost_batch_with_group_size_n_is_batch_norm(make_x):
    x = make_x()
    ghost = make_norm("ghost_batch", C, group_size=x.shape[0], momentum=0.2).train()
    bn = make_norm("batch", C, momentum=0.2).train()
    for layer in (ghost, bn):
        set_affine(layer)
        set_running(layer, torch.linspace(-1.0, 1.0, C), torch.linspace(0.5, 2.0, C))
    torch.testing.assert_close(ghost(x), bn(x))
    torch.testing.assert_close(ghost.running_mean, bn.running_mean)
    torch.testing.assert_close(ghost.running_var, bn.running_var)
    assert int(ghost.num_batches_tracked) == int(bn.num_batches_tracked) == 1


def test_ghost_batch_groups_are_consecutive_samples():
    """Permuting samples inside a group changes nothing; swapping across groups does."""
    x = image_input()
    layer = make_norm("ghost_batch", C, group_size=4).train()
    out = layer(x)
    inside = torch.tensor([1, 0, 3, 2, 4, 5, 6, 7])
    torch.testing.assert_close(layer(x[inside]), out[inside])
    across = torch.tensor([4, 1, 2, 3, 0, 5, 6, 7])
    assert (layer(x[across]) - out[across]).abs().max() > 1e-2


# --- 1. batch renormalization ----------------------------------------------------------------


def renorm_layer(rmax, dmax, momentum=0.1, **kw) -> BatchRenorm:
    kw = {"relax_start": 0, "relax_end": 0} | kw  # the final limits from the first step
    layer = make_norm("batch_renorm", C, rmax=rmax, dmax=dmax, momentum=momentum, **kw)
    assert isinstance(layer, BatchRenorm)
    return layer.train()


@INPUTS
def test_batch_renorm_unclipped_regime(make_x):
    x = make_x()
    mean, var, _ = batch_stats(x)
    # running stats near the batch's: r and d strictly inside their clips, and not trivial
    running_mean = (mean + torch.linspace(-0.4, 0.4, C, dtype=torch.float64) * var.sqrt()).float()
    running_var = (var * torch.tensor([0.6, 1.5, 0.8, 1.8], dtype=torch.float64)).float()
    rmax, dmax = 3.0, 5.0
    layer = renorm_layer(rmax, dmax)
    set_running(layer, running_mean, running_var)
    weight, bias = set_affine(layer)
    r_raw, d_raw, r, d = renorm_r_d(x, running_mean, running_var, rmax, dmax)
    assert torch.equal(r, r_raw) and torch.equal(d, d_raw)  # guard: no clipping
    assert (r - 1).abs().min() > 0.05 and d.abs().min() > 0.05  # guard: not plain BN
    out = layer(x)
    expected = renorm_reference(x, running_mean, running_var, rmax, dmax, weight, bias)
    torch.testing.assert_close(out.double(), expected, atol=5e-5, rtol=1e-5)


@INPUTS
def test_batch_renorm_clipped_regime(make_x):
    x = make_x()
    mean, var, _ = batch_stats(x)
    # channels alternate: σ far above / far below σ_B, μ far below / far above μ_B
    var_factor = torch.tensor([50.0, 0.01, 80.0, 0.02], dtype=torch.float64)
    mean_offset = torch.tensor([-5.0, 5.0, 8.0, -8.0], dtype=torch.float64)
    running_var = (var * var_factor).float()
    running_mean = (mean + mean_offset * (var * var_factor).sqrt()).float()
    rmax, dmax = 2.0, 1.5
    layer = renorm_layer(rmax, dmax)
    set_running(layer, running_mean, running_var)
    weight, bias = set_affine(layer)
    r_raw, d_raw, r, d = renorm_r_d(x, running_mean, running_var, rmax, dmax)
    assert torch.equal(r, torch.tensor([0.5, 2.0, 0.5, 2.0], dtype=torch.float64))  # guard
    assert torch.equal(d, torch.tensor([1.5, -1.5, -1.5, 1.5], dtype=torch.float64))  # guard
    out = layer(x)
    expected = renorm_reference(x, running_mean, running_var, rmax, dmax, weight, bias)
    torch.testing.assert_close(out.double(), expected, atol=5e-5, rtol=1e-5)


def test_batch_renorm_relax_schedule():
    layer = renorm_layer(rmax=3.0, dmax=5.0, relax_start=10, relax_end=30)
    expected = {0: (1.0, 0.0), 9: (1.0, 0.0), 10: (1.0, 0.0), 15: (1.5, 1.25), 20: (2.0, 2.5),
                30: (3.0, 5.0), 31: (3.0, 5.0), 1000: (3.0, 5.0)}  # fmt: skip
    for step, (rmax, dmax) in expected.items():
        layer.num_batches_tracked.fill_(step)
        assert layer.limits() == pytest.approx((rmax, dmax), abs=1e-12), step
    # no relaxation window: the final limits from the first step
    assert renorm_layer(rmax=3.0, dmax=5.0).limits() == (3.0, 5.0)
    # a window of no length: plain BN up to relax_start, the final limits from there on
    sudden = renorm_layer(rmax=3.0, dmax=5.0, relax_start=10, relax_end=10)
    for step, limits in {0: (1.0, 0.0), 9: (1.0, 0.0), 10: (3.0, 5.0), 11: (3.0, 5.0)}.items():
        sudden.num_batches_tracked.fill_(step)
        assert sudden.limits() == limits, step


def test_batch_renorm_defaults_start_as_plain_bn_as_in_the_paper_and_config():
    layer = make_norm("batch_renorm", C)
    assert layer.limits() == (1.0, 0.0)  # r_max 1, d_max 0: plain BN at the start
    config = OmegaConf.load(CONFIG_DIR / "norm" / "batch_renorm.yaml")
    for key in ("rmax", "dmax", "relax_start", "relax_end", "momentum"):
        assert getattr(layer, key) == config[key], key
    layer.num_batches_tracked.fill_(config["relax_end"])
    assert layer.limits() == (3.0, 5.0)  # Ioffe 2017's final limits


@pytest.mark.parametrize(("step", "rmax", "dmax"), [(5, 1.0, 0.0), (20, 2.0, 2.5), (40, 3.0, 5.0)])
def test_batch_renorm_forward_uses_the_limits_of_the_current_step(step, rmax, dmax):
    x = image_input()
    mean, var, _ = batch_stats(x)
    running_var = (var * 100).float()  # σ_B/σ = 0.1: clipped at 1/r_max at every step
    running_mean = (mean - 20 * var.sqrt()).float()  # d = +2: clipped unless d_max >= 2
    layer = renorm_layer(3.0, 5.0, relax_start=10, relax_end=30)
    layer.num_batches_tracked.fill_(step)
    set_running(layer, running_mean, running_var)
    weight, bias = set_affine(layer)
    out = layer(x)
    expected = renorm_reference(x, running_mean, running_var, rmax, dmax, weight, bias)
    torch.testing.assert_close(out.double(), expected, atol=5e-5, rtol=1e-5)
    assert int(layer.num_batches_tracked) == step + 1
    if step < 10:  # before relax_start: plain BN whatever the running stats
        plain = bn_reference(x, mean, var, weight, bias)
        torch.testing.assert_close(out.double(), plain, atol=5e-5, rtol=1e-5)


@INPUTS
def test_batch_renorm_running_stats_update_in_training_only(make_x):
    momentum = 0.25
    layer = renorm_layer(3.0, 5.0, momentum=momentum)
    init_mean, init_var = torch.linspace(-1.0, 1.0, C), torch.linspace(0.5, 2.0, C)
    set_running(layer, init_mean, init_var)
    x = make_x()
    layer(x)
    mean, _, unbiased = batch_stats(x)
    expected_mean = (1 - momentum) * init_mean.double() + momentum * mean
    expected_var = (1 - momentum) * init_var.double() + momentum * unbiased
    torch.testing.assert_close(layer.running_mean.double(), expected_mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer.running_var.double(), expected_var, atol=1e-5, rtol=1e-5)
    assert int(layer.num_batches_tracked) == 1
    # eval: plain BN with the running stats, which stay as they are
    weight, bias = set_affine(layer)
    layer.eval()
    before = (layer.running_mean.clone(), layer.running_var.clone())
    x2 = make_x(seed=7)
    out = layer(x2)
    expected = bn_reference(x2, before[0].double(), before[1].double(), weight, bias)
    torch.testing.assert_close(out.double(), expected, atol=5e-5, rtol=1e-5)
    assert torch.equal(layer.running_mean, before[0]) and torch.equal(layer.running_var, before[1])
    assert int(layer.num_batches_tracked) == 1


@INPUTS
def test_batch_renorm_with_rmax_1_dmax_0_is_batch_norm(make_x):
    x = make_x()
    renorm = renorm_layer(rmax=1.0, dmax=0.0, momentum=0.2)
    bn = make_norm("batch", C, momentum=0.2).train()
    for layer in (renorm, bn):
        set_affine(layer)
        set_running(layer, torch.linspace(-3.0, 3.0, C), torch.linspace(0.1, 9.0, C))
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(5))
    grads = []
    for layer in (renorm, bn):
        xi = x.clone().requires_grad_()
        out = layer(xi)
        gx, gw, gb = torch.autograd.grad((out * upstream).sum(), (xi, layer.weight, layer.bias))
        grads.append((out.detach(), gx, gw, gb))
    for got, want in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)
    assert grads[1][1].abs().max() > 1e-2  # guard: a non-trivial input gradient
    torch.testing.assert_close(renorm.running_mean, bn.running_mean)
    torch.testing.assert_close(renorm.running_var, bn.running_var)


def test_batch_renorm_r_and_d_carry_no_gradient():
    """In the unclipped regime r and d vary with x, but the gradient treats them as constants."""
    x = image_input().double()
    mean, var, _ = batch_stats(x)
    running_mean, running_var = mean + 0.3 * var.sqrt(), var * 1.5
    layer = renorm_layer(3.0, 5.0).double()
    set_running(layer, running_mean, running_var)
    set_affine(layer)
    weight, bias = layer.weight.detach().clone(), layer.bias.detach().clone()
    upstream = torch.randn(x.shape, generator=torch.Generator().manual_seed(6), dtype=x.dtype)
    xi = x.clone().requires_grad_()
    (got,) = torch.autograd.grad((layer(xi) * upstream).sum(), xi)
    xr = x.clone().requires_grad_()
    ref = renorm_reference(xr, running_mean, running_var, 3.0, 5.0, weight, bias)
    (want,) = torch.autograd.grad((ref * upstream).sum(), xr)
    torch.testing.assert_close(got, want)


# --- 1. noisy batch norm ---------------------------------------------------------------------


def noisy_and_plain(max_shift=0.5, max_scale=1.5) -> tuple[NoisyBatchNorm, BatchNorm]:
    noisy = make_norm("noisy_batch", C, max_shift=max_shift, max_scale=max_scale)
    assert isinstance(noisy, NoisyBatchNorm)
    set_affine(noisy)
    set_running(noisy, torch.linspace(-1.0, 1.0, C), torch.linspace(0.5, 2.0, C))
    plain = make_norm("batch", C)
    plain.load_state_dict(noisy.state_dict())
    return noisy, plain


@INPUTS
def test_noisy_batch_in_eval_is_plain_batch_norm(make_x):
    noisy, plain = noisy_and_plain()
    noisy.eval(), plain.eval()
    x = make_x()
    torch.testing.assert_close(noisy(x), plain(x), atol=0, rtol=0)
    torch.testing.assert_close(noisy(x), noisy(x), atol=0, rtol=0)  # no noise drawn


def test_noisy_batch_in_training_is_bn_then_a_bounded_affine_map_per_sample_and_channel():
    max_shift, max_scale = 0.7, 2.0
    noisy, plain = noisy_and_plain(max_shift, max_scale)
    x = image_input(n=16, h=3, w=3)
    torch.manual_seed(123)
    out = noisy.train()(x).double()
    y = plain.train()(x).double()
    # recover (s, m) per (n, c) by least squares over the H·W values of that (n, c)
    yc = y - y.mean(dim=(2, 3), keepdim=True)
    oc = out - out.mean(dim=(2, 3), keepdim=True)
    s = (yc * oc).sum(dim=(2, 3)) / (yc * yc).sum(dim=(2, 3))
    m = out.mean(dim=(2, 3)) - s * y.mean(dim=(2, 3))
    fitted = y * s[..., None, None] + m[..., None, None]
    torch.testing.assert_close(out, fitted, atol=1e-4, rtol=1e-5)  # affine per (n, c)
    tol = 1e-4
    assert s.min() >= 1 - tol and s.max() <= max_scale + tol
    assert m.min() >= -max_shift - tol and m.max() <= max_shift + tol
    # spread over the whole ranges (64 draws each), and differing per sample and per channel
    assert s.min() < 1.25 and s.max() > max_scale - 0.25
    assert m.min() < -max_shift / 2 and m.max() > max_shift / 2
    assert (s.std(dim=0) > 0.05).all() and (s.std(dim=1) > 0.05).all()
    assert (m.std(dim=0) > 0.05).all() and (m.std(dim=1) > 0.05).all()
    # the noise does not enter the running statistics
    torch.testing.assert_close(noisy.running_mean, plain.running_mean)
    torch.testing.assert_close(noisy.running_var, plain.running_var)


def test_noisy_batch_dense_stays_within_the_noise_bounds():
    max_shift, max_scale = 0.5, 1.5
    noisy, plain = noisy_and_plain(max_shift, max_scale)
    x = dense_input(n=64)
    out = noisy.train()(x).double()
    y = plain.train()(x).double()
    # out = s·y + m with s in [1, max_scale], m in [-max_shift, max_shift]
    diff = out - y
    low = torch.minimum(y, y * max_scale) - max_shift
    high = torch.maximum(y, y * max_scale) + max_shift
    assert (out >= low - 1e-5).all() and (out <= high + 1e-5).all()
    assert diff.abs().max() > 0.1  # noise there at all


def test_noisy_batch_draws_new_noise_each_step_and_is_seeded():
    noisy, _ = noisy_and_plain()
    noisy.train()
    x = image_input()
    torch.manual_seed(1)
    first, second = noisy(x), noisy(x)
    assert (first - second).abs().max() > 1e-2
    torch.manual_seed(1)
    torch.testing.assert_close(noisy(x), first, atol=0, rtol=0)


# --- 1. mean-only batch norm, RMSNorm --------------------------------------------------------


@INPUTS
def test_mean_only_batch_subtracts_the_batch_mean_and_adds_beta(make_x):
    momentum = 0.3
    layer = make_norm("mean_only_batch", C, momentum=momentum).train()
    assert isinstance(layer, MeanOnlyBatchNorm)
    assert layer.weight is None
    assert [n for n, _ in layer.named_parameters()] == ["bias"]
    _, bias = set_affine(layer)
    init_mean = torch.linspace(-1.0, 1.0, C)
    set_running(layer, init_mean, torch.full((C,), 2.0))
    x = make_x()
    out = layer(x)
    mean, _, _ = batch_stats(x)
    expected = x.double() - cview(mean, x) + cview(bias, x)
    torch.testing.assert_close(out.double(), expected, atol=2e-5, rtol=1e-5)
    expected_running = (1 - momentum) * init_mean.double() + momentum * mean
    torch.testing.assert_close(layer.running_mean.double(), expected_running, atol=1e-5, rtol=0)
    torch.testing.assert_close(layer.running_var, torch.full((C,), 2.0))  # no variance used
    assert int(layer.num_batches_tracked) == 1
    # eval: running mean, nothing updated
    layer.eval()
    running = layer.running_mean.clone()
    x2 = make_x(seed=9)
    out2 = layer(x2)
    expected2 = x2.double() - cview(running.double(), x2) + cview(bias, x2)
    torch.testing.assert_close(out2.double(), expected2, atol=2e-5, rtol=1e-5)
    assert torch.equal(layer.running_mean, running) and int(layer.num_batches_tracked) == 1


@INPUTS
def test_rms_norm_matches_reference(make_x):
    x = make_x()
    layer = make_norm("rms", C, eps=1e-6)
    assert isinstance(layer, RMSNorm)
    assert [n for n, _ in layer.named_parameters()] == ["weight"]  # no shift
    gamma = torch.linspace(0.5, 2.0, C)
    with torch.no_grad():
        layer.weight.copy_(gamma)
    xd = x.double()
    dims = tuple(range(1, x.dim()))
    rms = torch.sqrt((xd**2).mean(dim=dims, keepdim=True) + 1e-6)
    expected = xd / rms * cview(gamma.double(), x)
    torch.testing.assert_close(layer.train()(x).double(), expected, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(layer.eval()(x).double(), expected, atol=2e-5, rtol=1e-5)
    # guard: mean subtraction (layer norm) would differ on these shifted inputs
    ln = (xd - xd.mean(dim=dims, keepdim=True)) / xd.std(dim=dims, keepdim=True, correction=0)
    assert (ln * cview(gamma.double(), x) - expected).abs().max() > 0.1


# --- 4. gradcheck ----------------------------------------------------------------------------


def gradcheck_module(module: nn.Module, x: torch.Tensor, names: list[str], seed=None) -> None:
    """gradcheck of module(x) wrt x and the named parameters, float64. Every evaluation gets fresh
    copies of the buffers (and, if given, a reseeded RNG), so each computes the same function."""
    module = module.double()
    buffers = {n: b.clone() for n, b in module.named_buffers()}
    params = [getattr(module, n).detach().clone().requires_grad_() for n in names]

    def f(x, *ps):
        if seed is not None:
            torch.manual_seed(seed)
        state = {n: b.clone() for n, b in buffers.items()}
        state.update(zip(names, ps, strict=True))
        return torch.func.functional_call(module, state, (x,))

    x = x.double().clone().requires_grad_()
    assert torch.autograd.gradcheck(f, (x, *params), eps=1e-6, atol=1e-5, rtol=1e-4)


def small_image(seed=0):
    return image_input(n=4, c=2, h=2, w=2, seed=seed)


def small_dense(seed=1):
    return dense_input(n=4, c=2, seed=seed)


SMALL = pytest.mark.parametrize("make_x", [small_image, small_dense], ids=["image", "dense"])


@SMALL
def test_gradcheck_ghost_batch(make_x):
    layer = GhostBatchNorm(2, group_size=2).train()
    set_affine(layer, 2)
    gradcheck_module(layer, make_x(), ["weight", "bias"])


def test_gradcheck_batch_renorm_clipped():
    x = small_image().double()
    mean, var, _ = batch_stats(x)
    running_var = var * torch.tensor([100.0, 0.001], dtype=torch.float64)
    running_mean = mean + torch.tensor([-5.0, 5.0], dtype=torch.float64) * running_var.sqrt()
    layer = BatchRenorm(2, rmax=2.0, dmax=1.0).train()
    set_affine(layer, 2)
    layer = layer.double()
    set_running(layer, running_mean, running_var)
    _, _, r, d = renorm_r_d(x, running_mean, running_var, 2.0, 1.0)
    assert torch.equal(r, torch.tensor([0.5, 2.0], dtype=torch.float64))  # well inside the clips
    assert torch.equal(d, torch.tensor([1.0, -1.0], dtype=torch.float64))
    gradcheck_module(layer, x, ["weight", "bias"])


@SMALL
def test_gradcheck_batch_renorm_as_plain_bn(make_x):
    layer = BatchRenorm(2, rmax=1.0, dmax=0.0).train()
    set_affine(layer, 2)
    gradcheck_module(layer, make_x(), ["weight", "bias"])


@SMALL
def test_gradcheck_noisy_batch(make_x):
    layer = NoisyBatchNorm(2, max_shift=0.5, max_scale=1.5).train()
    set_affine(layer, 2)
    gradcheck_module(layer, make_x(), ["weight", "bias"], seed=11)


@SMALL
def test_gradcheck_mean_only_batch(make_x):
    layer = MeanOnlyBatchNorm(2).train()
    set_affine(layer, 2)
    gradcheck_module(layer, make_x(), ["bias"])


@SMALL
def test_gradcheck_rms(make_x):
    layer = RMSNorm(2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([0.7, 1.3]))
    gradcheck_module(layer, make_x(), ["weight"])


def test_gradcheck_standardize_and_conv_through_it():
    w = torch.randn(3, 2, 2, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(Standardize(), (w,), eps=1e-6, atol=1e-5, rtol=1e-4)
    x = torch.randn(2, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w: F.conv2d(x, Standardize()(w)), (x, w), eps=1e-6, atol=1e-5, rtol=1e-4
    )


# --- 5. weight side --------------------------------------------------------------------------

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


@pytest.mark.parametrize("model", ["cnn", "mlp"])
@pytest.mark.parametrize("norm", ["batch", "none"])
def test_weight_norm_keeps_the_function_at_initialization(model, norm):
    torch.manual_seed(3)
    plain = build_model(MODELS[model], norm_cfg(norm)).eval()
    torch.manual_seed(3)
    built = build_model({**MODELS[model], "weight_side": "weight_norm"}, norm_cfg(norm)).eval()
    applied = apply_weight_side(copy.deepcopy(plain), "weight_norm").eval()
    x = model_input(model)
    want = plain(x)
    assert want.abs().max() > 1e-3  # guard: not an all-zero output
    torch.testing.assert_close(built(x), want, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(applied(x), want, atol=1e-5, rtol=1e-4)
    layers = weighted_layers(applied)
    head = layers[-1]
    assert not parametrize.is_parametrized(head)
    for layer in layers[:-1]:
        assert parametrize.is_parametrized(layer, "weight")
        g = layer.parametrizations.weight.original0
        v = layer.parametrizations.weight.original1
        assert g.shape[0] == v.shape[0] and g.numel() == v.shape[0]  # one gain per output unit
        norms = v.detach().flatten(1).norm(dim=1)
        torch.testing.assert_close(g.detach().flatten(), norms)


@pytest.mark.parametrize("model", ["cnn", "mlp"])
def test_weight_norm_gains_are_not_decayed_and_directions_are(model):
    net = build_model({**MODELS[model], "weight_side": "weight_norm"}, norm_cfg("batch"))
    names = dict(net.named_parameters())
    gains = [n for n in names if n.endswith(WEIGHT_NORM_GAIN)]
    directions = [n for n in names if n.endswith("parametrizations.weight.original1")]
    n_hidden = len(weighted_layers(net)) - 1
    assert len(gains) == len(directions) == n_hidden > 0
    assert all(names[n].ndim >= 2 for n in gains)  # not caught by the ndim<=1 rule alone
    decay, no_decay = parameter_groups(net, 5e-4, decay_norm_and_bias=False)
    decay_ids = {id(p) for p in decay["params"]}
    no_decay_ids = {id(p) for p in no_decay["params"]}
    assert {id(names[n]) for n in gains} <= no_decay_ids
    assert {id(names[n]) for n in directions} <= decay_ids
    assert decay_ids | no_decay_ids == {id(p) for p in net.parameters()}
    assert decay_ids.isdisjoint(no_decay_ids)
    decay_all, _ = parameter_groups(net, 5e-4, decay_norm_and_bias=True)
    assert {id(names[n]) for n in gains} <= {id(p) for p in decay_all["params"]}


def test_weight_std_standardizes_each_conv_filter_and_leaves_the_head():
    net = build_model({**CNN, "weight_side": "weight_std"}, norm_cfg("group"))
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    head = weighted_layers(net)[-1]
    assert isinstance(head, nn.Linear) and not parametrize.is_parametrized(head)
    assert len(convs) == len(CNN["widths"])
    for conv in convs:
        assert parametrize.is_parametrized(conv, "weight")
        w = conv.weight.detach().double().flatten(1)
        raw = conv.parametrizations.weight.original.detach().double().flatten(1)
        assert raw.mean(dim=1).abs().max() > 1e-3 or (raw.var(dim=1) - 1).abs().max() > 0.1
        torch.testing.assert_close(w.mean(dim=1), torch.zeros(w.shape[0], dtype=w.dtype),
                                   atol=1e-6, rtol=0)  # fmt: skip
        var = w.var(dim=1, correction=0)
        torch.testing.assert_close(var, torch.ones_like(var), atol=2e-3, rtol=0)
    # the forward pass uses the standardized filters
    conv = convs[0]
    x = model_input("cnn")
    raw = conv.parametrizations.weight.original
    std = (raw - raw.mean(dim=(1, 2, 3), keepdim=True)) / torch.sqrt(
        raw.var(dim=(1, 2, 3), keepdim=True, correction=0) + 1e-5
    )
    torch.testing.assert_close(conv(x), F.conv2d(x, std, conv.bias, padding=1))


def test_weight_std_leaves_linear_layers_alone():
    net = build_model(MLP, norm_cfg("layer"))
    before = {n: p.clone() for n, p in net.named_parameters()}
    apply_weight_side(net, "weight_std")
    assert not any(parametrize.is_parametrized(m) for m in net.modules())
    assert {n: p for n, p in net.named_parameters()}.keys() == before.keys()
    with pytest.raises(ConfigError) as info:
        check_model({**MLP, "weight_side": "weight_std"}, norm_cfg("layer"), 8)
    assert info.value.field == "model.weight_side"


def test_unknown_weight_side_is_named():
    net = build_model(MLP, norm_cfg("batch"))
    with pytest.raises(ConfigError) as info:
        apply_weight_side(net, "spectral_norm")
    assert info.value.field == "model.weight_side"
    msg = str(info.value)
    assert msg.startswith("model.weight_side:") and "spectral_norm" in msg
    assert all(m in msg.split("allowed:")[1] for m in ("none", "weight_norm", "weight_std"))
    with pytest.raises(ConfigError) as info:
        check_model({**CNN, "weight_side": "bogus"}, norm_cfg("batch"), 8, image_size=8)
    assert info.value.field == "model.weight_side"
    with pytest.raises(ConfigError) as info:
        build_model({**CNN, "weight_side": "bogus"}, norm_cfg("batch"))
    assert info.value.field == "model.weight_side"


@pytest.mark.parametrize("position", ["pre", "post"])
def test_l1_penalty_sums_weight_matrices_and_filters_only(position):
    net = build_model(CNN, norm_cfg("batch", position))
    with torch.no_grad():  # make biases and norm parameters large, so counting them shows
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.weight.fill_(3.0)
                m.bias.fill_(-2.0)
            if isinstance(m, nn.Conv2d | nn.Linear) and m.bias is not None:
                m.bias.fill_(5.0)
    expected = sum(m.weight.detach().double().abs().sum() for m in weighted_layers(net))
    got = l1_penalty(net)
    assert got.dim() == 0 and got.requires_grad
    torch.testing.assert_close(got.double(), expected, atol=1e-4, rtol=1e-6)
    # its gradient is sign(w) on weights and nothing elsewhere
    got.backward()
    for name, p in net.named_parameters():
        if p.ndim > 1:
            torch.testing.assert_close(p.grad, p.detach().sign())
        else:
            assert p.grad is None, name


def test_l1_penalty_skips_weight_norm_gains():
    net = build_model({**MLP, "weight_side": "weight_norm"}, norm_cfg("batch"))
    with torch.no_grad():
        for n, p in net.named_parameters():
            if n.endswith(WEIGHT_NORM_GAIN):
                p.mul_(4.0)  # g no longer equals ||v||: counting g or w would show
    expected = sum(
        p.detach().double().abs().sum()
        for n, p in net.named_parameters()
        if n.endswith("original1") or (p.ndim > 1 and "parametrizations" not in n)
    )
    torch.testing.assert_close(l1_penalty(net).double(), expected, atol=1e-4, rtol=1e-6)


# --- 6. precise BN ---------------------------------------------------------------------------


def tiny_bn_net() -> nn.Sequential:
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Linear(5, 6), make_norm("batch", 6), nn.ReLU(), nn.Linear(6, 3), make_norm("batch", 3)
    )
    with torch.no_grad():
        for bn in (net[1], net[4]):
            c = bn.num_features
            bn.weight.copy_(torch.linspace(0.5, 2.0, c))
            bn.bias.copy_(torch.linspace(-0.5, 0.5, c))
            bn.running_mean.fill_(7.0)
            bn.running_var.fill_(9.0)
    return net


def population(k: int = 5) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return [torch.randn(8, 5, generator=g) * (1 + i) + i for i in range(k)]


def expected_precise_stats(net: nn.Sequential, batches: list[torch.Tensor]):
    """Per BN: average over batches of the batch mean and unbiased variance of its input,
    from a float64 forward pass with training-mode (batch-statistics) normalization."""
    lin1, bn1, _, lin2, bn2 = net
    p = {k: v.detach().double() for k, v in net.state_dict().items() if v.is_floating_point()}
    sums = [[0, 0], [0, 0]]
    for x in batches:
        h1 = x.double() @ p["0.weight"].T + p["0.bias"]
        mean1, var1, unb1 = batch_stats(h1)
        a = torch.relu(bn_reference(h1, mean1, var1, p["1.weight"], p["1.bias"], bn1.eps))
        h2 = a @ p["3.weight"].T + p["3.bias"]
        mean2, _, unb2 = batch_stats(h2)
        for s, (m, v) in zip(sums, [(mean1, unb1), (mean2, unb2)], strict=True):
            s[0] = s[0] + m
            s[1] = s[1] + v
    return [(m / len(batches), v / len(batches)) for m, v in sums]


@pytest.mark.parametrize("was_training", [False, True])
def test_precise_bn_sets_running_stats_to_the_average_of_batch_stats(was_training):
    net = tiny_bn_net().train(was_training)
    batches = population(5)
    expected = expected_precise_stats(net, batches[:3])
    used = recompute_bn_stats(net, iter(batches), 3)
    assert used == 3
    for bn, (mean, var) in zip((net[1], net[4]), expected, strict=True):
        torch.testing.assert_close(bn.running_mean.double(), mean, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(bn.running_var.double(), var, atol=1e-5, rtol=1e-5)
    assert all(m.training == was_training for m in net.modules())
    # guard: an exponential moving average over the same batches is something else
    ema = tiny_bn_net().train()
    for x in batches[:3]:
        ema(x)
    assert (ema[1].running_var.double() - expected[0][1]).abs().max() > 0.1


def test_precise_bn_uses_what_there_is_when_asked_for_more():
    net = tiny_bn_net().eval()
    batches = population(2)
    expected = expected_precise_stats(net, batches)
    assert recompute_bn_stats(net, (x for x in batches), 10) == 2
    for bn, (mean, var) in zip((net[1], net[4]), expected, strict=True):
        torch.testing.assert_close(bn.running_mean.double(), mean, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(bn.running_var.double(), var, atol=1e-5, rtol=1e-5)
    assert not net.training


@pytest.mark.parametrize("case", ["zero_batches", "empty_iterable"])
def test_precise_bn_without_batches_leaves_the_stats(case):
    net = tiny_bn_net().eval()
    batches, num = (population(2), 0) if case == "zero_batches" else ([], 4)
    assert recompute_bn_stats(net, batches, num) == 0
    for bn in (net[1], net[4]):
        assert torch.equal(bn.running_mean, torch.full_like(bn.running_mean, 7.0))
        assert torch.equal(bn.running_var, torch.full_like(bn.running_var, 9.0))
    assert not net.training


def test_precise_bn_without_bn_layers_returns_zero():
    net = nn.Sequential(nn.Linear(5, 3), make_norm("layer", 3))
    assert recompute_bn_stats(net, population(2), 2) == 0


def test_precise_bn_draws_no_more_batches_than_it_uses():
    net = tiny_bn_net()
    source = iter(population(5))
    assert recompute_bn_stats(net, source, 3) == 3
    assert len(list(source)) == 2


# --- 7. validity -----------------------------------------------------------------------------


@pytest.mark.parametrize("group_size", [3, 5, 16, 0, -4])
def test_ghost_group_size_must_divide_the_batch(group_size):
    with pytest.raises(ConfigError) as info:
        check_norm("ghost_batch", "image", [4, 8], 8 * 16, {"group_size": group_size}, 8)
    assert info.value.field == "norm.group_size"
    msg = str(info.value)
    assert msg.startswith("norm.group_size:") and "train.batch_size=8" in msg


def test_ghost_group_size_divisors_are_accepted():
    for group_size in (1, 2, 4, 8):
        check_norm("ghost_batch", "image", [4, 8], 8 * 16, {"group_size": group_size}, 8)
    for group_size in (2, 4, 8):
        check_norm("ghost_batch", "dense", [16], 8, {"group_size": group_size}, 8)


def test_ghost_with_one_value_per_statistic_is_refused():
    with pytest.raises(ConfigError) as info:
        check_norm("ghost_batch", "dense", [16], 8, {"group_size": 1}, 8)
    assert info.value.field == "train.batch_size"
    assert str(info.value).startswith("train.batch_size:") and "'ghost_batch'" in str(info.value)
    with pytest.raises(ConfigError) as info:
        check_model(MLP, norm_cfg("ghost_batch") | {"group_size": 1}, 8)
    assert info.value.field == "train.batch_size"
    # a CNN whose last feature map is 1x1 pools group_size values: refused too
    with pytest.raises(ConfigError) as info:
        check_model(CNN, norm_cfg("ghost_batch") | {"group_size": 1}, 8, image_size=2)
    assert info.value.field == "train.batch_size"
    check_model(CNN, norm_cfg("ghost_batch") | {"group_size": 1}, 8, image_size=8)


def test_check_model_ghost_names_group_size():
    with pytest.raises(ConfigError) as info:
        check_model(CNN, norm_cfg("ghost_batch") | {"group_size": 3}, 8, image_size=8)
    assert info.value.field == "norm.group_size"


@pytest.mark.parametrize("name", ["batch_renorm", "noisy_batch", "mean_only_batch"])
def test_batch_variants_need_two_values_per_statistic(name):
    assert norm_spec(name).uses_batch_stats
    with pytest.raises(ConfigError) as info:
        check_norm(name, "dense", [16], 1, {}, 1)
    assert info.value.field == "train.batch_size"
    check_norm(name, "dense", [16], 2, {}, 2)


def test_registry_properties_of_the_library_norms():
    expected = {"ghost_batch", "batch_renorm", "noisy_batch", "mean_only_batch", "rms"}
    assert expected <= set(NORMS)
    assert not norm_spec("rms").uses_batch_stats and not norm_spec("rms").has_shift
    assert "recurrent" in norm_spec("rms").input_kinds
    for name in expected - {"rms"}:
        spec = norm_spec(name)
        assert spec.has_shift and spec.input_kinds == {"dense", "image"}


@pytest.mark.parametrize("name", IMAGE_NORMS)
def test_check_model_accepts_every_norm_for_cnn(name):
    check_model(CNN, norm_cfg(name), 8, image_size=8)
    if name == "instance":
        with pytest.raises(ConfigError) as info:
            check_model(MLP, norm_cfg(name), 8)
        assert info.value.field == "norm.name"
    else:
        check_model(MLP, norm_cfg(name), 8)


# --- 8. every registered norm builds and trains ----------------------------------------------

# With position=post the last block ends in the norm and global average pooling follows: IN
# makes every channel's mean exactly beta there, so such a CNN would ignore its input.
REFUSED: set[tuple[str, str, str]] = set()  # with the default grid head nothing is refused


def _train_case(name: str, model: str, position: str):
    return pytest.param(name, model, position)


TRAIN_CASES = [
    _train_case(*case) for case in itertools.product(IMAGE_NORMS, ("cnn", "mlp"), ("pre", "post"))
]


@pytest.mark.parametrize(
    ("name", "model", "position"),
    [c for c in TRAIN_CASES if c.values[1] == "cnn"],
)
def test_cnn_output_depends_on_its_input(name, model, position):
    if (name, model, position) in REFUSED:
        with pytest.raises(ConfigError) as info:
            check_model(CNN, norm_cfg(name, position), 8)
        assert info.value.field == "norm.position"
        return
    torch.manual_seed(0)
    net = build_model(CNN, norm_cfg(name, position)).train()
    with torch.no_grad():
        for m in net.modules():  # non-zero shifts, so a constant output would not be all-zero
            if getattr(m, "bias", None) is not None:
                m.bias.normal_()
        logits = net(model_input("cnn"))
    assert (logits - logits[0]).abs().max() > 1e-5


@pytest.mark.parametrize(("name", "model", "position"), TRAIN_CASES)
def test_every_registered_norm_builds_and_trains(name, model, position):
    spec = norm_spec(name)
    cfg = norm_cfg(name, position)
    if (model == "mlp" and "dense" not in spec.input_kinds) or (name, model, position) in REFUSED:
        with pytest.raises(ConfigError):
            check_model(MODELS[model], cfg, 8)
        return
    check_model(MODELS[model], cfg, 8, image_size=8)
    torch.manual_seed(0)
    net = build_model(MODELS[model], cfg).train()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    g = torch.Generator().manual_seed(1)
    losses = []
    for step in range(3):
        x = model_input(model, seed=step)
        y = torch.randint(0, 10, (8,), generator=g)
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    unchanged = [n for n, p in net.named_parameters() if torch.equal(p.detach(), before[n])]
    assert unchanged == []
    if spec.uses_batch_stats:  # batch variants track their statistics while training
        bns = [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        assert bns and all(int(m.num_batches_tracked) == 3 for m in bns)
        assert all(not torch.equal(m.running_mean, torch.zeros_like(m.running_mean)) for m in bns)
    net.eval()
    with torch.no_grad():
        assert torch.isfinite(net(model_input(model, n=3, seed=9))).all()
