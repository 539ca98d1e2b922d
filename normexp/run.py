"""Entry point: ``python -m normexp.run [-m] [experiment=<claim>] [overrides...]``.

One job = one run: resolve and validate the config, skip it if the store already holds it
finished, else train it, write the store and mirror it to W&B. With ``-m`` the grid in the
experiment file is swept by the launcher (local processes by default, SLURM on request).
"""

import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from normexp.errors import ConfigError, one_line_errors
from normexp.job import run_job

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


def check_group_choices(argv: list[str], config_dir: Path = CONFIG_DIR) -> None:
    """Unknown config-group options (``norm=foo``) refused in one line before Hydra starts."""
    for arg in argv:
        key, sep, value = arg.lstrip("+~").partition("=")
        group = config_dir / key
        if not sep or key.startswith("hydra") or not group.is_dir() or "(" in value:
            continue
        allowed = sorted(p.stem for p in group.glob("*.yaml"))
        for choice in value.split(","):
            if choice not in allowed and choice != "null":
                raise ConfigError(key, f"unknown {choice!r}; allowed: {', '.join(allowed)}")


def progress_slot() -> int:
    """Terminal row of this job's progress bar: row 0 is the sweep's, then one per worker."""
    hc = HydraConfig.get()
    if hc.mode is None or hc.mode.name != "MULTIRUN":
        return 0
    n_jobs = hc.launcher.get("n_jobs", 1) or 1
    n_jobs = os.cpu_count() or 1 if n_jobs < 0 else n_jobs
    return 1 + hc.job.num % n_jobs


@hydra.main(version_base="1.3", config_path="../configs", config_name="config")
def main(cfg: DictConfig) -> dict | None:
    slot = progress_slot()
    with one_line_errors():
        return run_job(cfg, slot, in_sweep=slot > 0)


# Hydra's own flags whose value is the next argument, not an override.
_FLAGS_WITH_VALUE = {
    "--config-name",
    "-cn",
    "--config-path",
    "-cp",
    "--config-dir",
    "-cd",
    "--info",
    "-i",
    "--package",
    "-p",
    "--experimental-rerun",
}


def overrides_in(argv: list[str]) -> list[str]:
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg.startswith("-"):
            skip = arg in _FLAGS_WITH_VALUE
        else:
            out.append(arg)
    return out


def preflight(argv: list[str], config_dir: Path = CONFIG_DIR) -> None:
    """Compose the config once, taking the first value of every sweep, so that an unknown key or
    an unparsable value is refused in one line before Hydra starts (and before any job)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import (
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
    )

    overrides = overrides_in(argv)
    check_group_choices(overrides, config_dir)
    parser = OverridesParser.create()
    firsts = []
    for arg in overrides:
        try:
            (parsed,) = parser.parse_overrides([arg])
        except OverrideParseException as exc:
            first = str(exc).splitlines()[0]
            raise ConfigError("override", f"cannot parse {arg!r}: {first}") from None
        value = (
            next(iter(parsed.sweep_string_iterator()))
            if parsed.is_sweep_override()
            else parsed.get_value_element_as_str()
        )
        firsts.append(f"{parsed.get_key_element()}={value}")
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            compose("config", overrides=firsts, return_hydra_config=True)
    except ConfigCompositionException as exc:
        message = str(exc).splitlines()[0]
        key = message.split("'")[1] if message.count("'") >= 2 else "override"
        raise ConfigError(key, f"no such setting; to add a new one use +{key}=...") from None
    except MissingConfigException as exc:
        message = " ".join(str(exc).split("Config search path")[0].split())
        raise ConfigError("override", message) from None


def cli() -> None:
    """The command: pre-flight checks in one line each, then Hydra."""
    with one_line_errors():
        preflight(sys.argv[1:])
    main()


if __name__ == "__main__":
    cli()
