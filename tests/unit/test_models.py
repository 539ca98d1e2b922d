"""CNN/MLP construction: shapes, block order per norm position, biases, and config refusals."""

import itertools

import pytest
import torch
from torch import nn

from normexp.errors import ConfigError
from normexp.models import build_model, check_model
from normexp.models.blocks import ORDERS, make_activation, norm_block
from normexp.models.probe import norm_sites
from normexp.norms import NormFactory, make_norm_factory
from normexp.norms.layers import BatchNorm, InstanceNorm

NORMS = ("none", "batch", "layer", "instance", "group")
POSITIONS = ("pre", "post")
CNN = {"name": "cnn", "widths": [4, 8, 8], "convs_per_stage": 1, "activation": "relu"}
MLP = {"name": "mlp", "hidden": 8, "depth": 2, "activation": "relu"}


pytestmark = pytest.mark.usefixtures("one_torch_thread", "torch_seed")


def norm_cfg(name: str, position: str = "pre") -> dict:
    cfg = {"name": name, "position": position}
    if name == "group":
        cfg["num_groups"] = 2
    return cfg


def model_cases():
    for model, name, position in itertools.product(("cnn", "mlp"), NORMS, POSITIONS):
        if model == "mlp" and name == "instance":
            continue  # undefined: one neuron per set S
        yield model, name, position


CASES = list(model_cases())
IDS = ["-".join(c) for c in CASES]


def images(n: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def blocks(model: nn.Module) -> list[nn.Sequential]:
    """The layer/norm/act blocks, in order: the Sequentials whose first child is conv/linear."""
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.Sequential) and len(m) == 3 and isinstance(m[0], nn.Conv2d | nn.Linear)
    ]


def expected_norm_type(name: str, width: int) -> tuple[type, int | None]:
    groups = {"layer": 1, "instance": width, "group": 2}.get(name)
    types = {"none": nn.Identity, "batch": BatchNorm, "instance": InstanceNorm}
    return types.get(name, nn.GroupNorm), groups


@pytest.mark.parametrize(("model", "name", "position"), CASES, ids=IDS)
def test_forward_shape_and_finite_gradients(model, name, position):
    cfg = CNN if model == "cnn" else MLP
    check_model(cfg, norm_cfg(name, position), batch_size=4)
    net = build_model(cfg, norm_cfg(name, position)).train()
    out = net(images())
    assert out.shape == (4, 10)
    assert torch.isfinite(out).all()
    loss = nn.functional.cross_entropy(out, torch.tensor([0, 1, 2, 3]))
    loss.backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    first = next(p for n, p in net.named_parameters() if n.endswith("weight") and p.ndim > 1)
    assert first.grad.abs().sum() > 0  # gradient reaches the first layer


@pytest.mark.parametrize(("model", "name", "position"), CASES, ids=IDS)
def test_block_order_norm_type_and_bias(model, name, position):
    cfg = CNN if model == "cnn" else MLP
    net = build_model(cfg, norm_cfg(name, position))
    found = blocks(net)
    widths = CNN["widths"] if model == "cnn" else [MLP["hidden"]] * MLP["depth"]
    assert len(found) == len(widths)
    layer_type = nn.Conv2d if model == "cnn" else nn.Linear
    for block, width in zip(found, widths, strict=True):
        norm_type, groups = expected_norm_type(name, width)
        layer, second, third = block
        norm, act = (second, third) if position == "pre" else (third, second)
        assert isinstance(layer, layer_type)
        assert type(norm) is norm_type, (position, [type(m).__name__ for m in block])
        assert isinstance(act, nn.ReLU)
        if groups is not None:
            assert norm.num_groups == groups and norm.num_channels == width
        if name == "batch":
            assert norm.num_features == width
        has_bias = layer.bias is not None
        assert has_bias == (position == "post" or name == "none"), (name, position)


def test_orders_are_the_documented_ones():
    assert ORDERS == {"pre": ("layer", "norm", "act"), "post": ("layer", "act", "norm")}


