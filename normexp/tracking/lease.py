"""Run locks with a lease: one trainer per run, across the processes and hosts sharing a store.

A lock is the file ``run.lock`` in the run's folder, holding ``host pid token``. It is created
whole (a written temporary file hard-linked to its name, which fails if the name exists), so no
reader ever sees it half-written. While its holder trains, a thread refreshes the file's mtime
every HEARTBEAT_S: the heartbeat. Another process takes the lock over only when it is stale:

- on the same host, when its pid is gone (checked exactly);
- on another host, when its heartbeat is older than LEASE_S. No pid can be checked across
  machines, so the lease is the only evidence; it is many heartbeats long, ample against clock
  skew and NFS attribute caching, so a live lock is never taken.

Taking over renames the stale file to a name of the taker's own first: of two sweeps that find
the same stale lock, only one rename succeeds. The locks this process holds are listed, so that
a stop (normexp.stopping) removes them before the process exits: a SIGTERM leaves none behind.
"""

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from normexp import stopping

log = logging.getLogger("normexp")

LEASE_S = 600.0  # a lock of another host whose heartbeat is older than this is stale
HEARTBEAT_S = 30.0  # how often a holder refreshes its lock (20 heartbeats per lease)
_TOKEN = uuid.uuid4().hex[:12]  # this process's locks; a pid alone may be reused
_held: set[Path] = set()


class RunLocked(Exception):
    """Another live process holds this run."""


class Owner:
    """Who wrote a lock, and how long ago its heartbeat was."""

    def __init__(self, host: str, pid: int, token: str, silent_s: float) -> None:
        self.host, self.pid, self.token, self.silent_s = host, pid, token, silent_s

    @property
    def identity(self) -> tuple[str, int, str]:
        return self.host, self.pid, self.token

    def __str__(self) -> str:
        return f"host {self.host}, pid {self.pid}, heartbeat {self.silent_s:.0f} s ago"

    def is_live(self) -> bool:
        if self.host != socket.gethostname():
            return self.silent_s < LEASE_S
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # another user's live process
            return True
        return True


def read_owner(lock: Path) -> Owner | None:
    """The lock's owner; None if there is no lock. A lock that cannot be parsed (damaged, or
    written by an older version) is owned by nobody known: live until its lease runs out."""
    try:
        silent = time.time() - lock.stat().st_mtime
        fields = lock.read_text().split()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError):
        fields = []
    if len(fields) >= 2 and fields[1].isdigit():
        return Owner(fields[0], int(fields[1]), fields[2] if len(fields) > 2 else "", silent)
    return Owner("?", 0, "", silent)  # "?" is no host name: judged by its lease


def _mine(lock: Path) -> bool:
    owner = read_owner(lock)
    return owner is not None and owner.token == _TOKEN and owner.pid == os.getpid()


def _create(lock: Path) -> bool:
    """Create the lock whole, as this process's; False if it exists."""
    tmp = lock.with_name(f".{lock.name}.{os.getpid()}.{_TOKEN}.tmp")
    tmp.write_text(f"{socket.gethostname()} {os.getpid()} {_TOKEN}\n")
    try:
        os.link(tmp, lock)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


def _take_over(lock: Path, owner: Owner, done: str = "took over") -> bool:
    """Move a stale lock aside, with a one-line note; False if another process moved or
    replaced it first."""
    aside = lock.with_name(f".{lock.name}.stale.{_TOKEN}")
    try:
        os.rename(lock, aside)
    except FileNotFoundError:
        return False
    moved = read_owner(aside)
    if moved is None or moved.identity != owner.identity:
        # Between our look and the rename, a newer lock took its place: give it back.
        with contextlib.suppress(FileExistsError):
            os.link(aside, lock)
        aside.unlink(missing_ok=True)
        return False
    aside.unlink(missing_ok=True)
    log.warning("normexp: %s the stale lock of %s (%s)", done, lock.parent, owner)
    return True


def acquire(lock: Path) -> None:
    """Hold ``lock`` for this process, taking over a stale one; RunLocked if it is live."""
    with stopping.deferred():  # a stop between creating and listing the lock waits for both
        for _ in range(3):  # a lock that vanishes while we look is tried again
            if _create(lock):
                _held.add(lock)
                return
            owner = read_owner(lock)
            if owner is not None and owner.is_live():
                raise RunLocked(f"{lock.parent} is being trained by another process ({owner})")
            if owner is not None:
                _take_over(lock, owner)
        raise RunLocked(f"{lock.parent}: its lock keeps changing hands")


def release(lock: Path) -> None:
    """Remove ``lock`` if this process holds it."""
    _held.discard(lock)
    if _mine(lock):
        lock.unlink(missing_ok=True)


def release_held() -> None:
    """Remove every lock this process holds (a stop, just before the process exits)."""
    for lock in list(_held):
        release(lock)


@contextlib.contextmanager
def held(lock: Path) -> Iterator[None]:
    """Hold ``lock`` for the block, its heartbeat refreshed by a thread while the block runs."""
    acquire(lock)
    done = threading.Event()
    beat = threading.Thread(target=_beat, args=(lock, done), daemon=True, name="run.lock")
    beat.start()
    try:
        yield
    finally:
        done.set()
        beat.join()
        with stopping.deferred():
            release(lock)


def _beat(lock: Path, done: threading.Event) -> None:
    while not done.wait(HEARTBEAT_S) and _mine(lock):  # never refresh another process's lock
        with contextlib.suppress(OSError):  # a full disk must not stop the heartbeat
            os.utime(lock)


stopping.at_stop(lambda signum: release_held())  # a stop removes our locks before it exits


def remove_if_stale(lock: Path) -> bool:
    """Remove a stale lock (of a finished run, which nothing else would clean): True if it was."""
    owner = read_owner(lock)
    if owner is None or owner.is_live():
        return False
    return _take_over(lock, owner, "removed")
