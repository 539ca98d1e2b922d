"""Validity rules of the norm library, and every registered norm building and training."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from normexp.errors import ConfigError
from normexp.models import build_model, check_model
from normexp.norms.registry import NORMS, make_norm, norm_spec, norms_for
from normexp.norms.validity import check_norm
from tests.norm_reference import (
    CNN,
    MLP,
    MODELS,
    model_input,
    norm_cfg,
)

IMAGE_NORMS = norms_for("image")  # every norm with a layer for images (not the LSTM cells' own)


pytestmark = pytest.mark.usefixtures("one_torch_thread", "torch_seed")


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
    one_by_one = CNN | {"head": "gap"}
    with pytest.raises(ConfigError) as info:
        check_model(one_by_one, norm_cfg("ghost_batch") | {"group_size": 1}, 8, image_size=2)
    assert info.value.field == "train.batch_size"
    check_model(one_by_one, norm_cfg("ghost_batch") | {"group_size": 1}, 8, image_size=8)


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


def test_instance_norm_layer_refuses_a_dense_input_as_the_config_check_does():
    """make_norm("instance", C) on an (N, C) input would output β whatever the input: the layer
    refuses it with the config check's own sentence; (N, C, L) and images are its domain."""
    layer = make_norm("instance", 8)
    assert layer(torch.randn(4, 8, 5)).shape == (4, 8, 5)
    with pytest.raises(ConfigError) as by_layer:
        layer(torch.randn(4, 8))
    with pytest.raises(ConfigError) as by_config:
        check_norm("instance", "dense", [8], values_per_channel_in_training=4)
    assert str(by_layer.value) == str(by_config.value)
    assert "single neuron" in str(by_layer.value)
