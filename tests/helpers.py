"""Plain helpers shared by tests/unit and tests/e2e (fixtures live in tests/conftest.py): where
the repository, its configs and the real data are, and how to call a command in a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

from normexp.data import cifar10, ptb
from normexp.data.paths import resolve_data_dir

REPO = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO / "configs"


def real_data_dir() -> Path | None:
    """The configured real data directory (CI sets NORMEXP_DATA_DIR), if it holds CIFAR-10."""
    configured = os.environ.get("NORMEXP_DATA_DIR")
    if configured and (Path(configured) / cifar10.FOLDER / "data_batch_1").exists():
        return Path(configured)
    return None


def real_ptb() -> Path | None:
    """The configured real data directory, if it holds Penn Treebank."""
    if not os.environ.get("NORMEXP_DATA_DIR"):
        return None
    path = resolve_data_dir(None)
    return path if (path / ptb.FOLDER / "ptb.char.train.txt").is_file() else None


def cli_env(results_dir: Path, data_dir: Path) -> dict[str, str]:
    """The environment of a command under test: the store and the data under tmp, and none of
    the developer's verbosity switches (the tests read the one-line errors)."""
    env = {**os.environ, "NORMEXP_RESULTS_DIR": str(results_dir), "NORMEXP_DATA_DIR": str(data_dir)}
    env.pop("HYDRA_FULL_ERROR", None)
    env.pop("NORMEXP_VERBOSE", None)
    return env


def run_cli(args: list[str], results_dir: Path, data_dir: Path, timeout: int = 600):
    """Run ``python -m <args>`` from the repo root with the store and Hydra logs under tmp."""
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO,
        env=cli_env(results_dir, data_dir),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
