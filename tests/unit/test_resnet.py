"""CIFAR ResNet (normexp/models/resnet.py): every image norm in both positions at smoke and quick
sizes, block order, shortcuts, parameter counts against He et al. 2016, refusals, weight
standardization; and GN's default grouping (normexp/norms/layers.py default_num_groups)."""

import itertools

import hydra
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from normexp.errors import ConfigError
from normexp.models import build_model, check_model
from normexp.models.resnet import BasicBlock, PadShortcut, ResNet
from normexp.norms import make_norm, make_norm_factory
from normexp.norms.layers import resolve_num_groups
from normexp.norms.registry import norms_for
from normexp.norms.weight_side import Standardize
from normexp.validate import resolve_config

IMAGE_NORMS = norms_for("image")
POSITIONS = ("pre", "post")
UNDEFINED = {("instance", "post")}  # IN right before global average pooling
SMOKE = {"name": "resnet", "depth": 8, "width_mult": 1, "shortcut": "A", "activation": "relu"}
QUICK = {**SMOKE, "depth": 20}
CASES = list(itertools.product(IMAGE_NORMS, POSITIONS))
IDS = ["-".join(c) for c in CASES]
pytestmark = pytest.mark.usefixtures("one_torch_thread", "torch_seed")


def norm_cfg(name: str, position: str = "pre", batch_size: int = 2) -> dict:
    cfg = {"name": name, "position": position}
    if name == "ghost_batch":
        cfg["group_size"] = batch_size
    return cfg


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def test_every_image_norm_is_covered():
    assert {"none", "batch", "group", "layer", "instance", "batch_renorm", "ghost_batch"} <= set(
        IMAGE_NORMS
    )
    assert {"noisy_batch", "mean_only_batch", "rms"} <= set(IMAGE_NORMS)


@pytest.mark.parametrize(("name", "position"), CASES, ids=IDS)
@pytest.mark.parametrize("model", [SMOKE, QUICK], ids=["smoke", "quick"])
def test_one_sgd_step_in_every_norm_and_position(model, name, position):
    """Built at smoke (ResNet-8) and quick (ResNet-20) sizes, batch 2: one SGD step leaves finite
    outputs, gradients and parameters, and changes the first conv; undefined cells are refused."""
    norm = norm_cfg(name, position)
    if (name, position) in UNDEFINED:
        with pytest.raises(ConfigError) as info:
            check_model(model, norm, batch_size=2)
        assert info.value.field == "norm.position"
        assert "\n" not in str(info.value)
        return
    check_model(model, norm, batch_size=2)
    net = build_model(model, norm).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    first = net.features[0][0].weight.detach().clone()
    loss = nn.functional.cross_entropy(net(images(2)), torch.tensor([0, 1]))
    assert torch.isfinite(loss)
    loss.backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
    opt.step()
    assert all(torch.isfinite(p).all() for p in net.parameters())
    assert not torch.equal(net.features[0][0].weight, first)
    net.eval()
    assert torch.isfinite(net(images(2, seed=1))).all()


def test_block_order_in_each_position():
    pre = build_model(SMOKE, norm_cfg("batch", "pre")).features[1]
    assert [type(m).__name__ for m in pre.branch] == [
        "Conv2d", "BatchNorm", "ReLU", "Conv2d", "BatchNorm"
    ]  # fmt: skip
    assert [type(m).__name__ for m in pre.after] == ["ReLU"]
    post = build_model(SMOKE, norm_cfg("batch", "post")).features[1]
    assert [type(m).__name__ for m in post.branch] == ["Conv2d", "ReLU", "BatchNorm", "Conv2d"]
    assert [type(m).__name__ for m in post.after] == ["ReLU", "BatchNorm"]
    # post: every norm directly follows an activation, also in the stem
    stem = build_model(SMOKE, norm_cfg("batch", "post")).features[0]
    assert [type(m).__name__ for m in stem] == ["Conv2d", "ReLU", "BatchNorm"]


@pytest.mark.parametrize(
    ("name", "position"), [("batch", "pre"), ("batch", "post"), ("none", "pre")]
)
def test_conv_bias_only_where_no_shift_follows(name, position):
    net = build_model(QUICK, norm_cfg(name, position))
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert all((c.bias is not None) == (position == "post" or name == "none") for c in convs)
    assert net.head[-1].bias is not None


