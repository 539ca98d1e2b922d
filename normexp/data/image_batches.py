"""Mini-batches of in-memory images: the training hot path, with no DataLoader workers."""

from collections.abc import Iterator, Sequence

import torch

from normexp.data.augment import CIFAR10_MEAN, CIFAR10_STD, normalize, random_crop_flip


class ImageBatches:
    """Iterate over (x float32 (B, C, H, W), y int64 (B,)) batches on `device`.

    Each pass (epoch) draws a fresh order from `generator` when `shuffle`, and fresh crops and
    flips when `augment`. Padding for crops is black (0 before normalisation), as in the usual
    torchvision pipeline.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        shuffle: bool,
        augment: bool,
        drop_last: bool,
        generator: torch.Generator | None = None,
        mean: torch.Tensor | Sequence[float] = CIFAR10_MEAN,
        std: torch.Tensor | Sequence[float] = CIFAR10_STD,
        padding: int = 4,
        device: torch.device | str | None = None,
    ) -> None:
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(
                f"images must be uint8 (N, C, H, W), got {images.dtype} {images.shape}"
            )
        if labels.shape != images.shape[:1]:
            raise ValueError(f"{labels.numel()} labels for {images.shape[0]} images")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        device = torch.device(device) if device is not None else images.device
        # Kept as uint8 and normalised per batch, after the crop: the gather moves a quarter of
        # the bytes, and no float copy of the whole set (600 MB for CIFAR-10's 50k) is made up
        # front. Black padding is uint8 0, which normalises to the same value as padding after
        # normalising would (-mean/std), so the batches are identical either way.
        self.x = images.to(device)
        self.y = labels.to(device=device, dtype=torch.int64)
        self.mean, self.std = mean, std
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.drop_last = drop_last
        self.padding = padding
        if generator is None and (shuffle or augment):
            # Seeded from the global RNG so that torch.manual_seed still makes runs repeatable.
            generator = torch.Generator().manual_seed(int(torch.randint(2**62, (1,))))
        self.generator = generator

    def __len__(self) -> int:
        n = self.x.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.x.shape[0]
        order = None
        if self.shuffle:
            g = self.generator
            order = torch.randperm(n, generator=g, device=g.device).to(self.x.device)
        for b in range(len(self)):
            lo, hi = b * self.batch_size, min((b + 1) * self.batch_size, n)
            if order is None:
                x, y = self.x[lo:hi], self.y[lo:hi]
            else:
                idx = order[lo:hi]
                x, y = self.x.index_select(0, idx), self.y.index_select(0, idx)
            if self.augment:
                x = random_crop_flip(x, self.padding, self.generator)
            yield normalize(x, self.mean, self.std), y
