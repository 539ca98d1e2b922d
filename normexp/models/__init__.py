"""Model construction from config, with the norm validity rules applied first."""

from collections.abc import Mapping

from torch import nn

from normexp.errors import ConfigError
from normexp.models.blocks import ACTIVATIONS
from normexp.models.cnn import HEADS, VGGNet, normalized_channels, smallest_feature_map
from normexp.models.mlp import MLP
from normexp.norms.validity import check_norm, check_position
from normexp.norms.weight_side import WEIGHT_SIDE, apply_weight_side

MODELS = ("cnn", "mlp")


def split_norm_config(norm: Mapping) -> tuple[str, str, dict]:
    """(name, position, constructor kwargs) from a ``norm`` config node."""
    kwargs = {k: v for k, v in norm.items() if k not in ("name", "position")}
    return norm["name"], norm["position"], kwargs


def check_model(model: Mapping, norm: Mapping, batch_size: int, image_size: int = 32) -> None:
    """Raise ConfigError if this model/norm/batch combination is undefined."""
    name, position, kwargs = split_norm_config(norm)
    check_position(position)
    if model["activation"] not in ACTIVATIONS:
        raise ConfigError(
            "model.activation",
            f"unknown {model['activation']!r}; allowed: {', '.join(sorted(ACTIVATIONS))}",
        )
    weight_side = model.get("weight_side", "none")
    if weight_side not in WEIGHT_SIDE:
        raise ConfigError(
            "model.weight_side", f"unknown {weight_side!r}; allowed: {', '.join(WEIGHT_SIDE)}"
        )
    if weight_side == "weight_std" and model["name"] != "cnn":
        raise ConfigError("model.weight_side", "weight_std standardizes conv filters: cnn only")
    if model["name"] == "cnn":
        widths = list(model["widths"])
        if not widths or any(int(w) <= 0 for w in widths):
            raise ConfigError("model.widths", f"{widths} must be a non-empty list of positive ints")
        if model["convs_per_stage"] <= 0:
            raise ConfigError("model.convs_per_stage", "must be a positive int")
        channels = normalized_channels(widths, model["convs_per_stage"])
        head = model.get("head", "grid")
        if head not in HEADS:
            raise ConfigError("model.head", f"unknown {head!r}; allowed: {', '.join(HEADS)}")
        if head == "gap":
            _refuse_norm_before_pooling(name, position, kwargs, channels[-1])
        values = batch_size * smallest_feature_map(widths, image_size)
        check_norm(name, "image", channels, values, kwargs, batch_size)
    elif model["name"] == "mlp":
        for field in ("hidden", "depth"):
            if model[field] <= 0:
                raise ConfigError(f"model.{field}", f"{model[field]} must be a positive int")
        check_norm(name, "dense", [model["hidden"]], batch_size, kwargs, batch_size)
    else:
        raise ConfigError("model.name", f"unknown {model['name']!r}; allowed: {', '.join(MODELS)}")


def _refuse_norm_before_pooling(name: str, position: str, kwargs: Mapping, channels: int) -> None:
    """In ``post`` the last conv block ends with the norm and global average pooling follows. A
    norm whose set S is one channel of one sample (IN, or GN with one channel per group) makes
    each channel's spatial mean exactly β there: the logits would not depend on the input."""
    if position != "post":
        return
    per_channel = name == "instance" or (
        name == "group"
        and (kwargs.get("channels_per_group") == 1 or kwargs.get("num_groups") == channels)
    )
    if per_channel:
        raise ConfigError(
            "norm.position",
            f"'post' {name} norm right before global average pooling makes every channel's mean "
            "equal β, so the CNN would ignore its input; allowed for it: pre",
        )


def build_model(model: Mapping, norm: Mapping, num_classes: int = 10) -> nn.Module:
    net = _build_net(model, norm, num_classes)
    # After initialization, so weight norm's g starts at ||v|| and the function is unchanged.
    return apply_weight_side(net, model.get("weight_side", "none"))


def _build_net(model: Mapping, norm: Mapping, num_classes: int) -> nn.Module:
    name, position, kwargs = split_norm_config(norm)
    if model["name"] == "cnn":
        return VGGNet(
            list(model["widths"]),
            model["convs_per_stage"],
            name,
            position,
            model["activation"],
            kwargs,
            num_classes=num_classes,
            head=model.get("head", "grid"),
        )
    if model["name"] == "mlp":
        return MLP(
            3 * 32 * 32,
            model["hidden"],
            model["depth"],
            name,
            position,
            model["activation"],
            kwargs,
            num_classes=num_classes,
        )
    raise ConfigError("model.name", f"unknown {model['name']!r}; allowed: {', '.join(MODELS)}")
