"""Turn a composed Hydra config into a validated plain dict, refusing bad input in one line."""

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException, ValidationError

from normexp import schema
from normexp.errors import ConfigError, did_you_mean
from normexp.tasks import check_task_groups, get_task
from normexp.train.device import check_amp

_ABSENT = object()


def resolve_config(cfg: DictConfig, machine: bool = True) -> dict:
    """Resolved, validated, plain config; ``paths`` made absolute. With ``machine`` it is also
    checked against this machine (CPU count, GPU): off where the jobs run elsewhere (SLURM)."""
    for path in schema.KEY_FIELDS:
        with contextlib.suppress(OmegaConfBaseException):  # absent or unresolvable: see below
            value = OmegaConf.select(cfg, path, default=_ABSENT, throw_on_missing=True)
            if value is not _ABSENT:
                schema.field(path).check(value)
    check_task_groups(*(_raw(cfg, key) for key in ("train.task", "model.name", "data.name")))
    try:
        config = _resolved_without_hydra(cfg)
    except OmegaConfBaseException as exc:
        key = getattr(exc, "full_key", None) or "config"
        raise ConfigError(str(key), str(exc).splitlines()[0]) from None
    check_config(config)
    if machine:
        check_machine(config)
    paths = config["paths"]
    paths["results_dir"] = str(Path(paths["results_dir"]).expanduser().resolve())
    check_writable("paths.results_dir", Path(paths["results_dir"]))
    return config


def _resolved_without_hydra(cfg: DictConfig) -> dict:
    """The config as plain values, resolved. Hydra's own node is left out: it holds per-job
    values that are unset outside a job. Key by key, not a masked copy: copying costs as much
    as resolving, and no key outside Hydra's refers into it."""
    config = {}
    for key in cfg:
        if key != "hydra":
            value = cfg[key]
            if OmegaConf.is_config(value):
                value = OmegaConf.to_container(value, resolve=True, throw_on_missing=True)
            config[key] = value
    return config


def _raw(cfg: DictConfig, key: str) -> object:
    """A value before resolution (None if absent or not a plain value)."""
    with contextlib.suppress(OmegaConfBaseException):
        return OmegaConf.select(cfg, key, default=None, throw_on_missing=False)
    return None


def check_writable(field: str, path: Path) -> None:
    """The folder exists and is writable, or could be created: checked without writing."""
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(field, f"cannot create {path}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        read_only = os.statvfs(probe).f_flag & os.ST_RDONLY
        why = "Read-only file system" if read_only else "Permission denied"
        raise ConfigError(field, f"cannot write {probe}: {why}")


def check_config(c: Mapping) -> None:
    """Every rule a single run's config must satisfy, each naming its field: the schema's
    per-field types and ranges first, then the rules that tie fields together."""
    schema.validate(c)
    train, optim = c["train"], c["optim"]
    task = get_task(train["task"])
    check_amp(train)
    if train.get("amp") and not task.amp:
        raise ConfigError("train.amp", f"not supported by task {train['task']!r}; allowed: false")
    if optim.get("nesterov") and optim.get("momentum") == 0:
        raise ConfigError("optim.nesterov", "Nesterov momentum needs optim.momentum > 0")
    task.check(c)


def check_machine(c: Mapping) -> None:
    """What this machine can run: threads up to its CPU count, a GPU for train.device=cuda."""
    cpus = os.cpu_count() or 1
    threads = c["runtime"]["threads"]
    if threads > cpus:
        raise ConfigError(
            "runtime.threads",
            f"{threads} is not allowed; must be an integer from 1 to {cpus} (this machine's CPUs)",
        )
    if c["train"]["device"] == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device", "cuda requested but no GPU is visible; use auto or cpu")


def check_hydra(cfg: DictConfig) -> None:
    """The Hydra settings of the composed config that a run depends on (schema.HYDRA_FIELDS)."""
    hydra = cfg.hydra
    node: dict = {"job": {"chdir": hydra.job.get("chdir")}}
    if "n_jobs" in hydra.launcher:
        node["launcher"] = {"n_jobs": hydra.launcher.n_jobs}
    schema.validate_hydra(node)


def runs_remotely(cfg: DictConfig) -> bool:
    """Jobs run on other machines (SLURM): this one's CPUs and GPU say nothing about them."""
    return "SlurmLauncher" in str(cfg.hydra.launcher.get("_target_", ""))


@contextlib.contextmanager
def composition_errors() -> Iterator[None]:
    """Hydra's errors while composing a config (unknown key or option, unparsable override),
    turned into one ConfigError line naming the setting."""

    try:
        yield
    except OverrideParseException as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError("override", f"cannot parse {exc.override!r}: {first}") from None
    except MissingConfigException as exc:
        group, _, choice = (exc.missing_cfg_file or "").rpartition("/")
        if group and exc.options:
            allowed = ", ".join(sorted(exc.options))
            near = did_you_mean(choice, exc.options)
            raise ConfigError(group, f"unknown {choice!r}{near}; allowed: {allowed}") from None
        message = " ".join(str(exc).split("Config search path")[0].split())
        raise ConfigError("override", message) from None
    except ValueError as exc:  # e.g. a config group set to null: group=null
        raise ConfigError("override", str(exc).splitlines()[0]) from None
    except ConfigCompositionException as exc:
        cause = exc.__cause__
        key = getattr(cause, "full_key", None)
        if isinstance(cause, ValidationError) and key:  # a typed (Hydra) setting
            field = schema.field(str(key))
            wanted = f"; must be {field.allowed()}" if field else ""
            raise ConfigError(str(key), str(cause).splitlines()[0] + wanted) from None
        message = str(exc).splitlines()[0]
        key = message.split("'")[1] if message.count("'") >= 2 else "override"
        if message.startswith("Ambiguous value"):
            raise ConfigError(
                "override", f"{key!r} lists several values: add -m to sweep them, or quote it"
            ) from None
        if not message.startswith("Could not override"):
            raise ConfigError("override", message) from None
        near = did_you_mean(key, [f.path for f in schema.fields()])
        if near:  # a typo of a setting that exists: adding a new key is the wrong fix
            raise ConfigError(key, f"no such setting{near}") from None
        raise ConfigError(key, f"no such setting; to add a new one use +{key}=...") from None
