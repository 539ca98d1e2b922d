"""Hydra's basic sweeper, extended by the LR protocol (configs/hydra/sweeper/protocol.yaml).

A Hydra plugin, so it lives in the hydra_plugins namespace (Hydra instantiates sweepers only
from there); the protocol itself is normexp.protocol.

Its jobs are composed once per set of config-group choices (normexp.compose), by the sweeper
and in the launcher's workers. Without ``protocol.lr_grid`` it sweeps as BasicSweeper. With a
grid, jobs are launched in rounds until the plan (normexp.protocol.plan) has nothing new: the
selection runs of every cell first, then, from what the store holds, the widened grid values
and the record runs, then the convergence check's runs (stage check: twice the budget, on the
first seed of record of every cell in ``protocol.check``; launched after the record runs of
their round). Every job still decides for itself whether to train (a finished run is skipped),
so a rerun of the same command recomputes the same selection and trains only what is missing.

Each launch round's jobs are grouped into packed groups where packing pays
(normexp/protocol/pack.py: runs of one cell that differ in seed and LR multiplier, on this CPU
at batch <= 8): a group is one launched job that trains and writes every member's run.
Without a grid the sweep's jobs are grouped the same way and launched in one round.

Either way an experiment that reads GN's grouping from another's decision
(``protocol.grouping_from``; normexp/protocol/grouping.py) launches its GN jobs with the decided
grouping, or, before that decision is in the store, holds them back and says which command
makes it; and the experiment that makes the decision writes it after its sweep.
"""

import logging
from pathlib import Path
from typing import Any

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.types import HydraContext
from omegaconf import OmegaConf

from normexp.compose import fast_context
from normexp.errors import one_line_errors
from normexp.protocol.grouping import waiting_line, write_decision
from normexp.protocol.pack import group_jobs
from normexp.protocol.plan import (
    STAGE_CHECK,
    Job,
    JobRecords,
    Plan,
    plan,
    uses_protocol,
    write_selection,
)
from normexp.sweep import sweep_overrides
from normexp.train.device import pick_device
from normexp.validate import composition_errors

log = logging.getLogger("normexp")


class ProtocolSweeper(BasicSweeper):
    def setup(self, *, hydra_context: HydraContext, task_function: Any, config: Any) -> None:
        # The sweeper's check of each job and the launcher's workers compose through this loader.
        fast = fast_context(hydra_context)
        super().setup(hydra_context=fast, task_function=task_function, config=config)

    def _grouped(self, jobs: list[Job], records: JobRecords) -> list[list[str]]:
        """``jobs`` with the members of each packed group merged into one job."""
        if not jobs:
            return []
        device = str(pick_device(records(jobs[0])[0]["train"]["device"]))
        return [list(job) for job in group_jobs(jobs, records, device)]

    def _launch(self, jobs: list[list[str]], first: int) -> Any:
        results = self.launcher.launch(jobs, initial_job_idx=first)
        for r in results:
            _ = r.return_value  # raises if a job raised, as BasicSweeper does
        return results

    def _save_sweep_config(self) -> None:
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")

    def sweep(self, arguments: list[str]) -> Any:
        basic = [tuple(j) for j in sweep_overrides(self.config)]  # as the callback sees them
        records = JobRecords.of_sweep(self.config)  # the jobs the callback checked
        if uses_protocol(self.config):
            returns, current = self._rounds(basic, records)
        else:
            with one_line_errors(), composition_errors():
                current = plan(self.config, basic, records)  # GN's grouping taken, or waiting
                jobs = self._grouped(current.jobs, records)
            packs = any(o.startswith("runtime.pack_with=") for job in jobs for o in job)
            if not packs and current.jobs == basic:
                returns = super().sweep(arguments)  # the basic sweeper, job for job
            else:
                self._save_sweep_config()
                returns = [self._launch(jobs, 0)] if jobs else []
        self._close(current, records)
        return returns

    def _rounds(self, basic: list[Job], records: JobRecords) -> tuple[list, Plan]:
        """The LR protocol's rounds: launch what the plan has new until it has nothing."""
        self._save_sweep_config()
        launched: set[Job] = set()
        returns = []
        while True:
            with one_line_errors(), composition_errors():
                current = plan(self.config, basic, records)
            new = [job for job in current.jobs if job not in launched]
            if not new:
                break
            with one_line_errors(), composition_errors():
                grouped = self._grouped(new, records)
            returns.append(self._launch(grouped, len(launched)))
            launched.update(map(tuple, new))
        return returns, current

    def _close(self, current: Plan, records: JobRecords) -> None:
        """What the sweep leaves for the next: the LR selection, the grouping decision when
        this experiment makes one, and a line for what could not run yet."""
        if current.selection:
            path = write_selection(current)
            log.info("normexp: LR selection of %d cells in %s", len(current.selection), path)
        with one_line_errors():
            decision = write_decision(self.config, current.jobs, current.unplanned, records)
        if decision is not None:
            log.info("normexp: GN's grouping decision in %s", decision)
        checks = sum(STAGE_CHECK in job for job in current.jobs)
        if checks:
            log.info("normexp: %d convergence-check runs (twice the budget)", checks)
        if current.unplanned:
            log.warning(
                "normexp: %d cells have no LR chosen (selection runs not finished); their "
                "record runs were not launched: rerun the same command",
                len(current.unplanned),
            )
        if current.waiting:
            log.warning(waiting_line(self.config, len(current.waiting)))
