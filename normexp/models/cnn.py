"""VGG-style CNN: stages of 3x3 conv blocks, max-pool between stages, then a linear classifier
on the last feature map averaged over its four quadrants (``head: grid``, the default), over all
of it (``gap``), or flattened (``flatten``, as VGG).

Why not global average pooling: right after the last norm block, a norm that standardizes each
channel of each sample (IN; GN with one channel per group) leaves the globally pooled features
almost free of input information (relu(γ·z+β) averaged over a standardized z is nearly
constant), so such a CNN trains at chance — seen at the quick profile: IN at 90% test error for
every batch size. Quadrants keep a coarse spatial pattern, which IN preserves. Flattening does
too, but its 16x larger classifier trained much worse at large batches in the quick schedule
(BN at batch 128: 21% accuracy flattened, 47% with gap, 54% with grid, one seed each).

``final_norm`` (``model.final_norm``, default true): whether the last conv block has the norm
like every other block. With false, the last block is conv (with its bias) → activation in
either position, so the head sees the same kind of layer in ``pre`` and ``post`` (an activation,
never a norm) and both positions have the same number of norms; the positions then differ only
in the order of the earlier blocks. It is C3's control (experiments/bn_position_control.yaml):
by default a ``post`` CNN ends with a norm right before the head and a ``pre`` CNN with an
activation, which confounds the position with "is there a norm before the head"."""

from collections.abc import Mapping

from torch import Tensor, nn

from normexp.errors import ConfigError
from normexp.models.blocks import make_activation, norm_block
from normexp.models.init import init_weights
from normexp.models.probe import check_global_pool_head, check_sites, norm_sites
from normexp.models.spec import ModelSpec
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
        final_norm: bool = True,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        last = len(widths) * convs_per_stage - 1
        for stage, width in enumerate(widths):
            if stage > 0:
                layers.append(nn.MaxPool2d(2))
            for j in range(convs_per_stage):
                if not final_norm and stage * convs_per_stage + j == last:
                    conv = nn.Conv2d(c_in, width, 3, padding=1, bias=True)
                    layers.append(nn.Sequential(conv, make_activation(activation)))
                else:
                    conv = nn.Conv2d(c_in, width, 3, padding=1, bias=norm.layer_bias)
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


def check_cnn(model: Mapping, factory: NormFactory, batch_size: int, image_size: int) -> None:
    """The CNN's own rules, and its norm's at each normalized layer."""
    widths = list(model["widths"])
    if not widths or any(int(w) <= 0 for w in widths):
        raise ConfigError("model.widths", f"{widths} must be a non-empty list of positive ints")
    if model["convs_per_stage"] <= 0:
        raise ConfigError("model.convs_per_stage", "must be a positive int")
    head = model.get("head", "grid")
    if head not in HEADS:
        raise ConfigError("model.head", f"unknown {head!r}; allowed: {', '.join(HEADS)}")
    final_norm = model.get("final_norm", True)
    if final_norm is False and factory.name == "none":
        raise ConfigError(
            "model.final_norm", "false leaves out the last block's norm: needs a norm"
        )
    sites = norm_sites(
        build_cnn, model, factory, (batch_size, 3, image_size, image_size),
        "model.widths",
    )  # fmt: skip
    if head == "gap" and final_norm:
        check_global_pool_head(factory, sites, batch_size, "CNN")
    else:
        check_sites(factory, "image", sites, batch_size)


def build_cnn(model: Mapping, factory: NormFactory, num_classes: int = 10) -> nn.Module:
    return VGGNet(
        list(model["widths"]),
        model["convs_per_stage"],
        factory,
        model["activation"],
        num_classes=num_classes,
        head=model.get("head", "grid"),
        final_norm=model.get("final_norm", True),
    )


MODEL = ModelSpec("cnn", check_cnn, build_cnn)
