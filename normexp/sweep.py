"""What a long sweep needs around Hydra's sweeper, as a Hydra callback (any launcher works).

Before any job starts: every job's config is composed and validated (a bad value stops the sweep
with one line, nothing written). If the store holds every run finished, the sweep ends there, in
this process: the closing line, exit 0, no worker started. Else the data is prepared once
(downloaded if allowed, verified), so workers never race to download. From the sweep's first
second: a progress bar, its elapsed time running while the jobs are checked, then fed by the
results store, which is what jobs in other processes or on other machines share
(normexp/console.py): it counts from the runs finished before, log lines scroll above it, its
ETA comes from the runs of this sitting; the launcher's line per launched job goes to the
sweep's log file, <sweep dir>/sweep.log (configs/hydra/hydra_logging/normexp.yaml), not to the
terminal. After: one line counting
ok / diverged / failed runs, the same as a JSON line appended to <results>/<profile>/sweeps.jsonl
(the command, its wall time, the commit and machine: the report's record of each sitting); exit 1 if
any failed. A sitting stopped by Ctrl-C or SIGTERM still writes its line, marked interrupted, and
exits 130 or 143 leaving no worker and no run lock (normexp.stopping); one ended by an error is
marked aborted. So the wall time of every sitting of a long resumed sweep is on record.
"""

import atexit
import contextlib
import json
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from tqdm import tqdm

from normexp import stopping
from normexp.compose import JobComposer
from normexp.console import SweepProgress, count, launcher_workers, log_above_bars, sweep_bar
from normexp.errors import one_line_errors
from normexp.job import prepare_data
from normexp.protocol.plan import Job, JobRecords, plan, uses_protocol
from normexp.tracking.provenance import provenance
from normexp.tracking.store import FINISHED, SWEEP_LOG, RunRecord, ensure_writable, record_of
from normexp.validate import check_hydra, composition_errors, runs_remotely


