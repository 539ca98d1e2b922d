"""Turn a composed Hydra config into a validated plain dict, refusing bad input in one line."""

from collections.abc import Mapping
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from normexp.errors import ConfigError
from normexp.models import check_model
from normexp.tracking.wandb_mirror import MODES
from normexp.train.device import DEVICES
from normexp.train.optim import LR_SCALING, OPTIMIZERS, SCHEDULES

PROFILES = ("smoke", "quick", "paper")
TASKS = ("classification",)


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
    return config


def _choice(field: str, value: object, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(field, f"unknown {value!r}; allowed: {', '.join(map(str, allowed))}")


def _int(field: str, value: object, minimum: int = 1, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        none = " or null" if allow_none else ""
        raise ConfigError(field, f"{value!r} is not allowed; must be an integer >= {minimum}{none}")


def _number(field: str, value: object, minimum: float = 0.0, strict: bool = False) -> None:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if not ok or value < minimum or (strict and value == minimum):
        op = ">" if strict else ">="
        raise ConfigError(field, f"{value!r} is not allowed; must be a number {op} {minimum}")


def check_config(c: Mapping) -> None:
    """Every rule a single run's config must satisfy, each naming its field."""
    _choice("profile", c["profile"], PROFILES)
    _int("seed", c["seed"], minimum=0)
    data, train, optim = c["data"], c["train"], c["optim"]
    _choice("data.name", data["name"], ("cifar10",))
    _int("data.n_train", data["n_train"], allow_none=True)
    _int("data.n_val", data["n_val"])
    _int("data.n_test", data["n_test"], allow_none=True)
    _choice("train.task", train["task"], TASKS)
    _int("train.epochs", train["epochs"])
    _int("train.batch_size", train["batch_size"])
    _int("train.eval_batch_size", train["eval_batch_size"])
    _choice("train.device", train["device"], DEVICES)
    _choice("optim.name", optim["name"], OPTIMIZERS)
    _number("optim.lr_per_128", optim["lr_per_128"], strict=True)
    _choice("optim.lr_scaling", optim["lr_scaling"], LR_SCALING)
    _choice("optim.schedule", optim["schedule"], SCHEDULES)
    _number("optim.weight_decay", optim["weight_decay"])
    _number("optim.warmup_frac", optim["warmup_frac"])
    if optim["warmup_frac"] >= 1:
        raise ConfigError("optim.warmup_frac", f"{optim['warmup_frac']} must be < 1")
    _choice("tracking.mode", c["tracking"]["mode"], MODES)
    _int("runtime.threads", c["runtime"]["threads"])
    check_model(c["model"], c["norm"], train["batch_size"])
