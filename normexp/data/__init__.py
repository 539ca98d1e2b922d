"""Datasets (CIFAR-10, Penn Treebank), splits, augmentation and in-memory batching."""

from normexp.data.augment import CIFAR10_MEAN, CIFAR10_STD, normalize, random_crop_flip
from normexp.data.cifar10 import Cifar10, load_cifar10
from normexp.data.image_batches import ImageBatches
from normexp.data.paths import resolve_data_dir
from normexp.data.ptb import PTBCorpus, Vocabulary, batchify, bptt_windows, load_ptb
from normexp.data.splits import stratified_subset, train_val_split

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "Cifar10",
    "ImageBatches",
    "PTBCorpus",
    "Vocabulary",
    "batchify",
    "bptt_windows",
    "load_cifar10",
    "load_ptb",
    "normalize",
    "random_crop_flip",
    "resolve_data_dir",
    "stratified_subset",
    "train_val_split",
]
