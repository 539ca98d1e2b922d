"""Optimizer and learning-rate schedule.

The learning rate is stated per 128 examples and scaled to the batch size by a stated rule, so
one config means the same thing at every batch size.
"""

import math
from collections.abc import Mapping

import torch
from torch import nn

from normexp.errors import ConfigError
from normexp.norms.weight_side import WEIGHT_NORM_GAIN

LR_SCALING = ("linear", "sqrt", "none")
SCHEDULES = ("onecycle", "cosine", "constant")
OPTIMIZERS = ("sgd", "adam")
FUSED_DEVICES = ("cpu", "cuda")  # where torch.optim.SGD(fused=True) runs


def scaled_lr(lr_per_128: float, batch_size: int, rule: str) -> float:
    ratio = batch_size / 128
    if rule == "linear":
        return lr_per_128 * ratio
    if rule == "sqrt":
        return lr_per_128 * math.sqrt(ratio)
    if rule == "none":
        return lr_per_128
    raise ConfigError("optim.lr_scaling", f"unknown {rule!r}; allowed: {', '.join(LR_SCALING)}")


def parameter_groups(model: nn.Module, weight_decay: float, decay_norm_and_bias: bool) -> list:
    """Weight decay on weight matrices/filters only, unless norm parameters are asked for too.

    One-dimensional parameters are the norms' γ, β and the layers' biases, and weight norm's g is
    a scale too; decaying them would shrink the scale that normalization just fixed, which is a
    different method.
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        is_scale_or_shift = p.ndim <= 1 or name.endswith(WEIGHT_NORM_GAIN)
        (no_decay if is_scale_or_shift and not decay_norm_and_bias else decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def peak_lr(optim: Mapping, batch_size: int) -> float:
    """The run's peak learning rate: lr_per_128 scaled to the batch by optim.lr_scaling, times
    optim.lr_mult (the multiplier the LR protocol selects; absent in older configs: 1)."""
    # x 1.0 is exact in floating point: runs without a multiplier keep their LR to the bit
    return scaled_lr(optim["lr_per_128"], batch_size, optim["lr_scaling"]) * optim.get(
        "lr_mult", 1.0
    )


def build_optimizer(
    model: nn.Module, optim: Mapping, batch_size: int, fused: bool = False
) -> torch.optim.Optimizer:
    """The run's optimizer. ``fused`` (``runtime.fused_sgd``): SGD's update as one fused kernel
    per parameter (weight decay, momentum, Nesterov and the step in one pass over its memory)
    instead of PyTorch's per-parameter loop of separate ops: the same update up to float32
    rounding, much faster where the step is the optimizer's pass over large weights (the MLP's
    first layer at small batches: `make bench`, section sgd). Only on the devices PyTorch fuses
    SGD on (CPU, CUDA); Adam is never fused here."""
    lr = peak_lr(optim, batch_size)
    groups = parameter_groups(model, optim["weight_decay"], optim["decay_norm_and_bias"])
    if optim["name"] == "sgd":
        fuse = fused and all(p.device.type in FUSED_DEVICES for p in model.parameters())
        return torch.optim.SGD(
            groups,
            lr=lr,
            momentum=optim["momentum"],
            nesterov=optim["nesterov"],
            **({"fused": True} if fuse else {}),
        )
    if optim["name"] == "adam":
        return torch.optim.Adam(groups, lr=lr)
    raise ConfigError("optim.name", f"unknown {optim['name']!r}; allowed: {', '.join(OPTIMIZERS)}")


def lr_factor(step: int, total_steps: int, schedule: str, warmup_frac: float) -> float:
    """Multiplier of the peak learning rate at ``step`` (0-based) of ``total_steps``."""
    if schedule not in SCHEDULES:
        raise ConfigError(
            "optim.schedule", f"unknown {schedule!r}; allowed: {', '.join(SCHEDULES)}"
        )
    warmup = max(1, round(warmup_frac * total_steps)) if warmup_frac > 0 else 0
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    if schedule == "onecycle":  # linear warm-up then linear decay to zero (airbench-style)
        return max(0.0, 1.0 - progress)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return 1.0  # constant


def build_scheduler(
    optimizer: torch.optim.Optimizer, optim: Mapping, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    lr_factor(0, total_steps, optim["schedule"], optim["warmup_frac"])  # validate the name now
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_factor(s, total_steps, optim["schedule"], optim["warmup_frac"]),
    )


def training_steps(train: Mapping, steps_per_epoch: int) -> int:
    """The run's budget in optimizer steps: train.steps when set (the budget in steps), else
    train.epochs whole epochs. The schedule spans exactly this many steps."""
    steps = train.get("steps")  # absent in configs stored before it existed
    return steps if steps is not None else train["epochs"] * steps_per_epoch


def training_epochs(train: Mapping, steps_per_epoch: int) -> int:
    """Epochs the budget takes (with train.steps, the last one may be cut short)."""
    return math.ceil(training_steps(train, steps_per_epoch) / steps_per_epoch)


def build_optimizer_and_scheduler(
    model: nn.Module, cfg: Mapping, steps_per_epoch: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """The optimizer of a run and its schedule over all of its training steps."""
    fused = cfg["runtime"].get("fused_sgd", False)  # absent in configs stored before it existed
    optimizer = build_optimizer(model, cfg["optim"], cfg["train"]["batch_size"], fused)
    total_steps = training_steps(cfg["train"], steps_per_epoch)
    return optimizer, build_scheduler(optimizer, cfg["optim"], total_steps)
