"""Per-epoch checkpoints, so a killed run resumes from its last finished epoch."""

import os
from pathlib import Path

import torch


def save_checkpoint(path: Path, state: dict) -> None:
    """Atomic: a reader sees the previous checkpoint or this one, never half of one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path | None) -> dict | None:
    if path is None or not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - a damaged checkpoint means starting over, not failing
        return None
