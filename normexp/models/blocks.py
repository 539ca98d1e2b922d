"""Layer / norm / activation blocks whose order is the norm position."""

from torch import nn

from normexp.errors import ConfigError
from normexp.norms.registry import make_norm, norm_spec
from normexp.norms.validity import check_position

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,  # saturating: the case where BN's placement might matter most
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
}

ORDERS = {"pre": ("layer", "norm", "act"), "post": ("layer", "act", "norm")}


def make_activation(name: str) -> nn.Module:
    if name not in ACTIVATIONS:
        raise ConfigError(
            "model.activation", f"unknown {name!r}; allowed: {', '.join(sorted(ACTIVATIONS))}"
        )
    return ACTIVATIONS[name]()


def needs_bias(norm_name: str, position: str) -> bool:
    """A layer directly followed by a norm with a shift gets no bias (β makes it redundant)."""
    return not (position == "pre" and norm_spec(norm_name).has_shift)


def norm_block(
    layer: nn.Module,
    norm_name: str,
    position: str,
    activation: str,
    num_features: int,
    norm_kwargs: dict,
) -> nn.Sequential:
    """``layer`` followed by norm and activation in the order that ``position`` names."""
    check_position(position)
    parts = {
        "layer": layer,
        "norm": make_norm(norm_name, num_features, **norm_kwargs),
        "act": make_activation(activation),
    }
    return nn.Sequential(*(parts[p] for p in ORDERS[position]))