def test_norm_block_order_pre_and_post():
    lin = nn.Linear(3, 4)
    pre = norm_block(lin, NormFactory("batch", "pre", {}), "tanh", 4)
    assert [type(m) for m in pre] == [nn.Linear, BatchNorm, nn.Tanh]
    post = norm_block(nn.Linear(3, 4), NormFactory("batch", "post", {}), "tanh", 4)
    assert [type(m) for m in post] == [nn.Linear, nn.Tanh, BatchNorm]
    # and the computation follows that order: post normalizes after tanh
    x = torch.randn(6, 3)
    post.train()
    y = post(x)
    torch.testing.assert_close(y.mean(0), torch.zeros(4), atol=1e-5, rtol=0)


def test_layer_bias():
    assert not NormFactory("batch", "pre", {}).layer_bias
    assert not NormFactory("group", "pre", {"num_groups": 2}).layer_bias
    assert NormFactory("batch", "post", {}).layer_bias
    assert NormFactory("none", "pre", {}).layer_bias
    assert NormFactory("none", "post", {}).layer_bias
    assert NormFactory("rms", "pre", {}).layer_bias  # no shift: the layer keeps its bias


def test_norm_factory_from_config():
    factory = make_norm_factory({"name": "group", "position": "post", "num_groups": 2})
    assert (factory.name, factory.position) == ("group", "post")
    assert dict(factory.kwargs) == {"num_groups": 2}
    layer = factory(6)
    assert isinstance(layer, nn.GroupNorm) and layer.num_groups == 2 and layer.num_channels == 6
    assert factory.per_channel(2) and not factory.per_channel(6)
    with pytest.raises(ConfigError) as info:
        make_norm_factory({"name": "batch", "position": "middle"})
    assert info.value.field == "norm.position"


def test_recurrent_only_norms_are_refused_for_cnn_and_mlp():
    for model in (CNN, MLP):
        with pytest.raises(ConfigError) as info:
            check_model(model, norm_cfg("batch_per_step"), 8)
        assert info.value.field == "norm.name"
        assert "batch_per_step" not in str(info.value).split("allowed:")[1]


def test_head_keeps_its_bias_and_mlp_input_is_flattened_cifar():
    net = build_model(MLP, norm_cfg("batch"))
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert linears[0].in_features == 3 * 32 * 32
    assert linears[-1].bias is not None and linears[-1].out_features == 10


def test_num_classes():
    net = build_model(CNN, norm_cfg("layer"), num_classes=7)
    assert net(images(2)).shape == (2, 7)


def test_activation_choice_is_used():
    net = build_model({**MLP, "activation": "gelu"}, norm_cfg("layer", "post"))
    assert sum(isinstance(m, nn.GELU) for m in net.modules()) == MLP["depth"]
    assert not any(isinstance(m, nn.ReLU) for m in net.modules())


# --- refusals --------------------------------------------------------------------------


def test_unknown_activation_is_named():
    with pytest.raises(ConfigError) as info:
        make_activation("swish")
    assert info.value.field == "model.activation"
    assert "relu" in str(info.value)
    with pytest.raises(ConfigError) as info:
        build_model({**CNN, "activation": "swish"}, norm_cfg("batch"))
    assert info.value.field == "model.activation"


@pytest.mark.parametrize("fn", [check_model, build_model])
def test_unknown_model_name_is_named(fn):
    args = (4,) if fn is check_model else ()
    with pytest.raises(ConfigError) as info:
        fn({**CNN, "name": "densenet"}, norm_cfg("batch"), *args)
    assert info.value.field == "model.name"
    assert all(m in str(info.value) for m in ("cnn", "mlp", "resnet"))


@pytest.mark.parametrize("model", [CNN, MLP])
def test_bad_position_is_named(model):
    with pytest.raises(ConfigError) as info:
        check_model(model, norm_cfg("batch", "middle"), 8)
    assert info.value.field == "norm.position"
    with pytest.raises(ConfigError) as info:
        build_model(model, norm_cfg("batch", "middle"))
    assert info.value.field == "norm.position"


def test_mlp_with_batch_norm_at_batch_size_one_is_refused():
    with pytest.raises(ConfigError) as info:
        check_model(MLP, norm_cfg("batch"), batch_size=1)
    assert info.value.field == "train.batch_size"
    check_model(MLP, norm_cfg("batch"), batch_size=2)
    check_model(MLP, norm_cfg("layer"), batch_size=1)