def test_post_block_output_is_normalized():
    # post: the block's last op is the norm, after the add and the activation
    block = BasicBlock(8, 8, 1, make_norm_factory(norm_cfg("batch", "post")), "relu", "A").train()
    out = block(torch.randn(16, 8, 6, 6) * 5 + 3)
    torch.testing.assert_close(out.mean((0, 2, 3)), torch.zeros(8), atol=1e-5, rtol=0)


def test_shortcut_a_pads_zeros_and_b_projects():
    x = torch.randn(2, 4, 8, 8)
    out = PadShortcut(4, 2)(x)
    assert out.shape == (2, 8, 4, 4)
    torch.testing.assert_close(out[:, :4], x[:, :, ::2, ::2])
    assert not out[:, 4:].any()
    a = build_model(QUICK, norm_cfg("batch"))
    b = build_model({**QUICK, "shortcut": "B"}, norm_cfg("batch"))
    assert sum(isinstance(m, PadShortcut) for m in a.modules()) == 2  # stages 2 and 3
    projections = [m for m in b.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1)]
    assert [(p.in_channels, p.out_channels, p.stride) for p in projections] == [
        (16, 32, (2, 2)),
        (32, 64, (2, 2)),
    ]
    # pre: conv-norm like the branch; post: a plain conv, the sum is normalized after the act
    assert len(b.features[4].shortcut) == 2
    b_post = build_model({**QUICK, "shortcut": "B"}, norm_cfg("batch", "post"))
    assert len(b_post.features[4].shortcut) == 1
    assert b(images(2)).shape == b_post(images(2)).shape == (2, 10)


# He et al. 2016, Table 6: parameters of the CIFAR ResNets (option A shortcuts).
PAPER_PARAMS = {20: 0.27e6, 32: 0.46e6, 44: 0.66e6, 56: 0.85e6, 110: 1.7e6}


@pytest.mark.parametrize("depth", sorted(PAPER_PARAMS))
def test_parameter_counts_match_the_paper(depth):
    net = build_model({**QUICK, "depth": depth}, norm_cfg("batch"))
    count = sum(p.numel() for p in net.parameters())
    assert count == pytest.approx(PAPER_PARAMS[depth], rel=0.03)
    blocks = sum(isinstance(m, BasicBlock) for m in net.modules())
    assert blocks == 3 * (depth - 2) // 6


def test_width_mult_scales_the_stages():
    net = build_model({**SMOKE, "width_mult": 2}, norm_cfg("group"))
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert sorted({c.out_channels for c in convs}) == [32, 64, 128]
    assert net.head[-1].in_features == 128
    assert isinstance(net, ResNet)


def test_no_norm_resnet_learns_a_fixed_batch():
    net = build_model(SMOKE, norm_cfg("none")).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.02, momentum=0.9)
    x, y = images(16), torch.arange(16) % 10
    losses = []
    for _ in range(20):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] - 0.1  # slowly: 16 noise images, He init, no norm


def test_weight_standardization_on_every_resnet_conv():
    model = {**QUICK, "shortcut": "B", "weight_side": "weight_std"}
    check_model(model, norm_cfg("group"), batch_size=2)
    net = build_model(model, norm_cfg("group"))
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert all(parametrize.is_parametrized(c, "weight") for c in convs)
    assert all(isinstance(c.parametrizations.weight[0], Standardize) for c in convs)
    assert not parametrize.is_parametrized(net.head[-1], "weight")
    w = convs[5].weight
    torch.testing.assert_close(w.mean((1, 2, 3)), torch.zeros(w.shape[0]), atol=1e-5, rtol=0)
    assert torch.isfinite(net(images(2))).all()
    with pytest.raises(ConfigError) as info:  # still refused where there is no conv
        mlp = {"name": "mlp", "hidden": 8, "depth": 1, "activation": "relu"}
        check_model({**mlp, "weight_side": "weight_std"}, norm_cfg("group"), batch_size=2)
    assert info.value.field == "model.weight_side"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"depth": 21}, "model.depth"),
        ({"depth": 2}, "model.depth"),
        ({"depth": 20.0}, "model.depth"),
        ({"width_mult": 0}, "model.width_mult"),
        ({"width_mult": 1.5}, "model.width_mult"),
        ({"shortcut": "C"}, "model.shortcut"),
        ({"activation": "swish"}, "model.activation"),
    ],
)
def test_bad_resnet_fields_are_named(change, field):
    with pytest.raises(ConfigError) as info:
        check_model({**QUICK, **change}, norm_cfg("batch"), batch_size=8)
    assert info.value.field == field
    assert "\n" not in str(info.value)


