"""Per-epoch checkpoints, so a killed run resumes from its last finished epoch."""

import io
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from tqdm import tqdm


def save_checkpoint(path: Path, state: dict) -> None:
    """Atomic: a reader sees the previous checkpoint or this one, never half of one."""
    buffer = io.BytesIO()
    torch.save(state, buffer)  # in memory: torch's own file writer hides a full disk's errno
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(buffer.getbuffer())
        os.replace(tmp, path)
    except OSError as exc:  # a full disk: the previous checkpoint stays, no partial copy
        tmp.unlink(missing_ok=True)
        exc.filename = exc.filename or str(path)
        raise


def load_checkpoint(path: Path | None) -> dict | None:
    if path is None or not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception:  # noqa: BLE001 - a damaged checkpoint means starting over, not failing
        return None


class TrainingState:
    """What a killed run needs to resume after its last finished epoch: its stateful objects
    (anything with state_dict/load_state_dict, or a torch.Generator), the global RNG, the epoch
    history and the time spent so far. Saved after every epoch when a checkpoint path is given."""

    def __init__(self, checkpoint: Path | None, **stateful: object) -> None:
        self.checkpoint = checkpoint
        self.stateful = {k: v for k, v in stateful.items() if v is not None}
        self.history: list[dict] = []
        self.resumed_at = 0
        self._elapsed_before = 0.0
        self._start = time.perf_counter()

    @property
    def elapsed_s(self) -> float:
        return self._elapsed_before + time.perf_counter() - self._start

    def resume(self, log_epoch: Callable[[dict], None]) -> None:
        """Restore the last checkpoint, if any, and re-log the epochs it holds."""
        saved = load_checkpoint(self.checkpoint)
        if saved is None:
            return
        for name, obj in self.stateful.items():
            if isinstance(obj, torch.Generator):
                obj.set_state(saved[name])
            else:
                obj.load_state_dict(saved[name])
        torch.set_rng_state(saved["torch_rng"])
        self.history, self._elapsed_before = list(saved["history"]), saved["elapsed_s"]
        self.resumed_at = len(self.history)
        for metrics in self.history:
            log_epoch(metrics)

    def end_epoch(self, metrics: dict, log_epoch: Callable[[dict], None]) -> None:
        self.history.append(metrics)
        log_epoch(metrics)
        if self.checkpoint is None:
            return
        state = {
            name: obj.get_state() if isinstance(obj, torch.Generator) else obj.state_dict()
            for name, obj in self.stateful.items()
        }
        state.update(
            torch_rng=torch.get_rng_state(), history=self.history, elapsed_s=self.elapsed_s
        )
        save_checkpoint(self.checkpoint, state)


def progress_bar(cfg: Mapping, total: int, position: int, desc: str = "") -> tqdm:
    """One bar per run (steps), shown on a terminal only, on its own row in a sweep."""
    return tqdm(
        total=total,
        desc=desc or f"{cfg['norm']['name']} b={cfg['train']['batch_size']} s={cfg['seed']}",
        position=position,
        leave=False,
        disable=None if cfg["runtime"]["progress"] else True,
        mininterval=1.0,
    )
