"""Image-to-image generator: a small encoder-decoder CNN in the shape of the generators where
instance normalization is used (feed-forward stylization, Johnson et al. 2016 and Ulyanov et al.
2016; the U-Net of pix2pix, Isola et al. 2017): stride-2 conv down, residual blocks at the
bottleneck, nearest upsample + conv up, and an output conv without a norm.

U-Net skips (``skips: true``) concatenate each encoder level's output, taken after its norm,
into the decoder block of the same resolution, before that block's conv and norm. So they do not
let anything bypass normalization: every path from input to output passes through at least two
norms (an encoder block's and a decoder block's); they only shorten the path for fine detail,
which makes the task learnable at the quick profile's scale. There is deliberately no global
residual (output = input + correction): that path would carry the corrupted input's contrast and
colour past every norm, and a branch with IN, invariant to them, could not correct them.
"""

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from normexp.errors import ConfigError
from normexp.models.blocks import check_activation, norm_block
from normexp.models.probe import check_sites, norm_sites
from normexp.norms.registry import NormFactory, make_norm_factory
from normexp.norms.validity import refuse_per_channel_post

IMAGE_CHANNELS = 3


class ResidualBlock(nn.Module):
    """x + block(block(x)), each block conv/norm/act in the norm position's order."""

    def __init__(self, width: int, norm: NormFactory, activation: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *(
                norm_block(
                    nn.Conv2d(width, width, 3, padding=1, bias=norm.layer_bias),
                    norm,
                    activation,
                    width,
                )
                for _ in range(2)
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.body(x)


class Generator(nn.Module):
    """``widths[i]`` channels at resolution H / 2**i; images in, images out (same shape).

    Input and output are in the CIFAR-normalized space (x - mean) / std; the training loop maps
    the output back to [0, 1] pixels for the loss and the metrics."""

    def __init__(
        self,
        widths: list[int],
        res_blocks: int,
        skips: bool,
        norm: NormFactory,
        activation: str,
        in_channels: int = IMAGE_CHANNELS,
    ) -> None:
        super().__init__()
        self.skips = skips

        def block(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
            conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=norm.layer_bias)
            return norm_block(conv, norm, activation, c_out)

        self.stem = block(in_channels, widths[0])
        self.down = nn.ModuleList(block(widths[i - 1], widths[i], 2) for i in range(1, len(widths)))
        self.bottleneck = nn.Sequential(
            *(ResidualBlock(widths[-1], norm, activation) for _ in range(res_blocks))
        )
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        self.up = nn.ModuleList(
            block(widths[i] + (widths[i - 1] if skips else 0), widths[i - 1])
            for i in range(len(widths) - 1, 0, -1)
        )
        self.out = nn.Conv2d(widths[0], in_channels, 3, padding=1)
        init_generator(self, activation)

    def forward(self, x: Tensor) -> Tensor:
        h = self.stem(x)
        levels = [h]
        for down in self.down:
            h = down(h)
            levels.append(h)
        h = self.bottleneck(h)
        for up, skip in zip(self.up, reversed(levels[:-1]), strict=True):
            h = self.upsample(h)
            if self.skips:
                h = torch.cat((h, skip), dim=1)
            h = up(h)
        return self.out(h)


def init_generator(model: nn.Module, activation: str) -> None:
    # He init as in the classifiers. The output conv starts at zero: every model, whatever its
    # norm, starts by predicting the dataset's mean colour, and its first steps train the head.
    nonlinearity = "relu" if activation in ("relu", "gelu") else activation
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity=nonlinearity)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    nn.init.zeros_(model.out.weight)


def check_generator(model: Mapping, norm: Mapping, batch_size: int, image_size: int = 32) -> None:
    """Raise ConfigError, naming the field, if this generator/norm/batch is undefined."""
    if model["name"] != "generator":
        raise ConfigError(
            "model.name", f"{model['name']!r} cannot map images to images; allowed: generator"
        )
    widths = model["widths"]
    if (
        not isinstance(widths, list | tuple)
        or not widths
        or any(isinstance(w, bool) or not isinstance(w, int) or w <= 0 for w in widths)
    ):
        raise ConfigError("model.widths", f"{widths} must be a non-empty list of positive ints")
    if image_size % 2 ** (len(widths) - 1):
        raise ConfigError(
            "model.widths",
            f"{len(widths)} levels halve {image_size}-pixel images {len(widths) - 1} times, "
            f"which does not divide evenly; allowed: at most "
            f"{(image_size & -image_size).bit_length()} widths",
        )
    res_blocks = model["res_blocks"]
    if isinstance(res_blocks, bool) or not isinstance(res_blocks, int) or res_blocks < 0:
        raise ConfigError("model.res_blocks", f"{res_blocks!r} must be an integer >= 0")
    if not isinstance(model["skips"], bool):
        raise ConfigError("model.skips", f"{model['skips']!r} must be true or false")
    check_activation(model["activation"])
    factory = make_norm_factory(norm)
    # In ``post`` the last block ends with the norm and the (linear) output conv follows: every
    # output image would have the same mean colour (up to border effects), so the generator
    # could not express the target's brightness.
    refuse_per_channel_post(
        factory, widths[0], "the linear output conv fixes every output image's mean colour"
    )
    sites = norm_sites(
        _generator, model, factory, (batch_size, 3, image_size, image_size),
        "model.widths",
    )  # fmt: skip
    check_sites(factory, "image", sites, batch_size)


def build_generator(model: Mapping, norm: Mapping) -> Generator:
    return _generator(model, make_norm_factory(norm))


def _generator(model: Mapping, factory: NormFactory) -> Generator:
    return Generator(
        list(model["widths"]), model["res_blocks"], model["skips"], factory, model["activation"]
    )
