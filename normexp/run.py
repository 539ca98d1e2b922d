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
    with one_line_errors():
        return run_job(cfg, progress_slot())


if __name__ == "__main__":
    with one_line_errors():
        check_group_choices(sys.argv[1:])
    main()
