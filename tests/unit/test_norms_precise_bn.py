"""Precise BN: running statistics recomputed as the average of batch statistics."""


import pytest
import torch
from torch import nn

from normexp.norms.precise_bn import recompute_bn_stats
from normexp.norms.registry import make_norm
from tests.norm_reference import (
    batch_stats,
    bn_reference,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread", "torch_seed")


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
