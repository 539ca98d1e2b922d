"""Registry of normalization layers: one constructor shape for every norm.

``make_norm(name, num_features, **kwargs)`` builds the layer for inputs of shape (N, C) or
(N, C, H, W); which input kinds a norm is defined for, and whether it has a shift (so the layer
before it needs no bias), is declared where the norm is registered.
"""

import inspect
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from normexp.errors import ConfigError

INPUT_KINDS = ("dense", "image", "recurrent")


@dataclass(frozen=True)
class NormSpec:
    """What the rest of the suite needs to know about a norm without building it."""

    name: str
    build: Callable[..., nn.Module]
    input_kinds: frozenset[str]
    has_shift: bool  # a learned β follows the normalization: the preceding layer needs no bias
    uses_batch_stats: bool  # statistics pooled over samples: needs >1 value per statistic


NORMS: dict[str, NormSpec] = {}


def register_norm(
    name: str,
    *,
    input_kinds: tuple[str, ...] = ("dense", "image"),
    has_shift: bool = True,
    uses_batch_stats: bool = False,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator that registers ``build(num_features, **kwargs) -> nn.Module`` under ``name``."""

    def wrap(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in NORMS:
            raise ValueError(f"norm {name!r} registered twice")
        NORMS[name] = NormSpec(name, build, frozenset(input_kinds), has_shift, uses_batch_stats)
        return build

    return wrap


def norm_spec(name: str, field: str = "norm.name") -> NormSpec:
    """The spec of a registered norm; an unknown name raises ConfigError listing the valid ones."""
    # Importing the layers module fills the registry; done here so callers need one import.
    from normexp.norms import batch_variants, layers  # noqa: F401

    if name not in NORMS:
        raise ConfigError(field, f"unknown norm {name!r}; allowed: {', '.join(sorted(NORMS))}")
    return NORMS[name]


def norm_parameters(name: str) -> list[str]:
    """The keyword arguments that norm ``name`` accepts besides ``num_features``."""
    params = inspect.signature(norm_spec(name).build).parameters
    return [p for p in params if p != "num_features"]


def make_norm(name: str, num_features: int, **kwargs: object) -> nn.Module:
    """Build the norm ``name`` for ``num_features`` channels (dense or image inputs)."""
    allowed = norm_parameters(name)
    for key in kwargs:
        if key not in allowed:
            raise ConfigError(
                f"norm.{key}",
                f"not a parameter of norm {name!r}; allowed: {', '.join(allowed) or 'none'}",
            )
    return norm_spec(name).build(num_features, **kwargs)
