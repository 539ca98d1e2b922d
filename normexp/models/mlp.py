"""MLP on flattened images, built from the same norm blocks as the CNN."""

from torch import Tensor, nn

from normexp.models.blocks import norm_block
from normexp.models.init import init_weights
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
