"""Device, threads and seeds: everything that makes a run reproducible on its hardware."""

import contextlib
import os
import random
import sys
from collections.abc import Mapping

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
    if deterministic:
        # cuBLAS is deterministic only with a fixed workspace, set before its first use.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # Deterministic kernels on the CPU cost nothing measurable; on CUDA they forbid cuDNN's
    # autotuning (benchmark), which picks kernels by timing and so can differ between runs.
    deterministic_kernels(deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic


def deterministic_kernels(on: bool) -> None:
    """``torch.use_deterministic_algorithms(on, warn_only=True)`` without its import of
    inductor's config, a second of CPU in every run's process that never compiles. Inductor
    takes the same choice from its environment variable when a compile imports it, or from its
    config once it is loaded."""
    torch.set_deterministic_debug_mode("warn" if on else "default")
    os.environ["TORCHINDUCTOR_DETERMINISTIC"] = "1" if on else "0"
    if (inductor := sys.modules.get("torch._inductor.config")) is not None:
        inductor.deterministic = on


def check_amp(train: Mapping) -> None:
    """Config-time rules of ``train.amp``. They never look at this machine's hardware: a SLURM
    sweep is validated on a login node that has no GPU."""
    amp = train.get("amp", False)
    if not isinstance(amp, bool):
        raise ConfigError("train.amp", f"{amp!r} is not allowed; must be true or false")
    if amp and train["device"] == "cpu":
        raise ConfigError("train.amp", "bf16 autocast is CUDA-only; use false with device=cpu")


def autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """The context of the training forward pass and loss: bf16 autocast when ``amp`` (CUDA only;
    bf16 needs no loss scaling), else nothing. Refused rather than ignored on another device:
    the run key says amp, so fp32 numbers must not be stored under it."""
    if not amp:
        return contextlib.nullcontext()
    if device.type != "cuda":
        raise ConfigError(
            "train.amp",
            f"bf16 autocast is CUDA-only and this run's device is {device.type}; "
            "set train.amp=false or run it where a GPU is visible",
        )
    return torch.autocast("cuda", dtype=torch.bfloat16)


def place_model(model: torch.nn.Module, device: torch.device, runtime: Mapping) -> torch.nn.Module:
    """Move the model to the device; with ``runtime.channels_last`` its conv weights go
    channels-last, so every conv (and the norms after it) runs in that layout whatever the
    input's: 1.1-1.8x faster training steps on the CPU (``make bench``, "cpu option"), the same
    math up to float rounding. Dense and recurrent models are unaffected."""
    model = model.to(device)
    if runtime.get("channels_last", False):  # absent in configs stored before it existed
        model = model.to(memory_format=torch.channels_last)
    return model
