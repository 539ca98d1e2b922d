"""What a long sweep needs around Hydra's sweeper, as a Hydra callback (any launcher works).

Before any job starts: every job's config is composed and validated (a bad value stops the sweep
with one line, nothing written) and the data is prepared once (downloaded if allowed, verified),
so workers never race to download. During the sweep: a progress bar fed by the results store,
which is what jobs in other processes or on other machines share. After: one line counting
ok / diverged / failed runs, the same as a JSON line appended to <results>/sweeps.jsonl (the
command, its wall time, the commit and machine: the report's record of each sitting); exit 1 if
any failed.
"""

import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig
from tqdm import tqdm

from normexp.errors import one_line_errors
from normexp.job import prepare_data
from normexp.protocol.plan import Job, JobRecords, plan, uses_protocol
from normexp.tracking.provenance import provenance
from normexp.tracking.store import FINISHED, RunRecord
from normexp.validate import check_hydra, composition_errors


def sweep_overrides(config: DictConfig) -> list[list[str]]:
    """The override list of every job, enumerated as the basic sweeper does."""
    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    loader = GlobalHydra.instance().config_loader()
    parser = OverridesParser.create(config_loader=loader)
    parsed = parser.parse_overrides(params + list(config.hydra.overrides.task))
    return [list(job) for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def protocol_jobs(config: DictConfig, records: JobRecords) -> tuple[list[Job], list[Job]]:
    """(the jobs the sweeper will launch as far as the store tells now, record jobs of cells
    whose LR is not chosen yet: validated, not counted). Without an LR grid: every plain job."""
    current = plan(config, sweep_overrides(config), records)
    return current.jobs, current.unplanned


class SweepCallback(Callback):
    def __init__(self) -> None:
        self.records: list[RunRecord] = []
        self.skipped = 0
        self.experiment = ""
        self.profile = ""
        self.start = time.time()
        self.stop = threading.Event()
        self.watcher: threading.Thread | None = None

    def __getstate__(self) -> dict:
        # Launchers pickle the callbacks into every job; the watcher stays in this process.
        return {"records": [], "start": self.start}

    def __setstate__(self, state: dict) -> None:
        self.__init__()
        self.start = state["start"]

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        with one_line_errors(), composition_errors():
            check_hydra(config)
            # Composes and resolves (validates) each job once; jobs on other machines (SLURM)
            # are checked against theirs when they start.
            records = JobRecords(config)
            jobs, checked_only = protocol_jobs(config, records)
            for i, overrides in enumerate([*jobs, *checked_only]):
                job, record = records(overrides)
                if i == 0:
                    prepare_data(job)
                    self.experiment, self.profile = job["claim"]["name"], job["profile"]
                if i < len(jobs):
                    self.records.append(record)
        self.skipped = sum(r.is_finished() for r in self.records)
        self.start = time.time()
        self.watcher = threading.Thread(target=self._watch, daemon=True)
        self.watcher.start()

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self.stop.set()
        if self.watcher is not None:
            self.watcher.join()
        self._recount_protocol(config)
        counts = Counter(_state(r) for r in self.records)
        parts = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        where = self.records[0].path.parent if self.records else "-"
        wall = time.time() - self.start
        print(
            f"normexp: sweep of {len(self.records)} runs ({self.skipped} finished before, skipped) "
            f"in {wall:.0f} s: {parts}; store: {where}",
            file=sys.stderr,
        )
        if self.records:
            self._record_sitting(self.records[0].path.parents[2], wall, counts)
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
        if uses_protocol(config):
            records = JobRecords(config)
            self.records = [records(job)[1] for job in protocol_jobs(config, records)[0]]

    def _record_sitting(self, results_dir: Path, wall: float, counts: Counter) -> None:
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
        line.pop("device")
        try:
            with open(results_dir / "sweeps.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(line, sort_keys=True) + "\n")
        except OSError as exc:
            print(f"normexp: could not record the sweep in sweeps.jsonl: {exc}", file=sys.stderr)

    def _settled(self, record: RunRecord) -> bool:
        """Finished at any time, or failed during this sweep."""
        status = record.status or {}
        state = status.get("status")
        return state in FINISHED or (state == "failed" and status.get("time", 0) >= self.start)

    def _watch(self) -> None:
        bar = tqdm(total=len(self.records), desc="sweep", position=0, unit="run", disable=None)
        done = 0
        while True:
            stopping = self.stop.wait(1.0)
            now = sum(1 for r in self.records if self._settled(r))
            bar.update(now - done)
            done = now
            if stopping:
                break
        bar.close()


def _state(record: RunRecord) -> str:
    state = (record.status or {}).get("status", "not run")
    return "damaged" if state in FINISHED and not record.is_finished() else state
