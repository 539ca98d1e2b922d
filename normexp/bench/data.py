"""The suite's in-memory data pipeline vs torchvision's CIFAR10 + DataLoader with PIL transforms,
doing the same augmentation (random crop with 4-pixel padding, horizontal flip, normalize)."""

import time
from pathlib import Path

import torch

from normexp.data.augment import CIFAR10_MEAN, CIFAR10_STD
from normexp.data.cifar10 import clear_cache, load_cifar10
from normexp.data.image_batches import ImageBatches


def augmented_batches(data_dir: Path, n: int, batch_size: int, drop_last: bool) -> ImageBatches:
    """One shuffled, augmented epoch over the first ``n`` training images, as the suite trains."""
    cifar = load_cifar10(data_dir, download=False, verify=False)
    return ImageBatches(
        cifar.train_x[:n],
        cifar.train_y[:n],
        batch_size,
        shuffle=True,
        augment=True,
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(0),
    )


def ours_images_per_s(data_dir: Path, n: int, batch_size: int = 128) -> float:
    """Load (unpickle into uint8 tensors) + normalize + augment one epoch of ``n`` images."""
    clear_cache()  # count the load, as torchvision's dataset does in its constructor
    t0 = time.perf_counter()
    batches = augmented_batches(data_dir, n, batch_size, drop_last=False)
    seen = sum(len(y) for _, y in batches)
    return seen / (time.perf_counter() - t0)


def torchvision_images_per_s(data_dir: Path, n: int, batch_size: int = 128) -> float:
    """The same epoch through torchvision.datasets.CIFAR10 + DataLoader (PIL transforms)."""
    import torchvision  # the reference pipeline only
    import torchvision.transforms as T
    from torch.utils.data import DataLoader, Subset

    class CIFAR10(torchvision.datasets.CIFAR10):
        # This project's copy is verified by content (see normexp.data.cifar10), not file md5.
        def _check_integrity(self) -> bool:
            return True

    transform = T.Compose(
        [
            T.RandomCrop(32, padding=4),
            T.RandomHorizontalFlip(),
            T.ToTensor(),
            T.Normalize(CIFAR10_MEAN, CIFAR10_STD),
        ]
    )
    t0 = time.perf_counter()
    dataset = Subset(CIFAR10(str(data_dir), train=True, transform=transform), range(n))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0)
    seen = sum(len(y) for _, y in loader)
    return seen / (time.perf_counter() - t0)


def bench_data(data_dir: Path, n: int = 50_000, repeats: int = 2) -> list[dict]:
    """One CIFAR-10 training epoch (all 50,000 images) each way, loading included."""
    ours, theirs = [], []
    load_cifar10(data_dir, download=False, verify=False)  # both read from a warm page cache
    for _ in range(repeats):  # interleaved, best of each
        ours.append(ours_images_per_s(data_dir, n))
        theirs.append(torchvision_images_per_s(data_dir, n))
    ratio = max(ours) / max(theirs)
    return [
        {
            "bench": "data epoch",
            "name": f"{n} images, b=128",
            "reference": "torchvision+PIL",
            "ours": f"{max(ours):,.0f} img/s",
            "reference_value": f"{max(theirs):,.0f} img/s",
            "ratio": ratio,
            "target": ">= 10",
            "meets_target": ratio >= 10,
        }
    ]
