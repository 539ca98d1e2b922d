"""SIGINT and SIGTERM: the same few steps at whatever moment of a run or a sweep they arrive.

A stop does not unwind. Raising an exception from a signal handler runs it through whatever
code the main thread is in (Hydra composing a config, joblib waiting on its pool, loky's exit
hooks), and some of that code does not survive it: a sweep stopped that way could exit 1 with an
OmegaConf error, leave its workers' run locks behind, or hang. Instead the handler

1. ignores further stop signals (a second Ctrl-C cannot cut the steps short);
2. stops this process's children (a sweep's workers, W&B's service) with SIGTERM, waiting up to
   CHILDREN_GRACE_S for each to run these same steps, then kills what is left;
3. runs the hooks registered with ``at_stop`` in order (the run locks this process holds are
   removed; a sweep writes its closing line and sitting, marked interrupted);
4. exits at once with 128 + the signal: 130 for Ctrl-C, 143 for SIGTERM.

A run stopped mid-training keeps status ``running`` and its last checkpoint: the next sweep
resumes it. A block that must not be cut in two (taking a lock and listing it) runs under
``deferred()``: a stop that arrives inside it happens when the block ends.
"""

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator

import psutil

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
CHILDREN_GRACE_S = 30.0  # a worker ends at its next Python instruction; a torch op takes less

_hooks: list[Callable[[int], None]] = []
_deferring = 0
_pending: int | None = None


def install() -> None:
    """Stop on SIGINT and SIGTERM from now on (a no-op off the main thread, where Python cannot
    set handlers)."""
    if threading.current_thread() is threading.main_thread():
        for signum in STOP_SIGNALS:
            signal.signal(signum, _on_signal)


def install_where_default() -> None:
    """In a launcher's worker: handle the stop signals that nothing else handles. A worker under
    submitit keeps submitit's handlers (they requeue a preempted job)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in STOP_SIGNALS:
        if signal.getsignal(signum) in (signal.SIG_DFL, signal.default_int_handler):
            signal.signal(signum, _on_signal)


def at_stop(hook: Callable[[int], None]) -> Callable[[], None]:
    """Run ``hook(signum)`` when a stop signal arrives; returns the call that removes it."""
    _hooks.append(hook)
    return lambda: _hooks.remove(hook) if hook in _hooks else None


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A stop that arrives inside the block happens when the block ends."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
        if not _deferring and _pending is not None:
            stop(_pending)


def _on_signal(signum: int, frame: object) -> None:
    global _pending
    if _deferring:
        _pending = signum
        return
    stop(signum)


def stop(signum: int) -> None:
    """The steps of a stop (the module's docstring); exits the process."""
    for s in STOP_SIGNALS:
        with contextlib.suppress(ValueError):  # off the main thread: cannot be set
            signal.signal(s, signal.SIG_IGN)
    stop_children()
    for hook in list(_hooks):
        try:
            hook(signum)
        except Exception as exc:  # noqa: BLE001 - the remaining hooks and the exit must happen
            print(f"normexp: while stopping: {type(exc).__name__}: {exc}", file=sys.stderr)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    exit_now(128 + signum)


def stop_children(grace_s: float = CHILDREN_GRACE_S) -> None:
    """SIGTERM to every descendant of this process, then SIGKILL to those alive after
    ``grace_s``; each is waited for, so none is left behind. Python's and loky's resource
    trackers ignore SIGTERM by design and end by themselves once this process has exited (their
    pipe closes): they are not waited for."""
    try:
        children = [c for c in psutil.Process().children(recursive=True) if not _tracker(c)]
    except psutil.Error:
        return
    for child in children:
        with contextlib.suppress(psutil.Error):
            child.terminate()
    _, alive = psutil.wait_procs(children, timeout=grace_s)
    for child in alive:
        with contextlib.suppress(psutil.Error):
            child.kill()
    psutil.wait_procs(alive, timeout=5)


def _tracker(process: psutil.Process) -> bool:
    try:
        return "resource_tracker" in " ".join(process.cmdline())
    except psutil.Error:
        return False


exit_now = os._exit  # no unwinding, no atexit hooks: the steps above did what must be done