def sweep_overrides(config: DictConfig) -> list[list[str]]:
    """The override list of every job, enumerated as the basic sweeper does."""
    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    loader = GlobalHydra.instance().config_loader()
    parser = OverridesParser.create(config_loader=loader)
    parsed = parser.parse_overrides(params + list(config.hydra.overrides.task))
    return [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def compose_jobs(config: DictConfig, jobs: list[list[str]] | None = None) -> list[DictConfig]:
    """Every job's config, as the launcher composes it, composed once per set of group choices
    (normexp.compose)."""
    composer = JobComposer(config)
    return [composer(job) for job in (sweep_overrides(config) if jobs is None else jobs)]


def job_records(jobs: Iterable[Mapping]) -> list[RunRecord]:
    """The store record of every job, from its resolved config."""
    return [record_of(job) for job in jobs]  # in each job's profile partition


def all_finished(jobs: Iterable[Mapping]) -> bool:
    """Whether the store holds every job (resolved configs) finished (ok or diverged, and not
    damaged): then the sweep has nothing to run."""
    return all(record.is_finished() for record in job_records(jobs))


def closing_line(records: list[RunRecord], skipped: int, wall: float) -> tuple[str, Counter]:
    """The sweep's closing count (one line) and the counts by state."""
    counts = Counter(_state(r) for r in records)
    parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    where = records[0].path.parent if records else "-"
    line = (
        f"normexp: sweep of {len(records)} runs ({skipped} finished before, skipped) "
        f"in {wall:.0f} s: {parts}; store: {where}"
    )
    return line, counts


def protocol_jobs(config: DictConfig, records: JobRecords) -> tuple[list[Job], list[Job]]:
    """(the jobs the sweeper will launch as far as the store tells now, record jobs of cells
    whose LR is not chosen yet and GN jobs that wait for their grouping: validated, not
    counted). Without an LR grid: every plain job (GN's with its grouping, or waiting)."""
    current = plan(config, sweep_overrides(config), records)
    return current.jobs, [*current.unplanned, *current.waiting]


class SweepCallback(Callback):
    def __init__(self) -> None:
        self.records: list[RunRecord] = []
        self.skipped = 0
        self.experiment = ""
        self.profile = ""
        self.start = time.time()
        self.stop = threading.Event()
        self.watcher: threading.Thread | None = None
        self.bar: tqdm | None = None
        self.progress: SweepProgress | None = None  # set once the sweep is launched
        self.line_written = False
        self.remote = False
        self.signal: int | None = None
        self.sweep_pid = os.getpid()
        self.forget_stop_hook = lambda: None

    def __getstate__(self) -> dict:
        # Launchers pickle the callbacks into every job; the watcher stays in this process.
        return {"start": self.start, "sweep_pid": self.sweep_pid}

    def __setstate__(self, state: dict) -> None:
        self.__init__()
        self.start, self.sweep_pid = state["start"], state["sweep_pid"]

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if os.getpid() != self.sweep_pid:  # a launcher's worker process: a stop ends it cleanly
            stopping.install_where_default()

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        began = time.time()
        local = not runs_remotely(config)
        self._start_watching()  # the bar from the first second: checking takes seconds
        with one_line_errors(), self._bar_closed_on_error(), composition_errors():
            check_hydra(config)
            # Composes and resolves (validates) each job once; jobs on other machines (SLURM)
            # are checked against theirs when they start. Under the LR protocol, record jobs
            # of cells whose LR is not chosen yet are checked at a placeholder LR, not counted.
            records = JobRecords.of_sweep(config)
            jobs, checked_only = protocol_jobs(config, records)
            resolved = [records(job) for job in [*jobs, *checked_only]]
        self.records = [record for _, record in resolved[: len(jobs)]]
        if resolved:
            first = resolved[0][0]
            self.experiment, self.profile = first["claim"]["name"], first["profile"]
        self.skipped = sum(r.is_finished() for r in self.records)
        self._first_count()
        if self.records and self.skipped == len(self.records) and not checked_only:
            self._nothing_to_run(time.time() - began)  # exits: no worker, no data
        if resolved:  # after the check above: a finished sweep needs no data, nor a store
            with one_line_errors(), self._bar_closed_on_error():
                ensure_writable(self.records[0].path.parents[2])
                prepare_data(resolved[0][0])
        self.start = time.time()
        self._record_if_interrupted(remote=not local)
        workers = launcher_workers(config.hydra.launcher, len(self.records))
        self.progress = SweepProgress(self.records, workers, self.start)  # the bar counts now

    def _record_if_interrupted(self, remote: bool) -> None:
        """Until the closing line is written, a stop (normexp.stopping: SIGINT, SIGTERM) writes
        it, marked interrupted, and an exit before the end (an error) writes it marked
        aborted, so every sitting of a long resumed sweep is on record."""
        self.remote = remote
        self.forget_stop_hook = stopping.at_stop(self._stopped)
        atexit.register(self._exit_before_end)

    def _stopped(self, signum: int) -> None:
        self.signal = signum
        self._exit_before_end()

    def _exit_before_end(self) -> None:
        if self.line_written or not self.records:
            return
        self._stop_watching(timeout=1)
        wall = time.time() - self.start
        line, counts = closing_line(self.records, self.skipped, wall)
        how = "interrupted" if self.signal is not None else "aborted"
        advice = (
            "jobs already submitted may still be queued or running: let them end (or cancel "
            "them) before rerunning the same command"
            if self.remote
            else "rerun the same command to resume"
        )
        print(f"{line}; {how} ({advice})", file=sys.stderr)
        self._record_sitting(self.records[0].path.parents[2], wall, counts, {how: True})

    def _nothing_to_run(self, wall: float) -> None:
        """Every run is finished: say so in the closing line, record the sitting, exit 0."""
        self._stop_watching()
        line, counts = closing_line(self.records, self.skipped, wall)
        print(
            f"{line}; all {len(self.records)} were finished already, so no job was started",
            file=sys.stderr,
        )
        self._record_sitting(self.records[0].path.parents[2], wall, counts)
        raise SystemExit(0)

    def _start_watching(self) -> None:
        """The sweep bar, shown now: checking the jobs until they are counted; log lines go
        above it."""
        log_above_bars()
        self.bar = sweep_bar()
        self.watcher = threading.Thread(target=self._watch, args=(self.bar,), daemon=True)
        self.watcher.start()

    def _first_count(self) -> None:
        """The bar's total and the runs finished before, as soon as the jobs are known (the
        watcher, which redraws it meanwhile, counts from the store once ``self.progress`` is
        set)."""
        if self.bar is not None:
            with self.bar.get_lock():
                count(self.bar, len(self.records), self.skipped, None)

    @contextlib.contextmanager
    def _bar_closed_on_error(self) -> Iterator[None]:
        """An error before the sweep launches closes the bar first: its line goes below it."""
        try:
            yield
        except BaseException:
            self._stop_watching()
            raise

    def _stop_watching(self, timeout: float | None = None) -> None:
        """The watcher's last count, and the bar closed."""
        self.stop.set()
        if self.watcher is not None:
            self.watcher.join(timeout)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        atexit.unregister(self._exit_before_end)
        self._stop_watching()
        self._recount_protocol(config)
        wall = time.time() - self.start
        line, counts = closing_line(self.records, self.skipped, wall)
        print(line, file=sys.stderr)
        if self.records:
            self._record_sitting(self.records[0].path.parents[2], wall, counts)
        self.forget_stop_hook()  # the line is written: a stop from here on only exits
        if counts.get("not run") or counts.get("running") or counts.get("damaged"):
            print(
                "normexp: some runs did not finish (see the errors above); rerun the same "
                "command to complete the sweep.",
                file=sys.stderr,
            )
            raise SystemExit(1)
        if counts.get("failed"):
            print(
                "normexp: runs failed; each one's status.json holds the error. Rerun the same "
                "command to retry them (finished runs are skipped).",
                file=sys.stderr,
            )
            raise SystemExit(1)

    def _recount_protocol(self, config: DictConfig) -> None:
        """Under the LR protocol the record runs are known only after selection: count the
        jobs the store now says the sweep had."""
        if config is not None and uses_protocol(config):
            records = JobRecords.of_sweep(config)
            self.records = [records(job)[1] for job in protocol_jobs(config, records)[0]]

    def _record_sitting(
        self,
        results_dir: Path,
        wall: float,
        counts: Counter,
        marks: Mapping[str, bool] | None = None,
    ) -> None:
        """One JSON line per sweep sitting, appended with O_APPEND so that concurrent sweeps
        don't overwrite each other; a store that can't be written loses only this line."""
        line = {
            "experiment": self.experiment,
            "profile": self.profile,
            "command": " ".join(["python -m normexp.run", *sys.argv[1:]]),
            "started": self.start,
            "wall_s": round(wall, 1),
            "runs": len(self.records),
            "skipped": self.skipped,
            "counts": dict(counts),
            "cpu_count": os.cpu_count(),
            **provenance("-"),
        }
        line.update(marks or {})
        line.pop("device")
        self.line_written = True  # before the write: a stop during it must not add a second
        try:
            results_dir.mkdir(parents=True, exist_ok=True)  # a sweep whose every job failed
            with open(results_dir / SWEEP_LOG, "a", encoding="utf-8") as f:
                f.write(json.dumps(line, sort_keys=True) + "\n")
        except OSError as exc:
            print(f"normexp: could not record the sweep in sweeps.jsonl: {exc}", file=sys.stderr)

    def _watch(self, bar: tqdm) -> None:
        """Once the sweep is launched (``self.progress``), read the store every second; redraw
        the bar four times a second (its elapsed time runs while the jobs are checked), as a
        job's log line may have pushed it down a row."""
        tick = 0
        while True:
            stopping = self.stop.wait(0.25)
            progress = self.progress
            if progress is not None and (stopping or tick % 4 == 0):
                count(bar, len(progress.records), *progress.scan())
            bar.refresh()
            tick += 1
            if stopping:
                break
        bar.close()


def _state(record: RunRecord) -> str:
    state = (record.status or {}).get("status", "not run")
    return "damaged" if state in FINISHED and not record.is_finished() else state
