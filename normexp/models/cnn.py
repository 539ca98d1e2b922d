"""VGG-style CNN: stages of 3x3 conv blocks, max-pool between stages, then a linear classifier
on the last feature map averaged over its four quadrants (``head: grid``, the default), over all
of it (``gap``), or flattened (``flatten``, as VGG).

Why not global average pooling: right after the last norm block, a norm that standardizes each
channel of each sample (IN; GN with one channel per group) leaves the globally pooled features
almost free of input information (relu(γ·z+β) averaged over a standardized z is nearly
constant), so such a CNN trains at chance — seen at the quick profile: IN at 90% test error for
every batch size. Quadrants keep a coarse spatial pattern, which IN preserves. Flattening does
too, but its 16x larger classifier trained much worse at large batches in the quick schedule
(BN at batch 128: 21% accuracy flattened, 47% with gap, 54% with grid, one seed each)."""

from torch import Tensor, nn

from normexp.models.blocks import norm_block
from normexp.models.init import init_weights
from normexp.norms.registry import NormFactory


class GlobalAvgPool(nn.Module):
    """Mean over H, W: the same as AdaptiveAvgPool2d(1) + Flatten, and deterministic on CUDA."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean((2, 3))


HEADS = ("grid", "flatten", "gap")


class QuadrantAvgPool(nn.Module):
    """Mean over each quadrant of the map: (N, C, H, W) -> (N, 4C). Any even size; plain
    average pooling, so deterministic on CUDA too."""

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[2], x.shape[3]
        return nn.functional.avg_pool2d(x, (max(1, h // 2), max(1, w // 2))).flatten(1)


class VGGNet(nn.Module):
    def __init__(
        self,
        widths: list[int],
        convs_per_stage: int,
        norm: NormFactory,
        activation: str,
        num_classes: int = 10,
        in_channels: int = 3,
        head: str = "grid",
        image_size: int = 32,
    ) -> None:
        super().__init__()
        bias = norm.layer_bias
        layers: list[nn.Module] = []
        c_in = in_channels
        for stage, width in enumerate(widths):
            if stage > 0:
                layers.append(nn.MaxPool2d(2))
            for _ in range(convs_per_stage):
                conv = nn.Conv2d(c_in, width, 3, padding=1, bias=bias)
                layers.append(norm_block(conv, norm, activation, width))
                c_in = width
        self.features = nn.Sequential(*layers)
        side = image_size // 2 ** (len(widths) - 1)
        if head == "gap":
            self.head = nn.Sequential(GlobalAvgPool(), nn.Linear(c_in, num_classes))
        elif head == "grid":
            self.head = nn.Sequential(QuadrantAvgPool(), nn.Linear(c_in * 4, num_classes))
        else:
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(c_in * side * side, num_classes))
        init_weights(self, activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def normalized_channels(widths: list[int], convs_per_stage: int) -> list[int]:
    return [w for w in widths for _ in range(convs_per_stage)]


def smallest_feature_map(widths: list[int], image_size: int = 32) -> int:
    """H*W of the last stage (one max-pool, or stride-2 conv, per stage after the first)."""
    side = image_size // 2 ** (len(widths) - 1)
    return side * side
