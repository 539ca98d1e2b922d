"""CIFAR ResNet (He et al. 2016, "Deep Residual Learning", Sec. 4.2): a 3x3 conv stem with 16k
channels, 3 stages of n basic blocks (two 3x3 convs each) at widths 16k/32k/64k on 32/16/8 px
maps (k = ``width_mult``; the first conv of stages 2 and 3 has stride 2), global average pooling
and a linear classifier: depth = 6n + 2 weighted layers (20, 32, 44, 56, 110). ResNet-20 at
k = 1 has 0.27M parameters, as in the paper.

Positions, for every norm (the block order is the only thing that changes):

- ``pre`` (layer -> norm -> act), the paper's own ordering. Stem: conv-norm-act. Block:
  conv-norm-act, conv-norm, add the shortcut, act.
- ``post`` (layer -> act -> norm): every norm directly follows an activation, and the block keeps
  the paper's number of convs, norms and activations; only the norm moves past the activation.
  Stem: conv-act-norm. Block: conv-act-norm, conv, add the shortcut, act-norm. The second norm
  thus normalizes the block's output, the sum (as post-LN Transformers do), rather than the
  residual branch alone: moving it past the activation that follows the add is the only place
  where it follows an activation without adding one. The last block ends with a norm right
  before global average pooling, so a norm whose set S is one channel of one sample (IN, GN
  with one channel per group) is refused there: each pooled feature would equal its β.

Shortcuts, where a block changes width and resolution (the first block of stages 2 and 3;
elsewhere the shortcut is the identity):

- ``A`` (the default, He et al.'s choice on CIFAR, and what the 0.27M above counts): the input
  subsampled by 2 and zero-padded with the new channels; parameter-free, so no norm and no
  position question, and all norms see the same blocks.
- ``B``: a strided 1x1 conv projection (ImageNet ResNets). In ``pre`` it is conv-norm, like the
  branch it is added to; in ``post`` a plain conv (with bias), since the sum is normalized after
  the activation anyway.

No block's last γ is initialized to zero (a common trick, off here: the method stays plain).
Weights are He-initialized (``init.py``), which keeps the un-normalized ResNet trainable.
"""

from collections.abc import Mapping

from torch import Tensor, nn

from normexp.errors import ConfigError
from normexp.models.blocks import make_activation, norm_block
from normexp.models.cnn import GlobalAvgPool
from normexp.models.init import init_weights
from normexp.models.probe import check_global_pool_head, norm_sites
from normexp.models.spec import ModelSpec
from normexp.norms.registry import NormFactory

SHORTCUTS = ("A", "B")
BASE_WIDTHS = (16, 32, 64)


def blocks_per_stage(depth: int) -> int:
    """n of depth = 6n + 2."""
    return (depth - 2) // 6


def stage_widths(width_mult: int) -> list[int]:
    return [w * width_mult for w in BASE_WIDTHS]


def conv3x3(c_in: int, c_out: int, stride: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=bias)


class PadShortcut(nn.Module):
    """Option A: every second pixel of every second row, the new channels all zero."""

    def __init__(self, extra_channels: int, stride: int) -> None:
        super().__init__()
        self.extra_channels = extra_channels
        self.stride = stride

    def forward(self, x: Tensor) -> Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return nn.functional.pad(x, (0, 0, 0, 0, 0, self.extra_channels))


class BasicBlock(nn.Module):
    """Two 3x3 convs and a shortcut, ordered as the module docstring says for each position."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        stride: int,
        norm: NormFactory,
        activation: str,
        shortcut: str,
    ) -> None:
        super().__init__()
        bias = norm.layer_bias
        pre = norm.position == "pre"
        first = norm_block(conv3x3(c_in, c_out, stride, bias), norm, activation, c_out)
        second = conv3x3(c_out, c_out, 1, bias)
        self.branch = nn.Sequential(*first, second, *([norm(c_out)] if pre else []))
        self.after = nn.Sequential(
            make_activation(activation), *([] if pre else [norm(c_out)])
        )
        if stride == 1 and c_in == c_out:
            self.shortcut: nn.Module = nn.Identity()
        elif shortcut == "A":
            self.shortcut = PadShortcut(c_out - c_in, stride)
        else:
            projection = nn.Conv2d(c_in, c_out, 1, stride=stride, bias=bias)
            self.shortcut = nn.Sequential(projection, *([norm(c_out)] if pre else []))

    def forward(self, x: Tensor) -> Tensor:
        return self.after(self.branch(x) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(
        self,
        depth: int,
        width_mult: int,
        norm: NormFactory,
        activation: str,
        shortcut: str = "A",
        num_classes: int = 10,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        widths = stage_widths(width_mult)
        stem = conv3x3(in_channels, widths[0], 1, norm.layer_bias)
        layers: list[nn.Module] = [norm_block(stem, norm, activation, widths[0])]
        c_in = widths[0]
        for stage, width in enumerate(widths):
            for i in range(blocks_per_stage(depth)):
                stride = 2 if stage > 0 and i == 0 else 1
                layers.append(BasicBlock(c_in, width, stride, norm, activation, shortcut))
                c_in = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(GlobalAvgPool(), nn.Linear(c_in, num_classes))
        init_weights(self, activation)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def check_resnet(model: Mapping, factory: NormFactory, batch_size: int, image_size: int) -> None:
    """The ResNet's own rules, and its norm's at each normalized layer."""
    depth, width_mult = model["depth"], model["width_mult"]
    if not _is_int(depth) or depth < 8 or (depth - 2) % 6:
        raise ConfigError(
            "model.depth", f"{depth!r} must be 6n + 2 with n >= 1 (20, 32, 44, 56, 110)"
        )
    if not _is_int(width_mult) or width_mult < 1:
        raise ConfigError("model.width_mult", f"{width_mult!r} must be an int >= 1")
    if model["shortcut"] not in SHORTCUTS:
        raise ConfigError(
            "model.shortcut", f"unknown {model['shortcut']!r}; allowed: {', '.join(SHORTCUTS)}"
        )
    sites = norm_sites(
        build_resnet, model, factory, (batch_size, 3, image_size, image_size),
        "model.depth",
    )  # fmt: skip
    check_global_pool_head(factory, sites, batch_size, "ResNet")



def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def build_resnet(model: Mapping, factory: NormFactory, num_classes: int = 10) -> nn.Module:
    return ResNet(
        model["depth"],
        model["width_mult"],
        factory,
        model["activation"],
        shortcut=model.get("shortcut", "A"),
        num_classes=num_classes,
    )


MODEL = ModelSpec("resnet", check_resnet, build_resnet)
