"""The BN variants of the norm library (ghost, renorm, noisy, mean-only) and RMSNorm, each against
a float64 reference (tests/norm_reference.py). Batch/layer/instance/group themselves are covered
by test_norms_core.py."""


import pytest
import torch
from omegaconf import OmegaConf

from normexp.norms.batch_variants import (
    BatchRenorm,
    GhostBatchNorm,
    MeanOnlyBatchNorm,
    NoisyBatchNorm,
    training_noise_off,
)
from normexp.norms.layers import BatchNorm, RMSNorm
from normexp.norms.precise_bn import recompute_bn_stats
from normexp.norms.registry import make_norm
from normexp.train.evaluate import evaluate_with_batch_stats
from tests.helpers import CONFIG_DIR
from tests.norm_reference import (
    INPUTS,
    C,
    batch_stats,
    bn_reference,
    cview,
    dense_input,
    ghost_reference,
    image_input,
    renorm_r_d,
    renorm_reference,
    set_affine,
    set_running,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread", "torch_seed")


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


FIXED = {"step_shift": 0.0, "step_scale": 1.0}  # the per-sample noise alone: a fixed distribution


def noisy_and_plain(max_shift=0.5, max_scale=1.5, **step) -> tuple[NoisyBatchNorm, BatchNorm]:
    noisy = make_norm("noisy_batch", C, max_shift=max_shift, max_scale=max_scale, **step)
    assert isinstance(noisy, NoisyBatchNorm)
    set_affine(noisy)
    set_running(noisy, torch.linspace(-1.0, 1.0, C), torch.linspace(0.5, 2.0, C))
    plain = make_norm("batch", C)
    plain.load_state_dict(noisy.state_dict())
    return noisy, plain


def affine_per_sample_and_channel(out: torch.Tensor, y: torch.Tensor) -> tuple:
    """(s, m), each (N, C), with out = s·y + m per (n, c): least squares over the H·W values of
    that (n, c), checked to fit."""
    out, y = out.double(), y.double()
    yc = y - y.mean(dim=(2, 3), keepdim=True)
    oc = out - out.mean(dim=(2, 3), keepdim=True)
    s = (yc * oc).sum(dim=(2, 3)) / (yc * yc).sum(dim=(2, 3))
    m = out.mean(dim=(2, 3)) - s * y.mean(dim=(2, 3))
    fitted = y * s[..., None, None] + m[..., None, None]
    torch.testing.assert_close(out, fitted, atol=1e-4, rtol=1e-5)  # affine per (n, c)
    return s, m


@INPUTS
def test_noisy_batch_in_eval_is_plain_batch_norm(make_x):
    noisy, plain = noisy_and_plain()
    noisy.eval(), plain.eval()
    x = make_x()
    torch.testing.assert_close(noisy(x), plain(x), atol=0, rtol=0)
    torch.testing.assert_close(noisy(x), noisy(x), atol=0, rtol=0)  # no noise drawn


def test_noisy_batch_in_training_is_bn_then_a_bounded_affine_map_per_sample_and_channel():
    max_shift, max_scale = 0.7, 2.0
    noisy, plain = noisy_and_plain(max_shift, max_scale, **FIXED)
    x = image_input(n=16, h=3, w=3)
    torch.manual_seed(123)
    s, m = affine_per_sample_and_channel(noisy.train()(x), plain.train()(x))
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


def test_noisy_batch_moves_each_channels_mean_and_scale_at_every_step():
    # Santurkar et al.'s noise: per step, each channel's scale and shift are redrawn, shared by
    # the batch (no per-sample part here, so they are read off exactly)
    noisy, plain = noisy_and_plain(0.0, 1.0, step_shift=0.5, step_scale=1.5)
    x = image_input(n=8, h=3, w=3)
    y = plain.train()(x)
    noisy.train()
    draws = [affine_per_sample_and_channel(noisy(x), y) for _ in range(2)]
    for s, m in draws:
        assert (s.std(dim=0) < 1e-5).all() and (m.std(dim=0) < 1e-5).all()  # one per channel
        assert s.min() >= 1 - 1e-4 and s.max() <= 1.5 + 1e-4
        assert m.min() >= -0.5 - 1e-4 and m.max() <= 0.5 + 1e-4
        assert s[0].std() > 0.01 and m[0].std() > 0.01  # and differ between channels
    (s1, m1), (s2, m2) = draws
    assert ((s1[0] - s2[0]).abs() > 1e-3).all() and ((m1[0] - m2[0]).abs() > 1e-3).all()


@pytest.mark.parametrize(("step", "moves"), [({}, True), (FIXED, False)])
def test_noisy_batch_shifts_do_not_average_out_over_the_batch_unless_fixed(step, moves):
    # the batch mean of each channel's shift: near the step's centre, which moves between steps
    # (mean |change| 1/3); with the fixed noise it stays near 0 (64 samples: about 0.04)
    channels = 16
    noisy = make_norm("noisy_batch", channels, max_shift=0.5, max_scale=1.5, **step).train()
    x = image_input(n=64, c=channels, h=2, w=2)
    y = make_norm("batch", channels).train()(x)
    means = [affine_per_sample_and_channel(noisy(x), y)[1].mean(dim=0) for _ in range(3)]
    moved = torch.stack([(a - b).abs() for a, b in zip(means[:-1], means[1:], strict=True)]).mean()
    assert (moved > 0.15) if moves else (moved < 0.1), moved


def test_noisy_batch_dense_stays_within_the_noise_bounds():
    noisy, plain = noisy_and_plain(0.5, 1.5, step_shift=0.25, step_scale=2.0)
    x = dense_input(n=64)
    out = noisy.train()(x).double()
    y = plain.train()(x).double()
    # out = s·y + m with s in [1, 2·1.5], m in [-(0.25 + 0.5), 0.25 + 0.5]
    low = torch.minimum(y, y * 3.0) - 0.75
    high = torch.maximum(y, y * 3.0) + 0.75
    assert (out >= low - 1e-5).all() and (out <= high + 1e-5).all()
    assert (out - y).abs().max() > 0.1  # noise there at all


def test_noisy_batch_draws_new_noise_each_step_and_is_seeded():
    noisy, _ = noisy_and_plain()
    noisy.train()
    x = image_input()
    torch.manual_seed(1)
    first, second = noisy(x), noisy(x)
    assert (first - second).abs().max() > 1e-2
    torch.manual_seed(1)
    torch.testing.assert_close(noisy(x), first, atol=0, rtol=0)


@INPUTS
def test_noisy_batch_without_its_noise_is_plain_batch_norm_in_training(make_x):
    noisy, plain = noisy_and_plain()
    noisy.train(), plain.train()
    x = make_x()
    rng = torch.get_rng_state()
    with training_noise_off(noisy):
        torch.testing.assert_close(noisy(x), plain(x), atol=0, rtol=0)
    assert torch.equal(torch.get_rng_state(), rng)  # no noise drawn
    torch.testing.assert_close(noisy.running_mean, plain.running_mean, atol=0, rtol=0)
    torch.testing.assert_close(noisy.running_var, plain.running_var, atol=0, rtol=0)
    assert (noisy(x) - plain(x)).abs().max() > 1e-2  # back on after the block


def noisy_and_plain_nets() -> tuple[torch.nn.Module, torch.nn.Module]:
    """Two conv nets, equal but for noisy BN vs BN after each conv."""

    def net(norm: str) -> torch.nn.Module:
        torch.manual_seed(0)
        return torch.nn.Sequential(
            torch.nn.Conv2d(3, C, 3), make_norm(norm, C), torch.nn.ReLU(),
            torch.nn.Conv2d(C, C, 3), make_norm(norm, C), torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(C, 3),
        )  # fmt: skip

    return net("noisy_batch").double(), net("batch").double()


def test_precise_bn_and_the_batch_statistics_test_pass_see_no_noise():
    noisy, plain = noisy_and_plain_nets()
    g = torch.Generator().manual_seed(2)
    batches = [torch.randn(8, 3, 6, 6, generator=g, dtype=torch.float64) for _ in range(3)]
    assert recompute_bn_stats(noisy, batches, 3) == recompute_bn_stats(plain, batches, 3) == 3
    for a, b in zip(noisy.buffers(), plain.buffers(), strict=True):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    x, y = torch.cat(batches), torch.arange(24) % 3
    assert evaluate_with_batch_stats(noisy, x, y, 8) == evaluate_with_batch_stats(plain, x, y, 8)
    with torch.no_grad():  # guard: a training step's pass would differ
        assert (noisy.train()(x) - plain.train()(x)).abs().max() > 1e-2


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
