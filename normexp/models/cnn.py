"""VGG-style CNN: stages of 3x3 conv blocks, max-pool between stages, then a linear classifier
on the flattened last feature map (as VGG does) or on its global average (``head: gap``).

Why flatten by default: with global average pooling right after the last norm block, a norm
that standardizes each channel of each sample (IN; GN with one channel per group) leaves the
pooled features almost free of input information — relu(γ·z+β) averaged over a standardized z
is nearly constant — so such a CNN trains at chance (seen at the quick profile: IN at 90% test
error for every batch size). Flattening keeps the spatial pattern, which IN preserves, so the
comparison between norms measures the norms and not this interaction."""

from torch import Tensor, nn

from normexp.models.blocks import needs_bias, norm_block
from normexp.models.init import init_weights


class GlobalAvgPool(nn.Module):
    """Mean over H, W: the same as AdaptiveAvgPool2d(1) + Flatten, and deterministic on CUDA."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean((2, 3))


HEADS = ("flatten", "gap")


class VGGNet(nn.Module):
    def __init__(
        self,
        widths: list[int],
        convs_per_stage: int,
        norm: str,
        position: str,
        activation: str,
        norm_kwargs: dict,
        num_classes: int = 10,
        in_channels: int = 3,
        head: str = "flatten",
        image_size: int = 32,
    ) -> None:
        super().__init__()
        bias = needs_bias(norm, position)
        layers: list[nn.Module] = []
        c_in = in_channels
        for stage, width in enumerate(widths):
            if stage > 0:
                layers.append(nn.MaxPool2d(2))
            for _ in range(convs_per_stage):
                conv = nn.Conv2d(c_in, width, 3, padding=1, bias=bias)
                layers.append(norm_block(conv, norm, position, activation, width, norm_kwargs))
                c_in = width
        self.features = nn.Sequential(*layers)
        if head == "gap":
            self.head = nn.Sequential(GlobalAvgPool(), nn.Linear(c_in, num_classes))
        else:
            side = image_size // 2 ** (len(widths) - 1)
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(c_in * side * side, num_classes))
        init_weights(self, activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def normalized_channels(widths: list[int], convs_per_stage: int) -> list[int]:
    return [w for w in widths for _ in range(convs_per_stage)]


def smallest_feature_map(widths: list[int], image_size: int = 32) -> int:
    """H*W of the last stage (one max-pool per stage after the first)."""
    side = image_size // 2 ** (len(widths) - 1)
    return side * side
