"""The style image of the Gram-loss stylization task (C6): a procedural texture made in code from
a seed, so that nothing is downloaded and every run stylizes toward the same image.

Why a texture and not a photograph (e.g. a CIFAR-10 image held out of the content set): the
Gram-matrix style loss describes a stationary texture (colour co-occurrences and local patterns,
positions discarded), and the style images of Johnson et al. and Ulyanov et al. are paintings
whose strokes and palette are such a texture. A 32-px CIFAR-10 photograph is one object on a
background, drawn from the content images' own distribution, so stylizing toward it would ask
for little beyond a colour shift. The texture here: swirling brush strokes (a grating whose
phase a smooth random field bends), in a four-colour palette that the same field selects, with
the strokes modulating the brightness.
"""

import math

import torch

STYLE_SIZE = 32  # px: the content images' size, so both are seen at the same feature scales
# A saturated palette far from CIFAR-10's mean colour (deep blue, ochre, teal, cream), in
# [0, 1] RGB: stylizing must move every image's colours, not only its local patterns.
PALETTE = ((0.10, 0.16, 0.45), (0.85, 0.62, 0.15), (0.05, 0.50, 0.50), (0.95, 0.90, 0.75))
WAVES = 6  # plane waves of the smooth field
STROKES_PER_IMAGE = 8.0  # cycles of the stroke grating across the image: 4-px strokes
SWIRL = 2.5  # radians of stroke phase per unit of the smooth field
STROKE_DEPTH = 0.5  # the strokes scale the palette colour between 1 - 2 x this and 1


def procedural_style(seed: int = 0, size: int = STYLE_SIZE) -> torch.Tensor:
    """The style image, (3, size, size) in [0, 1]; a function of ``seed`` alone (its own
    generator: the global RNG is neither read nor moved)."""
    g = torch.Generator().manual_seed(seed)
    coords = torch.linspace(0.0, 1.0, size)
    y, x = torch.meshgrid(coords, coords, indexing="ij")
    angle = 2 * math.pi * torch.rand(WAVES, generator=g)
    cycles = 1.0 + 2.0 * torch.rand(WAVES, generator=g)  # 1 to 3 cycles across the image
    phase = 2 * math.pi * torch.rand(WAVES, generator=g)
    along = x[None] * angle.cos()[:, None, None] + y[None] * angle.sin()[:, None, None]
    field = torch.sin(2 * math.pi * cycles[:, None, None] * along + phase[:, None, None])
    field = field.mean(0) / field.mean(0).abs().max()  # in [-1, 1]
    stroke_angle = 2 * math.pi * torch.rand((), generator=g)
    across = x * stroke_angle.cos() + y * stroke_angle.sin()
    strokes = torch.sin(2 * math.pi * STROKES_PER_IMAGE * across + SWIRL * 2 * field)
    # The field picks a place on the palette (piecewise linear between its colours).
    palette = torch.tensor(PALETTE).T  # (3, colours)
    position = (field + 1) / 2 * (palette.shape[1] - 1)
    low = position.floor().clamp(max=palette.shape[1] - 2).long()
    weight = position - low
    colour = palette[:, low] * (1 - weight) + palette[:, low + 1] * weight  # (3, H, W)
    return (colour * (1 - STROKE_DEPTH + STROKE_DEPTH * strokes)).clamp(0.0, 1.0)
