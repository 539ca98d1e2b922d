"""The CIFAR-10 images of a run, shared by the classification and image-to-image tasks."""

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from normexp.data.cifar10 import Cifar10, load_cifar10
from normexp.data.image_batches import ImageBatches
from normexp.data.paths import resolve_data_dir
from normexp.data.splits import stratified_subset, train_val_split


@dataclass(frozen=True)
class CifarSplits:
    """Training and validation indices into CIFAR-10's training images (per seed), and test
    indices into its test images (the same for every run)."""

    cifar: Cifar10
    train_idx: torch.Tensor
    val_idx: torch.Tensor
    test_idx: torch.Tensor

    @classmethod
    def of_run(cls, cfg: Mapping) -> "CifarSplits":
        data = cfg["data"]
        cifar = load_cifar10(
            resolve_data_dir(cfg["paths"]["data_dir"]), data["download"], data["verify"]
        )
        train_idx, val_idx = train_val_split(
            cifar.train_y, data["n_train"], data["n_val"], seed=cfg["seed"]
        )
        test_idx = (
            torch.arange(len(cifar.test_y))
            if data["n_test"] is None
            else stratified_subset(cifar.test_y, data["n_test"], seed=0)  # same for all runs
        )
        return cls(cifar, train_idx, val_idx, test_idx)

    def train_batches(
        self,
        device: torch.device,
        batch_size: int,
        augment: bool,
        generator: torch.Generator,
        **pixels: tuple[float, float, float],
    ) -> ImageBatches:
        """Shuffled training batches (``pixels``: the mean / std of ImageBatches)."""
        return ImageBatches(
            self.cifar.train_x[self.train_idx].to(device),
            self.cifar.train_y[self.train_idx].to(device),
            batch_size,
            shuffle=True,
            augment=augment,
            drop_last=True,
            generator=generator,
            **pixels,
        )

    def sizes(self) -> dict[str, int]:
        return {
            "n_train": len(self.train_idx),
            "n_val": len(self.val_idx),
            "n_test": len(self.test_idx),
        }