def test_cnn_batch_norm_counts_spatial_values():
    # widths [4, 8, 8] on 32x32: last stage is 8x8, so batch 1 still pools 64 values
    check_model(CNN, norm_cfg("batch"), batch_size=1)
    six_stages = {**CNN, "widths": [4] * 6, "head": "gap"}  # last stage 1x1: one value
    with pytest.raises(ConfigError) as info:
        check_model(six_stages, norm_cfg("batch"), batch_size=1)
    assert info.value.field == "train.batch_size"
    check_model(six_stages, norm_cfg("batch"), batch_size=2)


def test_a_cnn_that_cannot_run_on_its_images_is_refused_by_building_it():
    # The quadrant head needs a map of at least 2x2: six stages leave 1x1 (found by running a
    # batch through the network on the meta device, not by a copy of its shape arithmetic).
    with pytest.raises(ConfigError, match="cannot run on 32x32 images") as info:
        check_model({**CNN, "widths": [4] * 6}, norm_cfg("none"), batch_size=2)
    assert info.value.field == "model.widths"


def test_instance_norm_refused_in_mlp():
    with pytest.raises(ConfigError) as info:
        check_model(MLP, norm_cfg("instance"), batch_size=8)
    assert info.value.field == "norm.name"


def test_group_must_divide_every_width():
    with pytest.raises(ConfigError) as info:
        check_model({**CNN, "widths": [4, 6]}, {**norm_cfg("group"), "num_groups": 4}, 8)
    assert info.value.field == "norm.num_groups"
    with pytest.raises(ConfigError) as info:
        check_model({**MLP, "hidden": 6}, {**norm_cfg("group"), "num_groups": 4}, 8)
    assert info.value.field == "norm.num_groups"


@pytest.mark.parametrize(
    ("model", "field"),
    [
        ({**CNN, "widths": []}, "model.widths"),
        ({**CNN, "widths": [4, 0]}, "model.widths"),
        ({**CNN, "convs_per_stage": 0}, "model.convs_per_stage"),
        ({**MLP, "hidden": 0}, "model.hidden"),
        ({**MLP, "depth": 0}, "model.depth"),
    ],
)
def test_bad_model_sizes_are_named(model, field):
    with pytest.raises(ConfigError) as info:
        check_model(model, norm_cfg("layer"), 8)
    assert info.value.field == field


def test_global_pooling_head_refuses_post_instance_norm():
    # IN standardizes each channel: right before global average pooling every pooled feature
    # would equal its beta, and the logits would not depend on the input.
    gap = {**CNN, "head": "gap"}
    with pytest.raises(ConfigError, match="ignore its input") as info:
        check_model(gap, norm_cfg("instance", "post"), batch_size=4)
    assert info.value.field == "norm.position"
    check_model(gap, norm_cfg("instance", "pre"), batch_size=4)
    check_model(CNN, norm_cfg("instance", "post"), batch_size=4)  # grid head: allowed
    net = build_model(gap, norm_cfg("batch", "pre"))
    assert net(images()).shape == (4, 10)


@pytest.mark.parametrize("channels_last", [True, False])
def test_place_model_puts_conv_weights_channels_last_only_when_asked(channels_last):
    from normexp.train.device import place_model

    model = build_model(
        {
            "name": "cnn",
            "widths": [4, 8, 8],
            "convs_per_stage": 1,
            "activation": "relu",
            "weight_side": "none",
        },
        {"name": "batch", "position": "pre"},
    )
    placed = place_model(model, torch.device("cpu"), {"channels_last": channels_last})
    conv = next(m for m in placed.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) == channels_last
    out = placed(torch.randn(2, 3, 32, 32))  # an ordinary NCHW input still works
    assert out.shape == (2, 10)


def test_the_build_check_refuses_a_norm_built_for_another_width():
    def build(model, factory):  # a model bug: the norm is built one channel too wide
        return nn.Sequential(nn.Conv2d(3, 4, 3), factory(5))

    with pytest.raises(ValueError, match="built for 5 channels got 4"):
        norm_sites(build, {}, make_norm_factory(norm_cfg("batch")), (2, 3, 8, 8), "model.x")
