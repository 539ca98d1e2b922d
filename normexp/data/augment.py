"""Batched image augmentation and normalisation (whole batches at once, on any device)."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F

CIFAR10_MEAN = (0.49139968, 0.48215841, 0.44653091)
CIFAR10_STD = (0.24703223, 0.24348513, 0.26158784)


def _per_channel(v: torch.Tensor | Sequence[float], like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(v, dtype=torch.float32, device=like.device).reshape(-1, 1, 1)


def normalize(
    x_uint8: torch.Tensor, mean: torch.Tensor | Sequence[float], std: torch.Tensor | Sequence[float]
) -> torch.Tensor:
    """uint8 images (..., C, H, W) in 0..255 -> float32 (x / 255 - mean) / std per channel."""
    x = x_uint8.to(torch.float32)
    mean_t, std_t = _per_channel(mean, x), _per_channel(std, x)
    # One multiply and one add in place: a third fewer passes over the data than /255, -mean, /std.
    return x.mul_(1.0 / (255.0 * std_t)).add_(-mean_t / std_t)


def random_crop_flip(
    x: torch.Tensor,
    padding: int,
    generator: torch.Generator,
    fill: torch.Tensor | Sequence[float] | None = None,
) -> torch.Tensor:
    """Pad a batch (N, C, H, W) by `padding`, crop back to H x W at a random offset per sample,
    and flip each sample horizontally with probability 1/2.

    `fill` is the per-channel padding value (default 0). Random numbers come from `generator`
    on its own device, so results are identical for a given seed whatever device `x` is on.
    """
    n, c, h, w = x.shape
    flat = _pad(x, padding, fill).reshape(n, c, -1)
    wp = w + 2 * padding
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=generator.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=generator.device)
    flip = torch.randint(0, 2, (n,), generator=generator, device=generator.device).bool()
    dy, dx, flip = dy.to(x.device), dx.to(x.device), flip.to(x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)  # (N, H)
    cols = torch.arange(w, device=x.device).expand(n, w)
    cols = dx[:, None] + torch.where(flip[:, None], w - 1 - cols, cols)  # (N, W)
    # One gather over the flattened padded image: out[n, c, i, j] = padded[n, c, rows, cols].
    idx = (rows[:, :, None] * wp + cols[:, None, :]).reshape(n, 1, h * w)
    return flat.gather(2, idx.expand(n, c, h * w)).reshape(n, c, h, w)


def _pad(
    x: torch.Tensor, padding: int, fill: torch.Tensor | Sequence[float] | None
) -> torch.Tensor:
    if fill is None:
        return F.pad(x, (padding,) * 4)
    n, c, h, w = x.shape
    out = _per_channel(fill, x).to(x.dtype).expand(c, h + 2 * padding, w + 2 * padding)
    out = out.expand(n, -1, -1, -1).clone()
    out[:, :, padding : padding + h, padding : padding + w] = x
    return out
