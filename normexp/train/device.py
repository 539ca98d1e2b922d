"""Device, threads and seeds: everything that makes a run reproducible on its hardware."""

import random

import numpy as np
import torch

from normexp.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device", "cuda requested but no GPU is visible; use auto or cpu")
    if name not in DEVICES:
        raise ConfigError("train.device", f"unknown {name!r}; allowed: {', '.join(DEVICES)}")
    return torch.device(name)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    # Deterministic kernels on the CPU cost nothing measurable; on CUDA they forbid autotuning.
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic
