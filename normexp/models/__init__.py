"""Model construction from config, with the norm validity rules applied first."""

from collections.abc import Mapping

from torch import nn

from normexp.errors import ConfigError
from normexp.models.blocks import check_activation
from normexp.models.cnn import HEADS, VGGNet, normalized_channels, smallest_feature_map
from normexp.models.mlp import MLP
from normexp.models.resnet import SHORTCUTS, ResNet, resnet_normalized_channels
from normexp.norms.registry import NormFactory, make_norm_factory
from normexp.norms.validity import check_norm, refuse_per_channel_post
from normexp.norms.weight_side import WEIGHT_SIDE, apply_weight_side

MODELS = ("cnn", "mlp", "resnet")
CONV_MODELS = ("cnn", "resnet")  # weight standardization is defined for their conv filters


def check_model(model: Mapping, norm: Mapping, batch_size: int, image_size: int = 32) -> None:
    """Raise ConfigError if this model/norm/batch combination is undefined."""
    factory = make_norm_factory(norm)
    name, kwargs = factory.name, factory.kwargs
    check_activation(model["activation"])
    weight_side = model.get("weight_side", "none")
    if weight_side not in WEIGHT_SIDE:
        raise ConfigError(
            "model.weight_side", f"unknown {weight_side!r}; allowed: {', '.join(WEIGHT_SIDE)}"
        )
    if weight_side == "weight_std" and model["name"] not in CONV_MODELS:
        raise ConfigError(
            "model.weight_side",
            f"weight_std standardizes conv filters: {', '.join(CONV_MODELS)} only",
        )
    if model.get("final_norm", True) is not True and model["name"] != "cnn":
        raise ConfigError("model.final_norm", "defined for the CNN only (cnn); leave it out")
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
        final_norm = model.get("final_norm", True)
        if final_norm is False and name == "none":
            raise ConfigError(
                "model.final_norm", "false leaves out the last block's norm: needs a norm"
            )
        if head == "gap" and final_norm:
            # In ``post`` the last conv block ends with the norm and global average pooling
            # follows: the logits would not depend on the input.
            refuse_per_channel_post(
                factory,
                channels[-1],
                "global average pooling makes every channel's mean equal β, so the CNN would "
                "ignore its input",
            )
        values = batch_size * smallest_feature_map(widths, image_size)
        check_norm(name, "image", channels, values, kwargs, batch_size)
    elif model["name"] == "resnet":
        _check_resnet(model, factory, batch_size, image_size)
    elif model["name"] == "mlp":
        for field in ("hidden", "depth"):
            if model[field] <= 0:
                raise ConfigError(f"model.{field}", f"{model[field]} must be a positive int")
        check_norm(name, "dense", [model["hidden"]], batch_size, kwargs, batch_size)
    else:
        raise ConfigError("model.name", f"unknown {model['name']!r}; allowed: {', '.join(MODELS)}")


def _check_resnet(model: Mapping, factory: NormFactory, batch_size: int, image_size: int) -> None:
    depth, width_mult = model["depth"], model["width_mult"]
    if not _is_int(depth) or depth < 8 or (depth - 2) % 6:
        raise ConfigError(
            "model.depth", f"{depth!r} must be 6n + 2 with n >= 1 (20, 32, 44, 56, 110)"
        )
    if not _is_int(width_mult) or width_mult < 1:
        raise ConfigError("model.width_mult", f"{width_mult!r} must be an int >= 1")
    if model["shortcut"] not in SHORTCUTS:
        raise ConfigError(
            "model.shortcut", f"unknown {model['shortcut']!r}; allowed: {', '.join(SHORTCUTS)}"
        )
    channels = resnet_normalized_channels(depth, width_mult)
    # In ``post`` the last block ends with the norm, and global average pooling follows.
    refuse_per_channel_post(
        factory,
        channels[-1],
        "global average pooling makes every channel's mean equal β, so the ResNet would ignore "
        "its input",
    )
    # Three stages, two stride-2 convs: the last stage's maps are image_size / 4 on a side.
    values = batch_size * (image_size // 4) ** 2
    check_norm(factory.name, "image", channels, values, factory.kwargs, batch_size)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def build_model(model: Mapping, norm: Mapping, num_classes: int = 10) -> nn.Module:
    net = _build_net(model, norm, num_classes)
    # After initialization, so weight norm's g starts at ||v|| and the function is unchanged.
    return apply_weight_side(net, model.get("weight_side", "none"))


def _build_net(model: Mapping, norm: Mapping, num_classes: int) -> nn.Module:
    factory = make_norm_factory(norm)
    if model["name"] == "cnn":
        return VGGNet(
            list(model["widths"]),
            model["convs_per_stage"],
            factory,
            model["activation"],
            num_classes=num_classes,
            head=model.get("head", "grid"),
            final_norm=model.get("final_norm", True),
        )
    if model["name"] == "resnet":
        return ResNet(
            model["depth"],
            model["width_mult"],
            factory,
            model["activation"],
            shortcut=model.get("shortcut", "A"),
            num_classes=num_classes,
        )
    if model["name"] == "mlp":
        return MLP(
            3 * 32 * 32,
            model["hidden"],
            model["depth"],
            factory,
            model["activation"],
            num_classes=num_classes,
        )
    raise ConfigError("model.name", f"unknown {model['name']!r}; allowed: {', '.join(MODELS)}")
