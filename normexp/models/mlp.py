"""MLP on flattened images, built from the same norm blocks as the CNN."""

from collections.abc import Mapping

from torch import Tensor, nn

from normexp.errors import ConfigError
from normexp.models.blocks import norm_block
from normexp.models.init import init_weights
from normexp.models.probe import check_sites, norm_sites
from normexp.models.spec import ModelSpec
from normexp.norms.registry import NormFactory


class MLP(nn.Module):
    def __init__(
        self,
        in_features: int,
        hidden: int,
        depth: int,
        norm: NormFactory,
        activation: str,
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        bias = norm.layer_bias
        layers: list[nn.Module] = [nn.Flatten()]
        d_in = in_features
        for _ in range(depth):
            linear = nn.Linear(d_in, hidden, bias=bias)
            layers.append(norm_block(linear, norm, activation, hidden))
            d_in = hidden
        layers.append(nn.Linear(d_in, num_classes))
        self.net = nn.Sequential(*layers)
        init_weights(self, activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def check_mlp(model: Mapping, factory: NormFactory, batch_size: int, image_size: int) -> None:
    """The MLP's own rules, and its norm's on its dense hidden layers."""
    for field in ("hidden", "depth"):
        if model[field] <= 0:
            raise ConfigError(f"model.{field}", f"{model[field]} must be a positive int")
    sites = norm_sites(
        build_mlp, model, factory, (batch_size, 3, 32, 32), "model.depth"
    )
    check_sites(factory, "dense", sites, batch_size)


def build_mlp(model: Mapping, factory: NormFactory, num_classes: int = 10) -> nn.Module:
    return MLP(
        3 * 32 * 32,
        model["hidden"],
        model["depth"],
        factory,
        model["activation"],
        num_classes=num_classes,
    )


MODEL = ModelSpec("mlp", check_mlp, build_mlp)
