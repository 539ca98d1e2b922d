"""Per-image photometric corruptions and targets of the image-to-image tasks (C6): each image gets
its own contrast, brightness and colour cast (optionally plus pixel noise); the target is either
the clean image (restoration) or a fixed stylization of it (see ``stylize``): C6's reported
tasks.

Pixels are in [0, 1] (uint8 / 255); the clean image, also in [0, 1], is the target. Per image n
and channel c the corruption is an affine map about mid-grey,

    y[n, c] = 0.5 + a[n] * k[n, c] * (x[n, c] - 0.5) + b[n] + d[n, c]

with contrast a (log-uniform), colour gain k (log-uniform per channel), brightness b and colour
offset d (uniform). The result is not clipped: the map stays invertible, so how much of it a
network undoes is limited by how well it infers each image's parameters from the content, not
by lost information. It is the setting of the IN paper's argument (Ulyanov et al. 2016: the
output should not depend on the input's contrast): IN right after the first conv removes the
common contrast a and brightness b exactly, while BN must learn to ignore them. The cost is on
the other side: IN also discards what the corrupted image's statistics still say about the
clean image's brightness and contrast, which the network must then infer from content.

The stylization target (``train.target: style``) is the other side of that trade: it is a fixed
map of the clean image after each channel is standardized to mean 0 and std 1 per image, so the
target does not depend on the clean image's own contrast, brightness or colour cast, let alone on
the corruption's: the input's global statistics are nuisance to discard, as the content image's
contrast is in stylization (Ulyanov et al. 2016). Pixel noise (``train.corruption.noise``) keeps
it a generation task: standardizing the input is not enough, it must also be denoised.
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch

# Fixed seed of the test set's corruptions: every run, whatever its own seed, sees the same
# corrupted test inputs.
TEST_CORRUPTION_SEED = 20160727  # the Instance Normalization preprint's arXiv date


@dataclass(frozen=True)
class CorruptionRanges:
    """How strong the corruptions are (configured under ``train.corruption``)."""

    contrast: tuple[float, float] = (0.5, 2.0)  # a, log-uniform: 0.5 halves, 2 doubles contrast
    colour_gain: tuple[float, float] = (0.8, 1.25)  # k per channel, log-uniform
    brightness: float = 0.2  # b ~ U(-brightness, brightness), in [0, 1] pixel units
    colour_offset: float = 0.1  # d per channel ~ U(-colour_offset, colour_offset)
    noise: float = 0.0  # std of i.i.d. Gaussian pixel noise added after the affine map

    @classmethod
    def from_config(cls, c: Mapping) -> "CorruptionRanges":
        return cls(
            contrast=tuple(c["contrast"]),
            colour_gain=tuple(c["colour_gain"]),
            brightness=float(c["brightness"]),
            colour_offset=float(c["colour_offset"]),
            # absent from the restoration runs' configs (their run keys must not change)
            noise=float(c.get("noise", 0.0)),
        )

    def is_identity(self) -> bool:
        return (
            self.contrast == (1.0, 1.0)
            and self.colour_gain == (1.0, 1.0)
            and self.brightness == 0
            and self.colour_offset == 0
            and self.noise == 0
        )


@dataclass(frozen=True)
class Corruption:
    """Per-image, per-channel gain and offset: y = 0.5 + gain * (x - 0.5) + offset."""

    gain: torch.Tensor  # (N, C, 1, 1)
    offset: torch.Tensor  # (N, C, 1, 1)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return (x - 0.5).mul(self.gain).add_(0.5).add_(self.offset)

    def invert(self, y: torch.Tensor) -> torch.Tensor:
        return (y - 0.5 - self.offset).div_(self.gain).add_(0.5)

    def __getitem__(self, index: slice | torch.Tensor) -> "Corruption":
        return Corruption(self.gain[index], self.offset[index])


def _log_uniform(
    lo_hi: tuple[float, float], shape: tuple[int, ...], g: torch.Generator
) -> torch.Tensor:
    lo, hi = math.log(lo_hi[0]), math.log(lo_hi[1])
    u = torch.rand(shape, generator=g, device=g.device)
    return torch.exp(lo + (hi - lo) * u)


def _uniform(half_width: float, shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    return (2 * torch.rand(shape, generator=g, device=g.device) - 1) * half_width


def sample_corruption(
    n: int, ranges: CorruptionRanges, generator: torch.Generator, channels: int = 3
) -> Corruption:
    """Parameters for ``n`` images, drawn from ``generator`` only (same state -> same draw),
    always in the same order so that a draw does not depend on the device of the images."""
    contrast = _log_uniform(ranges.contrast, (n, 1, 1, 1), generator)
    colour = _log_uniform(ranges.colour_gain, (n, channels, 1, 1), generator)
    brightness = _uniform(ranges.brightness, (n, 1, 1, 1), generator)
    colour_offset = _uniform(ranges.colour_offset, (n, channels, 1, 1), generator)
    return Corruption(gain=contrast * colour, offset=brightness + colour_offset)


def corrupt(
    x: torch.Tensor, ranges: CorruptionRanges, generator: torch.Generator
) -> tuple[torch.Tensor, Corruption]:
    """(corrupted batch, its parameters) for float images ``x`` (N, C, H, W) in [0, 1]; each
    image draws its own parameters, then (with ``ranges.noise``) its pixel noise. Without
    noise nothing more is drawn, so a noiseless draw is the same as before noise existed."""
    params = sample_corruption(x.shape[0], ranges, generator, x.shape[1])
    params = Corruption(params.gain.to(x.device), params.offset.to(x.device))
    y = params.apply(x)
    if ranges.noise > 0:
        noise = torch.randn(x.shape, generator=generator, device=generator.device)
        y.add_(noise.to(x.device), alpha=ranges.noise)
    return y, params


def fixed_corruption(
    x: torch.Tensor, ranges: CorruptionRanges, seed: int = TEST_CORRUPTION_SEED
) -> torch.Tensor:
    """The corrupted version of a fixed image set, the same on every call (CPU generator)."""
    return corrupt(x, ranges, torch.Generator().manual_seed(seed))[0]


def to_unit(x_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 in [0, 1]."""
    return x_uint8.to(torch.float32).div_(255.0)


