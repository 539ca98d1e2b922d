"""Layer / norm / activation blocks whose order is the norm position."""

from torch import nn

from normexp.errors import ConfigError
from normexp.norms.registry import NormFactory

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,  # saturating: the case where BN's placement might matter most
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
}

ORDERS = {"pre": ("layer", "norm", "act"), "post": ("layer", "act", "norm")}


def check_activation(name: str) -> None:
    if name not in ACTIVATIONS:
        raise ConfigError(
            "model.activation", f"unknown {name!r}; allowed: {', '.join(sorted(ACTIVATIONS))}"
        )


def make_activation(name: str) -> nn.Module:
    check_activation(name)
    return ACTIVATIONS[name]()


def norm_block(
    layer: nn.Module, norm: NormFactory, activation: str, num_features: int
) -> nn.Sequential:
    """``layer`` followed by norm and activation in the order that ``norm.position`` names."""
    parts = {"layer": layer, "norm": norm(num_features), "act": make_activation(activation)}
    return nn.Sequential(*(parts[p] for p in ORDERS[norm.position]))
