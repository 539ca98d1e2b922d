"""Shared fixtures: where the data is, and how to call the suite's commands in a subprocess."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fake_data import write_cifar

from normexp.data import cifar10

REPO = Path(__file__).resolve().parent.parent


def real_data_dir() -> Path | None:
    """The configured real data directory (CI sets NORMEXP_DATA_DIR), if it holds CIFAR-10."""
    configured = os.environ.get("NORMEXP_DATA_DIR")
    if configured and (Path(configured) / cifar10.FOLDER / "data_batch_1").exists():
        return Path(configured)
    return None


@pytest.fixture
def cifar_data(tmp_path_factory) -> tuple[Path, list[str]]:
    """(data dir, extra overrides): the real CIFAR-10 when configured, else a tiny fake copy
    (random pixels; fingerprints cannot match, so verification is switched off for it)."""
    real = real_data_dir()
    if real is not None:
        return real, []
    root = tmp_path_factory.mktemp("fake_cifar")
    write_cifar(root, per_batch=300)
    return root, ["data.verify=false"]


def run_cli(args: list[str], results_dir: Path, data_dir: Path, timeout: int = 600):
    """Run ``python -m <args>`` from the repo root with the store and Hydra logs under tmp."""
    env = {**os.environ, "NORMEXP_RESULTS_DIR": str(results_dir), "NORMEXP_DATA_DIR": str(data_dir)}
    env.pop("HYDRA_FULL_ERROR", None)
    env.pop("NORMEXP_VERBOSE", None)
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
