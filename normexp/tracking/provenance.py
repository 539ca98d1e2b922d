"""Where a result came from: code commit, library versions, machine."""

import functools
import platform
import subprocess
from pathlib import Path

import torch


@functools.cache
def code_commit() -> str:
    """The git commit of the suite's code, with ``+dirty`` when it has uncommitted changes."""
    repo = Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                "normexp",
                "configs",
                "experiments",
            ],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def provenance(device: str) -> dict:
    return {
        "commit": code_commit(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "host": platform.node(),
        "device": device,
        "cpu_threads": torch.get_num_threads(),
    }
