"""Turn a composed Hydra config into a validated plain dict, refusing bad input in one line."""

import os
from collections.abc import Mapping
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from normexp.errors import ConfigError
from normexp.tasks import get_task
from normexp.tracking.wandb_mirror import MODES
from normexp.train.device import DEVICES, check_amp
from normexp.train.optim import LR_SCALING, OPTIMIZERS, SCHEDULES
from normexp.validate_fields import check_choice, check_int, check_number

PROFILES = ("smoke", "quick", "paper")


def resolve_config(cfg: DictConfig) -> dict:
    """Resolved, validated, plain config; ``paths`` made absolute."""
    # Hydra's own node is left out: it holds per-job values that are unset outside a job.
    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
    try:
        config = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "config"
        raise ConfigError(str(key), str(exc).splitlines()[0]) from None
    check_config(config)
    paths = config["paths"]
    paths["results_dir"] = str(Path(paths["results_dir"]).expanduser().resolve())
    check_writable("paths.results_dir", Path(paths["results_dir"]))
    return config


def check_writable(field: str, path: Path) -> None:
    """The folder exists and is writable, or could be created: checked without writing."""
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(field, f"cannot create {path}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(field, f"cannot write to {probe} (permission denied)")


def check_config(c: Mapping) -> None:
    """Every rule a single run's config must satisfy, each naming its field."""
    check_choice("profile", c["profile"], PROFILES)
    check_int("seed", c["seed"], minimum=0)
    train, optim = c["train"], c["optim"]
    task = get_task(train["task"])
    check_int("train.epochs", train["epochs"])
    check_int("train.batch_size", train["batch_size"])
    check_int("train.eval_batch_size", train["eval_batch_size"])
    check_choice("train.device", train["device"], DEVICES)
    check_amp(train)
    if train.get("amp") and not task.amp:
        raise ConfigError("train.amp", f"not supported by task {train['task']!r}; allowed: false")
    check_choice("optim.name", optim["name"], OPTIMIZERS)
    check_number("optim.lr_per_128", optim["lr_per_128"], strict=True)
    check_choice("optim.lr_scaling", optim["lr_scaling"], LR_SCALING)
    check_choice("optim.schedule", optim["schedule"], SCHEDULES)
    check_number("optim.weight_decay", optim["weight_decay"])
    check_number("optim.l1", optim.get("l1", 0.0))
    check_number("optim.warmup_frac", optim["warmup_frac"])
    if optim["warmup_frac"] >= 1:
        raise ConfigError("optim.warmup_frac", f"{optim['warmup_frac']} must be < 1")
    check_choice("tracking.mode", c["tracking"]["mode"], MODES)
    check_int("runtime.threads", c["runtime"]["threads"])
    check_choice("runtime.channels_last", c["runtime"].get("channels_last", False), (True, False))
    task.check(c)
