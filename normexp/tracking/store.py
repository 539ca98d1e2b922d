"""Local results store, the source of truth: one folder per run, keyed by its config.

``<results>/runs/<experiment>/<run_key>/`` holds ``config.json`` (resolved), ``metrics.jsonl``
(one line per epoch), ``summary.json`` and ``status.json``. Every file is written atomically
(temporary file, then rename), so a killed job never leaves a half-written record that a later
step would trust; a lock file keeps two workers off the same run.
"""

import contextlib
import hashlib
import json
import os
import socket
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

# Fields that say where output goes or how it is watched, not what is computed.
NON_IDENTITY_FIELDS = ("tracking", "paths", "hydra", "runtime")
FINISHED = ("ok", "diverged")  # a run in one of these states is never trained again
STATUSES = ("running", "ok", "diverged", "failed")
REMOTE_LOCK_STALE_AFTER_S = 6 * 3600  # a lock from another host, untouched this long, is stale


def run_key(config: Mapping) -> str:
    """A stable hash of the resolved config minus output/tracking fields."""
    identity = {k: v for k, v in config.items() if k not in NON_IDENTITY_FIELDS}
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def portable(config: Mapping) -> dict:
    """The config as the store keeps it: the machine's paths left out (they say where a run
    wrote and read, not what it computed, and a committed store must not carry them)."""
    out = dict(config)
    if isinstance(out.get("paths"), Mapping):
        out["paths"] = dict.fromkeys(out["paths"])
    return out


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: object) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class RunLocked(Exception):
    """Another live process holds this run."""


class RunRecord:
    """The store folder of one run."""

    def __init__(self, results_dir: Path, experiment: str, key: str) -> None:
        self.key = key
        self.experiment = experiment
        self.path = Path(results_dir) / "runs" / experiment / key

    @property
    def status(self) -> dict | None:
        return read_json(self.path / "status.json")

    def is_finished(self) -> bool:
        status = self.status
        return status is not None and status.get("status") in FINISHED

    def start(self, config: Mapping) -> None:
        """Begin (or restart) the run: config written, old metrics of an unfinished try dropped,
        and temporary files that a killed writer left behind removed (we hold the lock)."""
        self.path.mkdir(parents=True, exist_ok=True)
        for stray in self.path.glob(".*.tmp"):
            stray.unlink(missing_ok=True)
        atomic_write_json(self.path / "config.json", portable(config))
        atomic_write_text(self.path / "metrics.jsonl", "")
        with contextlib.suppress(FileNotFoundError):
            (self.path / "summary.json").unlink()
        self.write_status("running")

    def append_metrics(self, metrics: Mapping) -> None:
        # Rewritten whole so a reader never sees a torn last line; a run has few epochs.
        path = self.path / "metrics.jsonl"
        old = path.read_text(encoding="utf-8") if path.exists() else ""
        atomic_write_text(path, old + json.dumps(metrics, sort_keys=True) + "\n")

    def heartbeat(self) -> None:
        """Mark the lock as held by a live process (checked from other hosts)."""
        with contextlib.suppress(FileNotFoundError):
            os.utime(self.path / "run.lock")

    def metrics(self) -> list[dict]:
        path = self.path / "metrics.jsonl"
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]

    def finish(self, status: str, summary: Mapping, error: str | None = None) -> None:
        """Summary first, then status: a status of ok always has its summary beside it."""
        atomic_write_json(self.path / "summary.json", summary)
        self.write_status(status, error)

    def write_status(self, status: str, error: str | None = None) -> None:
        assert status in STATUSES, status
        record = {"status": status, "time": time.time(), "host": socket.gethostname()}
        if error:
            record["error"] = error
        atomic_write_json(self.path / "status.json", record)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run exclusively; a lock left by a dead process on this host is taken over."""
        self.path.mkdir(parents=True, exist_ok=True)
        lock_path = self.path / "run.lock"
        try:
            fd = os.open(lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if _lock_is_live(lock_path):
                raise RunLocked(f"{self.path} is being trained by another process") from None
            lock_path.unlink(missing_ok=True)
            fd = os.open(lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        with os.fdopen(fd, "w") as f:
            f.write(f"{socket.gethostname()} {os.getpid()}\n")
        try:
            yield
        finally:
            lock_path.unlink(missing_ok=True)


def _lock_is_live(lock_path: Path) -> bool:
    try:
        host, pid = lock_path.read_text().split()
    except (FileNotFoundError, ValueError):
        return False
    if host != socket.gethostname():
        # Another machine's process cannot be checked: alive while it keeps the heartbeat
        # (the lock is touched after every epoch), stale once it has been silent too long.
        try:
            silent = time.time() - lock_path.stat().st_mtime
        except FileNotFoundError:
            return False
        return silent < REMOTE_LOCK_STALE_AFTER_S
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def iter_records(results_dir: Path, experiment: str) -> Iterator[RunRecord]:
    folder = Path(results_dir) / "runs" / experiment
    if not folder.is_dir():
        return
    for child in sorted(folder.iterdir()):
        if child.is_dir() and not child.name.startswith("."):
            yield RunRecord(results_dir, experiment, child.name)