# --- targets ---------------------------------------------------------------------------------

# The fixed map (bn_generation_style). Numbers chosen once by hand, not tuned: a colour mixing that
# is no permutation or scaling of the channels (a "false colour" palette), an unsharp mask that
# needs spatial context, and a sigmoid tone curve whose offsets set the output's mean colour.
STANDARDIZE_EPS = 0.01  # pixel units: channels flatter than 1% contrast are not blown up
STYLE_MIX = ((0.6, 0.7, -0.3), (-0.4, 0.5, 0.7), (0.5, -0.6, 0.5))  # rows: output channels
STYLE_SHARPEN = 1.0  # u = z + 1.0 * (z - blur(z)), blur Gaussian sigma 1, 5x5, reflect pad
STYLE_GAIN = 1.5  # tone curve steepness
STYLE_OFFSET = (0.4, -0.2, -0.6)  # tone curve offsets: mean output colour about (0.6, 0.45, 0.35)


def standardize(x: torch.Tensor) -> torch.Tensor:
    """Each image's channel to mean 0, std 1 (std floored by STANDARDIZE_EPS): invariant, up to
    that floor, to any per-image per-channel gain > 0 and offset."""
    mean = x.mean(dim=(2, 3), keepdim=True)
    var = x.var(dim=(2, 3), keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + STANDARDIZE_EPS**2)


def _blur5(x: torch.Tensor) -> torch.Tensor:
    coords = torch.arange(5, dtype=x.dtype, device=x.device) - 2
    g = torch.exp(-(coords**2) / 2)
    g = g / g.sum()
    c = x.shape[1]
    kernel = (g[:, None] * g[None, :]).expand(c, 1, 5, 5).contiguous()
    return torch.nn.functional.conv2d(
        torch.nn.functional.pad(x, (2, 2, 2, 2), mode="reflect"), kernel, groups=c
    )


def stylize(x01: torch.Tensor) -> torch.Tensor:
    """The fixed stylization of images ``x01`` (N, 3, H, W): standardize each channel per image,
    sharpen, mix the colours, tone-map into (0, 1). A deterministic function of the image's
    content after standardization only: the image's own statistics do not reach the output."""
    z = standardize(x01)
    u = z + STYLE_SHARPEN * (z - _blur5(z))
    mix = torch.tensor(STYLE_MIX, dtype=x01.dtype, device=x01.device)
    offset = torch.tensor(STYLE_OFFSET, dtype=x01.dtype, device=x01.device).view(1, -1, 1, 1)
    return torch.sigmoid(STYLE_GAIN * torch.einsum("oc,nchw->nohw", mix, u) + offset)


def _clean(x01: torch.Tensor) -> torch.Tensor:
    return x01


# train.target -> the map from the clean image to the training / evaluation target
TARGETS = {"clean": _clean, "style": stylize}
