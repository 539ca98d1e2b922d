"""gradcheck of the norm library's layers (BN variants, RMSNorm, weight standardization)."""


import pytest
import torch
import torch.nn.functional as F
from torch import nn

from normexp.norms.batch_variants import (
    BatchRenorm,
    GhostBatchNorm,
    MeanOnlyBatchNorm,
    NoisyBatchNorm,
)
from normexp.norms.layers import RMSNorm
from normexp.norms.weight_side import (
    Standardize,
)
from tests.norm_reference import (
    batch_stats,
    dense_input,
    image_input,
    renorm_r_d,
    set_affine,
    set_running,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread", "torch_seed")


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
