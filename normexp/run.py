"""Entry point: ``python -m normexp.run [-m] [experiment=<claim>] [overrides...]``.

One job = one run: resolve and validate the config, skip it if the store already holds it
finished, else train it, write the store and mirror it to W&B. With ``-m`` the grid in the
experiment file is swept by the launcher (local processes by default, SLURM on request).
Every Hydra flag works as Hydra documents it (``--cfg``, ``--info``, ``-sc``, ``--help``...);
before a run or sweep starts, the composed config is checked (one line per mistake, exit 2).
A single run that fails in training is recorded as failed and exits 1.
"""

import contextlib
import sys
from pathlib import Path

import hydra
from hydra import initialize_config_dir
from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from normexp import stopping
from normexp.console import ProgressSlot, launcher_workers, log_above_bars
from normexp.errors import one_line_errors
from normexp.job import run_job
from normexp.validate import check_hydra, composition_errors, resolve_config

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
CONFIG_NAME = "config"


def progress_slot() -> ProgressSlot | None:
    """The terminal row of this job's progress bar in a sweep (row 0 is the sweep's; rows
    1..workers are handed out among the running jobs); None for a single run (row 0)."""
    hc = HydraConfig.get()
    if hc.mode is None or hc.mode.name != "MULTIRUN":
        return None
    # Bars show on a terminal only: elsewhere (SLURM, logs) no lock files are needed.
    rows = Path(hc.sweep.dir) / ".progress_rows" if sys.stderr.isatty() else None
    return ProgressSlot(rows, launcher_workers(hc.launcher, 1 << 16))


@hydra.main(version_base="1.3", config_path="../configs", config_name=CONFIG_NAME)
def main(cfg: DictConfig) -> dict | None:
    log_above_bars()  # after Hydra set up this job's logging
    slot = progress_slot()
    with one_line_errors(), slot or contextlib.nullcontext(0) as row:
        summary = run_job(cfg, row, in_sweep=slot is not None)
    if slot is None and summary is not None and summary.get("status") == "failed":
        # Recorded in the store (status.json holds the error); the exit status says so too.
        # In a sweep the closing count does this for every job.
        print(
            "normexp: the run failed (traceback above, recorded in its status.json); "
            "rerun the same command to retry it",
            file=sys.stderr,
        )
        raise SystemExit(1)
    return summary


def preflight(argv: list[str], config_dir: Path = CONFIG_DIR) -> None:
    """Parse the command line as Hydra does, and when it runs jobs, compose the config it will
    run and refuse a mistake in one line before Hydra starts (and before any job): an unknown
    key, option or unparsable value, Hydra settings the suite cannot run under and, for a single
    run, every rule of the run's config. A sweep's jobs are checked by the sweep callback."""
    args = get_args_parser().parse_args(argv)
    shows_only = args.help or args.hydra_help or args.cfg or args.info or args.shell_completion
    if shows_only or args.experimental_rerun or args.config_path or args.config_dir:
        return  # Hydra's own business: it prints, or reads configs from elsewhere
    mode = RunMode.MULTIRUN if args.multirun else RunMode.RUN
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        with composition_errors():
            cfg = GlobalHydra.instance().hydra.compose_config(
                args.config_name or CONFIG_NAME, args.overrides, run_mode=mode
            )
        check_hydra(cfg)
        if mode == RunMode.RUN:
            resolve_config(cfg)


def cli() -> None:
    """The command: pre-flight checks in one line each, then Hydra. Ctrl-C and SIGTERM stop it
    at any moment with 130 / 143, leaving no worker and no run lock (normexp.stopping)."""
    stopping.install()
    with one_line_errors():
        preflight(sys.argv[1:])
    main()


if __name__ == "__main__":
    cli()
