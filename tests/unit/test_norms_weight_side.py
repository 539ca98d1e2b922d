"""Weight-side normalization (weight norm, weight standardization) and the L1 penalty."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from normexp.errors import ConfigError
from normexp.models import build_model, check_model
from normexp.norms.weight_side import (
    WEIGHT_NORM_GAIN,
    apply_weight_side,
    l1_penalty,
)
from normexp.train.optim import parameter_groups
from tests.norm_reference import (
    CNN,
    MLP,
    MODELS,
    model_input,
    norm_cfg,
    weighted_layers,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread", "torch_seed")


# --- 5. weight side --------------------------------------------------------------------------


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
