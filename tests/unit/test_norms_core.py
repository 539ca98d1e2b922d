"""Norm registry, activation-side norm layers and the validity rules of normexp.norms.

Every layer is compared with a float64 reference written here with explicit reductions, so a
layer that pools over the wrong set S (the point of claim C1) fails.
"""

from dataclasses import replace

import pytest
import torch
from torch import nn

from normexp.errors import ConfigError
from normexp.norms.layers import resolve_num_groups
from normexp.norms.registry import (
    NORMS,
    CellNorm,
    make_norm,
    norm_parameters,
    norm_spec,
    norms_for,
    register_cell,
    register_norm,
)
from normexp.norms.validity import check_norm, check_position

EPS = 1e-5
BASE_NORMS = {"none", "batch", "layer", "instance", "group"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def image_input(n: int = 4, c: int = 6, h: int = 3, w: int = 5, seed: int = 0) -> torch.Tensor:
    """Values whose mean and scale differ per sample and per channel, so wrong axes show."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, h, w, generator=g)
    scale = torch.linspace(0.5, 3.0, c).view(1, c, 1, 1)
    shift = torch.randn(n, c, 1, 1, generator=g) * 2 + torch.arange(n).view(n, 1, 1, 1)
    return x * scale + shift


def dense_input(n: int = 5, c: int = 6, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, c, generator=g)
    return x * torch.linspace(0.5, 3.0, c) + torch.randn(n, 1, generator=g) * 2 + torch.arange(c)


def set_affine(layer: nn.Module, c: int) -> tuple[torch.Tensor, torch.Tensor]:
    weight = torch.linspace(0.5, 2.0, c)
    bias = torch.linspace(-1.0, 1.5, c)
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return weight.double(), bias.double()


def standardize(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    mean = x.mean(dim=dims, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=dims, keepdim=True)  # biased, as normalization uses
    return (x - mean) / torch.sqrt(var + EPS)


def reference(name: str, x: torch.Tensor, groups: int | None = None) -> torch.Tensor:
    """float64 γ·(x−μ)/σ without the affine, μ and σ pooled over the norm's set S."""
    x = x.double()
    n, c = x.shape[:2]
    spatial = tuple(range(2, x.dim()))
    if name == "batch":
        return standardize(x, (0, *spatial))
    if name == "layer":
        return standardize(x, (1, *spatial))
    if name == "instance":
        return standardize(x, spatial)
    if name == "group":
        grouped = x.reshape(n, groups, c // groups, *x.shape[2:])
        return standardize(grouped, tuple(range(2, grouped.dim()))).reshape(x.shape)
    raise AssertionError(name)


def apply_affine(y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    shape = (1, -1) + (1,) * (y.dim() - 2)
    return y * weight.view(shape) + bias.view(shape)


CASES = [
    ("batch", {}, None),
    ("layer", {}, None),
    ("instance", {}, None),
    ("group", {"num_groups": 3}, 3),
    ("group", {"num_groups": 2}, 2),
]


@pytest.mark.parametrize(("name", "kwargs", "groups"), CASES)
def test_image_norm_matches_float64_reference_in_training(name, kwargs, groups):
    x = image_input()
    layer = make_norm(name, 6, **kwargs).train()
    weight, bias = set_affine(layer, 6)
    out = layer(x)
    expected = apply_affine(reference(name, x, groups), weight, bias)
    torch.testing.assert_close(out.double(), expected, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize(("name", "kwargs", "groups"), [c for c in CASES if c[0] != "instance"])
def test_dense_norm_matches_float64_reference_in_training(name, kwargs, groups):
    x = dense_input()
    layer = make_norm(name, 6, **kwargs).train()
    weight, bias = set_affine(layer, 6)
    out = layer(x)
    expected = apply_affine(reference(name, x, groups), weight, bias)
    torch.testing.assert_close(out.double(), expected, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["batch", "layer", "instance", "group"])
def test_norms_differ_from_each_other(name):
    """The references themselves are not interchangeable on this input (guards the fixtures)."""
    x = image_input()
    for other in ("batch", "layer", "instance"):
        if other != name:
            diff = (reference(name, x, 3) - reference(other, x, 3)).abs().max()
            assert diff > 0.1


def test_none_is_identity():
    x = image_input()
    layer = make_norm("none", 6)
    assert list(layer.parameters()) == []
    torch.testing.assert_close(layer(x), x)


def test_batchnorm_running_stats_use_unbiased_variance_and_momentum():
    momentum = 0.3
    layer = make_norm("batch", 6, momentum=momentum).train()
    x1, x2 = image_input(seed=1), image_input(seed=2) * 0.5 - 1
    mean = torch.zeros(6, dtype=torch.float64)
    var = torch.ones(6, dtype=torch.float64)
    for x in (x1, x2):
        layer(x)
        xd = x.double()
        mean = (1 - momentum) * mean + momentum * xd.mean(dim=(0, 2, 3))
        var = (1 - momentum) * var + momentum * xd.var(dim=(0, 2, 3), unbiased=True)
    torch.testing.assert_close(layer.running_mean.double(), mean, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer.running_var.double(), var, atol=1e-5, rtol=1e-5)
    assert int(layer.num_batches_tracked) == 2


def test_batchnorm_dense_running_stats():
    layer = make_norm("batch", 6).train()
    x = dense_input()
    layer(x)
    xd = x.double()
    torch.testing.assert_close(layer.running_mean.double(), 0.1 * xd.mean(0), atol=1e-5, rtol=0)
    torch.testing.assert_close(
        layer.running_var.double(), 0.9 + 0.1 * xd.var(0, unbiased=True), atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("make_x", [image_input, dense_input])
def test_batchnorm_eval_uses_running_stats_and_does_not_update_them(make_x):
    layer = make_norm("batch", 6).train()
    layer(make_x(seed=3) * 2 + 1)  # move the running stats away from (0, 1)
    weight, bias = set_affine(layer, 6)
    layer.eval()
    mean, var = layer.running_mean.clone(), layer.running_var.clone()
    tracked = int(layer.num_batches_tracked)
    x = make_x(seed=4)
    out = layer(x)
    shape = (1, -1) + (1,) * (x.dim() - 2)
    y = (x.double() - mean.double().view(shape)) / torch.sqrt(var.double().view(shape) + EPS)
    torch.testing.assert_close(out.double(), apply_affine(y, weight, bias), atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(layer.running_mean, mean, atol=0, rtol=0)
    torch.testing.assert_close(layer.running_var, var, atol=0, rtol=0)
    assert int(layer.num_batches_tracked) == tracked
    # and batch statistics are not what eval used
    assert (out.double() - apply_affine(reference("batch", x), weight, bias)).abs().max() > 1e-2


@pytest.mark.parametrize("make_x", [image_input, dense_input])
def test_group_norm_with_one_group_is_layer_norm(make_x):
    x = make_x()
    gn, ln = make_norm("group", 6, num_groups=1), make_norm("layer", 6)
    set_affine(gn, 6)
    set_affine(ln, 6)
    torch.testing.assert_close(gn(x), ln(x))


def test_group_norm_with_c_groups_is_instance_norm():
    x = image_input()
    gn, inorm = make_norm("group", 6, num_groups=6), make_norm("instance", 6)
    set_affine(gn, 6)
    set_affine(inorm, 6)
    torch.testing.assert_close(gn(x), inorm(x))
    torch.testing.assert_close(
        gn(x).double(),
        apply_affine(
            reference("instance", x), *[t.double() for t in (gn.weight.data, gn.bias.data)]
        ),
        atol=2e-5,
        rtol=1e-5,
    )


def test_norms_are_statistics_free_in_eval_except_batch():
    """Per-sample norms give the same output in train and eval mode; batch norm does not."""
    x = image_input()
    for name, kwargs in [("layer", {}), ("instance", {}), ("group", {"num_groups": 2})]:
        layer = make_norm(name, 6, **kwargs)
        torch.testing.assert_close(layer.train()(x), layer.eval()(x))
    bn = make_norm("batch", 6)
    assert (bn.train()(x) - bn.eval()(x)).abs().max() > 1e-2


# --- registry --------------------------------------------------------------------------


def test_registry_holds_the_base_norms_with_their_properties():
    assert set(NORMS) >= BASE_NORMS
    assert norm_spec("batch").uses_batch_stats
    assert not any(norm_spec(n).uses_batch_stats for n in ("none", "layer", "instance", "group"))
    assert not norm_spec("none").has_shift
    assert all(norm_spec(n).has_shift for n in ("batch", "layer", "instance", "group"))
    assert norm_spec("instance").input_kinds == {"image"}
    assert {"dense", "image"} <= norm_spec("layer").input_kinds
    assert norm_parameters("batch") == ["eps", "momentum"]
    assert set(norm_parameters("group")) == {"grouping", "num_groups", "channels_per_group", "eps"}


def test_unknown_norm_name_lists_the_allowed_ones():
    with pytest.raises(ConfigError) as info:
        make_norm("batchnorm", 4)
    assert info.value.field == "norm.name"
    msg = str(info.value)
    assert msg.startswith("norm.name:")
    assert "batchnorm" in msg
    allowed = msg.split("allowed:")[1]
    for name in BASE_NORMS:
        assert name in allowed


def test_make_norm_is_importable_from_the_package():
    from normexp import norms

    assert norms.make_norm is make_norm
    assert isinstance(norms.make_norm("layer", 4), nn.GroupNorm)


def test_lstm_cell_norms_are_registered_with_their_parameters():
    assert norms_for("recurrent") == ["none", "layer", "batch_per_step", "batch_shared", "rms"]
    for name in ("batch_per_step", "batch_shared"):
        spec = norm_spec(name)
        assert spec.input_kinds == {"recurrent"} and spec.uses_batch_stats and spec.build is None
        assert spec.cell.site == "batch" and spec.cell.per_step == (name == "batch_per_step")
        assert dict(spec.cell.defaults) == {"eps": 1e-5, "momentum": 0.1, "gamma_init": 0.1}
        with pytest.raises(ConfigError) as info:  # no layer for images
            make_norm(name, 4)
        assert info.value.field == "norm.name"
    for name in ("none", "layer", "rms"):  # the same norms as for images, used inside a cell
        assert {"dense", "image", "recurrent"} <= norm_spec(name).input_kinds
    assert norm_parameters("rms", "recurrent") == ["eps"]
    assert norm_parameters("none", "recurrent") == []
    assert not any(n in norms_for("image") for n in ("batch_per_step", "batch_shared"))


def test_recurrent_use_is_declared_with_the_cell():
    with pytest.raises(ValueError, match="register_cell"):
        register_norm("x_test", input_kinds=("dense", "recurrent"))(lambda num_features: None)
    with pytest.raises(ValueError, match="twice"):
        register_cell("layer", CellNorm("layer"))
    assert "x_test" not in NORMS


def test_a_norms_own_check_runs_with_the_model_context(monkeypatch):
    seen = []
    spec = norm_spec("layer")
    monkeypatch.setitem(NORMS, "layer", replace(spec, check=seen.append))
    check_norm("layer", "image", [8, 16], 64, {"eps": 1e-3}, 4)
    (ctx,) = seen
    assert (ctx.input_kind, list(ctx.channels), ctx.values_per_statistic) == ("image", [8, 16], 64)
    assert (ctx.batch_size, dict(ctx.kwargs)) == (4, {"eps": 1e-3})


@pytest.mark.parametrize(
    ("kwargs", "field"), [({"eps": 0}, "norm.eps"), ({"momentum": 1.5}, "norm.momentum")]
)
def test_shared_parameter_values_are_checked(kwargs, field):
    with pytest.raises(ConfigError) as info:
        check_norm("batch", "image", [8], 64, kwargs, 4)
    assert info.value.field == field


def test_norm_spec_reports_the_given_field():
    with pytest.raises(ConfigError) as info:
        norm_spec("nope", field="norm.other")
    assert info.value.field == "norm.other"


def test_unknown_norm_kwarg_is_named():
    with pytest.raises(ConfigError) as info:
        make_norm("batch", 4, num_groups=2)
    assert info.value.field == "norm.num_groups"
    assert str(info.value).startswith("norm.num_groups:")
    assert "eps" in str(info.value) and "momentum" in str(info.value)


def test_known_kwargs_reach_the_layer():
    assert make_norm("batch", 4, momentum=0.25, eps=1e-3).momentum == 0.25
    assert make_norm("layer", 4, eps=0.5).eps == 0.5


@pytest.mark.parametrize("num_groups", [4, 0, -2, 7])
def test_group_count_must_divide_channels(num_groups):
    with pytest.raises(ConfigError) as info:
        make_norm("group", 6, num_groups=num_groups)
    assert info.value.field == "norm.num_groups"
    assert "6" in str(info.value)


def test_channels_per_group_sets_the_number_of_groups():
    layer = make_norm("group", 8, channels_per_group=2)
    assert isinstance(layer, nn.GroupNorm) and layer.num_groups == 4
    x = image_input(c=8)
    weight, bias = set_affine(layer, 8)
    expected = apply_affine(reference("group", x, 4), weight, bias)
    torch.testing.assert_close(layer(x).double(), expected, atol=2e-5, rtol=1e-5)


def test_channels_per_group_must_divide_channels():
    with pytest.raises(ConfigError) as info:
        make_norm("group", 8, channels_per_group=3)
    assert info.value.field == "norm.channels_per_group"


def test_group_takes_at_most_one_of_count_and_width():
    # Neither: the GN paper's default grouping (tests/test_resnet.py checks the rule).
    with pytest.raises(ConfigError) as info:
        make_norm("group", 8, num_groups=2, channels_per_group=4)
    assert info.value.field == "norm.num_groups"
    assert resolve_num_groups(8, num_groups=2) == 2


# --- validity --------------------------------------------------------------------------


def test_instance_refused_for_dense_input():
    with pytest.raises(ConfigError) as info:
        check_norm("instance", "dense", [8], 64)
    assert info.value.field == "norm.name"
    msg = str(info.value)
    assert msg.startswith("norm.name:") and "'instance'" in msg and "dense" in msg
    allowed = {a.strip() for a in msg.split("allowed:")[1].split(",")}
    assert {"none", "batch", "layer", "group"} <= allowed
    assert "instance" not in allowed


def test_instance_allowed_for_images():
    check_norm("instance", "image", [8, 16], 64)


def test_batch_with_one_value_per_statistic_is_refused():
    with pytest.raises(ConfigError) as info:
        check_norm("batch", "dense", [8], 1)
    assert info.value.field == "train.batch_size"
    assert str(info.value).startswith("train.batch_size:")


def test_batch_with_two_values_per_statistic_is_accepted():
    check_norm("batch", "dense", [8], 2)
    check_norm("batch", "image", [8], 2)


@pytest.mark.parametrize("name", ["none", "layer", "group"])
def test_per_sample_norms_accept_batch_of_one(name):
    kwargs = {"num_groups": 2} if name == "group" else {}
    check_norm(name, "dense", [8], 1, kwargs)


def test_check_norm_checks_groups_against_every_width():
    check_norm("group", "image", [8, 16], 64, {"num_groups": 4})
    with pytest.raises(ConfigError) as info:
        check_norm("group", "image", [8, 6], 64, {"num_groups": 4})
    assert info.value.field == "norm.num_groups"


def test_check_norm_refuses_unknown_kwargs_and_names():
    with pytest.raises(ConfigError) as info:
        check_norm("layer", "image", [8], 64, {"momentum": 0.1})
    assert info.value.field == "norm.momentum"
    with pytest.raises(ConfigError) as info:
        check_norm("bogus", "image", [8], 64)
    assert info.value.field == "norm.name"


def test_check_position():
    check_position("pre")
    check_position("post")
    with pytest.raises(ConfigError) as info:
        check_position("middle")
    assert info.value.field == "norm.position"
    assert "pre" in str(info.value) and "post" in str(info.value)


def test_figures_take_each_norms_colour_and_label_from_its_registry_entry():
    from normexp.analysis.style import norm_color, norm_label
    from normexp.norms.registry import NORMS, norm_spec

    compared = ["none", "batch", "group", "layer", "instance", "rms"]
    colours = [norm_color(n) for n in compared]
    assert colours == [norm_spec(n).color for n in compared]
    assert len(set(colours)) == len(compared)  # the norms a figure compares never share one
    assert [norm_label(n) for n in compared] == ["no norm", "BN", "GN", "LN", "IN", "rms"]
    assert set(NORMS) >= set(compared)
    assert norm_color("not_a_norm") == "#333333" and norm_label("not_a_norm") == "not_a_norm"


def test_c1_reads_what_each_norm_pools_over_from_its_registry_entry():
    from normexp.analysis.claims.norm_sets import CHECKED
    from normexp.norms.registry import NORMS, pooled_sets

    assert set(pooled_sets()) == set(CHECKED)  # every norm C1 checks states its set
    assert pooled_sets()["group"] == NORMS["group"].pooled_over
    assert "all channels" in pooled_sets()["layer"] and "all samples" in pooled_sets()["batch"]


def test_every_norm_parameter_has_its_rule_in_the_registry_and_the_schema_reads_them():
    from normexp import schema
    from normexp.norms.registry import NORMS, norm_parameters, param_rules

    for name, spec in NORMS.items():
        taken = {p for kind in spec.input_kinds for p in norm_parameters(name, kind)}
        assert taken <= set(spec.params), (name, taken - set(spec.params))
    rows = {f.path: f.rule for f in schema.fields() if f.path.startswith("norm.")}
    assert {k: v for k, v in rows.items() if k not in ("norm.name", "norm.position")} == {
        f"norm.{p}": rule for p, rule in param_rules().items()
    }
