"""What the suite knows of a classifier by its config name (``model.name``): how to check a
config of it before anything runs, and how to build it. Each model module declares its own
``MODEL``; normexp.models lists them."""

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from torch import nn

from normexp.norms.registry import NormFactory


@dataclass(frozen=True)
class ModelSpec:
    name: str
    # (model config, norm factory, batch size, image size): raise ConfigError naming the field
    check: Callable[[Mapping, NormFactory, int, int], None]
    # (model config, norm factory, number of classes) -> the network
    build: Callable[[Mapping, NormFactory, int], nn.Module]