def test_per_channel_group_norm_before_pooling_is_refused_in_post():
    one_per_group = {**norm_cfg("group", "post"), "channels_per_group": 1}
    with pytest.raises(ConfigError, match="ignore its input") as info:
        check_model(QUICK, one_per_group, batch_size=8)
    assert info.value.field == "norm.position"
    check_model(QUICK, {**one_per_group, "position": "pre"}, batch_size=8)
    check_model(QUICK, norm_cfg("group", "post"), batch_size=8)  # default groups: allowed


def test_batch_statistics_count_the_last_stage_map():
    # 8x8 maps in stage 3: batch 1 still pools 64 values per channel
    check_model(QUICK, norm_cfg("batch"), batch_size=1)
    with pytest.raises(ConfigError) as info:
        check_model(QUICK, norm_cfg("ghost_batch", batch_size=8), batch_size=4)
    assert info.value.field == "norm.group_size"


# --- composed configs ------------------------------------------------------------------


@pytest.mark.usefixtures("results_in_tmp")
@pytest.mark.parametrize(
    ("profile", "depth", "width_mult"), [("smoke", 8, 1), ("quick", 20, 1), ("paper", 20, 4)]
)
def test_resnet_config_per_profile(hydra_ctx, profile, depth, width_mult):
    config = resolve_config(
        hydra.compose("config", overrides=["model=resnet", "norm=group", f"profile={profile}"])
    )
    model = config["model"]
    assert (model["depth"], model["width_mult"], model["shortcut"]) == (depth, width_mult, "A")
    assert config["norm"]["num_groups"] is None  # the GN paper's default grouping


# --- GN's default grouping -------------------------------------------------------------

# width -> groups: 32 groups where that leaves >= 2 channels each, else the group width nearest 16
DEFAULT_GROUPS = {
    **{4: 2, 6: 2, 8: 2, 12: 2, 16: 2, 24: 2, 32: 2, 48: 3, 40: 2, 80: 5, 289: 17},
    **{64: 32, 96: 32, 128: 32, 256: 32, 1024: 32},
}


@pytest.mark.parametrize(("width", "groups"), sorted(DEFAULT_GROUPS.items()))
def test_default_grouping_per_width(width, groups):
    assert resolve_num_groups(width) == groups
    layer = make_norm("group", width)
    assert isinstance(layer, nn.GroupNorm) and layer.num_groups == groups


def test_default_grouping_is_never_instance_or_layer_norm():
    for width in range(4, 1025):
        try:
            groups = resolve_num_groups(width)
        except ConfigError:
            # only widths with no divisor in [2, width / 2]: 2, 3 and the primes
            assert all(width % d for d in range(2, width // 2 + 1)), width
            continue
        assert groups >= 2 and width // groups >= 2 and width % groups == 0, width
        if width % 32 == 0 and width >= 64:
            assert groups == 32, width


@pytest.mark.parametrize("width", [2, 3, 5, 7])
def test_widths_without_a_default_grouping_are_refused(width):
    with pytest.raises(ConfigError) as info:
        resolve_num_groups(width)
    assert info.value.field == "norm.num_groups"
    assert "norm.channels_per_group" in str(info.value)


def test_explicit_grouping_overrides_the_default():
    assert resolve_num_groups(64, num_groups=4) == 4
    assert resolve_num_groups(64, channels_per_group=16) == 4
    assert resolve_num_groups(8, channels_per_group=1) == 8  # IN, when asked for by name
    with pytest.raises(ConfigError):
        resolve_num_groups(64, num_groups=3)


@pytest.mark.parametrize("hidden", [32, 256, 1024])
def test_every_profile_width_has_a_default_grouping(hidden):
    # CNN widths of every profile, the MLP's hidden sizes and the ResNet's stages
    mlp = {"name": "mlp", "hidden": hidden, "depth": 2, "activation": "relu"}
    check_model(mlp, {"name": "group", "position": "pre", "num_groups": None}, batch_size=2)
    for widths in ([4, 8, 8], [16, 32, 64], [64, 128, 256]):
        cnn = {"name": "cnn", "widths": widths, "convs_per_stage": 2, "activation": "relu"}
        check_model(cnn, {"name": "group", "position": "pre"}, batch_size=2)
    check_model({**QUICK, "width_mult": 4}, norm_cfg("group"), batch_size=2)
