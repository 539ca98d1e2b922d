"""Model construction from config, with the norm validity rules applied first."""

from collections.abc import Mapping

from torch import nn

from normexp.errors import ConfigError
from normexp.models import cnn, mlp, resnet
from normexp.models.blocks import check_activation
from normexp.models.spec import ModelSpec
from normexp.norms.registry import make_norm_factory
from normexp.norms.weight_side import WEIGHT_SIDE, apply_weight_side

# The classifiers, each declared by its module (its MODEL: how it is checked and built).
SPECS: dict[str, ModelSpec] = {m.MODEL.name: m.MODEL for m in (cnn, mlp, resnet)}
MODELS = tuple(SPECS)
CONV_MODELS = ("cnn", "resnet")  # weight standardization is defined for their conv filters


def model_spec(name: str) -> ModelSpec:
    if name not in SPECS:
        raise ConfigError("model.name", f"unknown {name!r}; allowed: {', '.join(MODELS)}")
    return SPECS[name]


def check_model(model: Mapping, norm: Mapping, batch_size: int, image_size: int = 32) -> None:
    """Raise ConfigError if this model/norm/batch combination is undefined."""
    factory = make_norm_factory(norm)
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
    model_spec(model["name"]).check(model, factory, batch_size, image_size)


def build_model(model: Mapping, norm: Mapping, num_classes: int = 10) -> nn.Module:
    net = _build_net(model, norm, num_classes)
    # After initialization, so weight norm's g starts at ||v|| and the function is unchanged.
    return apply_weight_side(net, model.get("weight_side", "none"))


def _build_net(model: Mapping, norm: Mapping, num_classes: int) -> nn.Module:
    return model_spec(model["name"]).build(model, make_norm_factory(norm), num_classes)
