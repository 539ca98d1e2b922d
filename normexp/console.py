"""What a sweep shows on the terminal: one sweep bar (row 0) fed by the results store, one bar per
running run below it (rows 1..workers), and log lines scrolling above them.

Jobs run in other processes, so tqdm's own locking cannot keep their log lines off the bars: a
log line written to a terminal first returns to the line's start and clears it (whatever bar was
drawn there), and every bar redraws itself one row lower at its next refresh.
"""

import fcntl
import logging
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from tqdm import tqdm

from normexp.tracking.store import FINISHED, RunRecord

CLEAR_LINE = "\r\x1b[K"  # carriage return, erase to the end of the line
# n/total, elapsed, then the ETA set as postfix (tqdm's own ETA would count the runs finished
# before this sitting as instant ones).
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} runs [{elapsed}{postfix}]"


class TqdmLogHandler(logging.StreamHandler):
    """A console handler that writes through tqdm.write, so this process's bars are cleared
    and redrawn below the line; on a terminal each line also clears a bar of another process."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = self.format(record)
            if _is_terminal(self.stream):
                # Clear the row before each line and after it: a line longer than the terminal
                # wraps onto the next row, which may hold a bar.
                msg = "\n".join(CLEAR_LINE + line + "\x1b[K" for line in msg.split("\n"))
            tqdm.write(msg, file=self.stream)
            self.flush()
        except Exception:  # noqa: BLE001 - logging must never raise
            self.handleError(record)


def _is_terminal(stream: IO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def log_above_bars(logger: logging.Logger | None = None) -> None:
    """Swap the console handlers (stdout / stderr) of ``logger`` (the root logger: Hydra puts
    them there) for TqdmLogHandler, keeping their level and format; files are left alone.
    Called after Hydra configures logging: in the sweep's process and in every job."""
    logger = logger or logging.getLogger()
    for i, handler in enumerate(logger.handlers):
        if type(handler) is not logging.StreamHandler:  # FileHandler is a StreamHandler too
            continue
        if handler.stream not in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            continue
        swapped = TqdmLogHandler(handler.stream)
        swapped.setLevel(handler.level)
        swapped.setFormatter(handler.formatter)
        for f in handler.filters:
            swapped.addFilter(f)
        logger.handlers[i] = swapped


def format_eta(seconds: float | None) -> str:
    """The bar's postfix: tqdm puts it after the elapsed time, as "[00:42, eta 03:10]"."""
    return "eta ?" if seconds is None else f"eta {tqdm.format_interval(seconds)}"


class SweepProgress:
    """The sweep's count of settled runs and its ETA, from the store: ``records`` are the
    sweep's runs, ``start`` the time this sitting began, ``workers`` the runs at a time."""

    def __init__(self, records: Sequence[RunRecord], workers: int, start: float) -> None:
        self.records = records
        self.workers = max(1, workers)
        self.start = start

    def settled(self, record: RunRecord) -> bool:
        """Finished at any time, or failed during this sitting."""
        status = record.status or {}
        state = status.get("status")
        return state in FINISHED or (state == "failed" and status.get("time", 0) >= self.start)

    def scan(self) -> tuple[int, float | None, int]:
        """Settled runs; the seconds left: the mean time of the runs that ended in this sitting
        (start: its config.json, written when it starts; end: its status) times the rounds of
        ``workers`` runs left, None before a run of this sitting has ended, rather than a
        guess; and the runs running now (started in this sitting: 0 while workers start)."""
        done, running, times = 0, 0, []
        for record in self.records:
            status = record.status or {}
            if status.get("status") == "running" and status.get("time", 0) >= self.start:
                running += 1
            if not self.settled(record):
                continue
            done += 1
            took = _run_time(record, status, self.start)
            if took is not None:
                times.append(took)
        if not times:
            return done, None, running
        rounds = math.ceil((len(self.records) - done) / self.workers)
        return done, sum(times) / len(times) * rounds, running


def _run_time(record: RunRecord, status: dict, since: float) -> float | None:
    """Seconds from the run's start to its end, if it ended after ``since``."""
    ended = status.get("time", 0)
    if ended < since:
        return None
    try:
        began = (record.path / "config.json").stat().st_mtime
    except OSError:
        return None
    return max(0.0, ended - began)


def launcher_workers(launcher: Mapping, runs: int) -> int:
    """Runs at a time: joblib's n_jobs (-1: every core, -2: all but one...), SLURM's
    array_parallelism, else every run at once (submitit's local executor)."""
    n_jobs = launcher.get("n_jobs")
    if n_jobs is not None:
        return max(1, n_jobs if n_jobs > 0 else (os.cpu_count() or 1) + 1 + n_jobs)
    return max(1, min(launcher.get("array_parallelism") or runs, runs))


CHECKING = "checking the jobs"  # the bar's postfix until the sweep's runs are counted


def sweep_bar(total: int | None = None, initial: int = 0) -> tqdm:
    """The sweep's bar on row 0, shown from the sweep's first second: without ``total`` while
    the jobs are composed and checked (seconds at standard), then ``count``'s."""
    bar = tqdm(
        total=total,
        initial=initial,
        desc="sweep",
        position=0,
        unit="run",
        bar_format=BAR_FORMAT,
        dynamic_ncols=True,
        disable=None,  # a terminal only: logs and CI get the closing line
    )
    bar.set_postfix_str(CHECKING if total is None else format_eta(None), refresh=True)
    return bar


def count(
    bar: tqdm, total: int, done: int, eta: float | None, running: int | None = None
) -> None:
    """Set the sweep bar to ``done`` settled runs of ``total``, with its ETA and the runs
    running now, when known (not redrawn)."""
    bar.total = total
    busy = "" if running is None else f", {running} running"
    bar.set_postfix_str(format_eta(eta) + busy, refresh=False)
    bar.update(done - bar.n)


class SweepLogFile(logging.FileHandler):
    """The sweep's log file, <sweep dir>/sweep.log (configs/hydra/hydra_logging/normexp.yaml):
    the launchers' line per launched job goes here, not to the terminal. Its folder is made and
    the file opened at its first line, so a single run, which launches nothing, writes none."""

    def __init__(self, filename: str, mode: str = "a", encoding: str = "utf-8") -> None:
        super().__init__(filename, mode, encoding, delay=True)

    def _open(self):  # noqa: ANN202 - logging's own
        Path(self.baseFilename).parent.mkdir(parents=True, exist_ok=True)
        return super()._open()


class ProgressSlot:
    """A row for a run's bar: the lowest of rows 1..n that no other job of the sweep holds. An
    exclusive lock on <folder>/<row>.lock while the job runs; the OS drops it when the process
    ends, so rows of killed jobs come back. A row by job number (job % workers) would put two
    bars on one row as soon as jobs end out of order."""

    def __init__(self, folder: Path | None, n: int) -> None:
        self.folder, self.n = folder, max(1, n)
        self.row = 0
        self._file: IO | None = None

    def __enter__(self) -> int:
        if self.folder is None:  # no terminal: the row is never drawn
            self.row = 1
            return self.row
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            for row in range(1, self.n + 1):
                f = open(self.folder / f"{row}.lock", "a")  # noqa: SIM115 - held while running
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    f.close()
                    continue
                self._file, self.row = f, row
                return row
        except OSError:
            pass  # a row is cosmetic: fall through to the last one
        self.row = self.n
        return self.row

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()  # releases the lock
            self._file = None
