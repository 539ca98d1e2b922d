"""The jobs of a sweep under the LR protocol, computed from the sweep's grid and the store.

``plan`` is a pure function of the sweep's plain jobs (BasicSweeper's enumeration) and what the
store holds now: the selection jobs of every cell (stage select), the grid widened where a
finished selection picks an edge, the record jobs (stage record: the sweep's own jobs at the
chosen multiplier) of every cell whose selection is decided, the ladder jobs (stage ladder:
every seed of record of every cell in ``protocol.check`` again at each fraction of its budget
that ``protocol.ladder`` lists, at the chosen multiplier) and then the check jobs (stage check:
the convergence check's budget-doubling run of every cell in ``protocol.check``, on the cell's
first seed of record at the chosen multiplier). The sweeper launches what is new
until nothing is (a fixpoint), so a rerun of the same command recomputes the same selection and
launches only what is not finished; the sweep callback uses it to validate and count the jobs.
"""

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas only where a grid is selected: a GPU bundle runs without it
    import pandas as pd
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from normexp.compose import JobComposer
from normexp.errors import ConfigError
from normexp.protocol.grouping import with_decision
from normexp.protocol.overrides import Job
from normexp.protocol.overrides import key_of as _key
from normexp.protocol.overrides import without as _without
from normexp.protocol.select import LR_MULT, STATUS, select_lr, widened
from normexp.protocol.subgrid import field_value as _field
from normexp.protocol.subgrid import in_subgrid, runs_check
from normexp.schema import field as schema_field
from normexp.tracking.store import (
    RunRecord,
    atomic_write_json,
    profile_dir,
    read_json,
    record_of,
    selection_path,
)
from normexp.validate import resolve_config, runs_remotely

SEED, BATCH, STAGE_SELECT = "seed", "train.batch_size", "protocol.stage=select"
STAGE_CHECK = "protocol.stage=check"
STAGE_LADDER = "protocol.stage=ladder"
EPOCHS, STEPS = "train.epochs", "train.steps"


def uses_protocol(config: DictConfig) -> bool:
    """Whether the composed (master) config asks for LR selection."""
    return OmegaConf.select(config, "protocol.lr_grid", default=None) is not None


def _mult(m: float) -> str:
    return f"{LR_MULT}={float(m)!r}"


_OF_SWEEP: list["JobRecords"] = []  # JobRecords.of_sweep's instance


class JobRecords:
    """The resolved config and store record of a job's overrides. One job per cell (its
    overrides but the seed and LR multiplier) is composed; the cell's other jobs are that
    config with those two fields set from their own overrides and checked by their schema
    rules. No interpolation reads either (the multiplier scales the LR in code), so this is
    the composed config (tests/unit/test_profiles_scale.py), at a fraction of the cost of
    composing each of a sweep's jobs."""

    PATCHED = {SEED: ("seed",), LR_MULT: ("optim", "lr_mult")}

    def __init__(self, config: DictConfig, machine: bool | None = None) -> None:
        self.config = config
        self.machine = not runs_remotely(config) if machine is None else machine
        self.compose = JobComposer(config)
        self.cache: dict[Job, tuple[dict, RunRecord]] = {}
        self.cells: dict[Job, tuple[dict, dict]] = {}  # cell -> (its patched values, config)
        self.parser = OverridesParser.create()

    @classmethod
    def of_sweep(cls, config: DictConfig) -> "JobRecords":
        """The one instance for the sweep whose master config is ``config`` (this process's
        latest): the sweep callback checks every job before the sweeper plans them, and the
        sweeper then reuses those configs instead of composing each job again."""
        machine = not runs_remotely(config)
        latest = _OF_SWEEP[0] if _OF_SWEEP else None
        if latest is None or latest.config is not config or latest.machine != machine:
            _OF_SWEEP[:] = [cls(config, machine)]
        return _OF_SWEEP[0]

    def __call__(self, job: Sequence[str]) -> tuple[dict, RunRecord]:
        job = tuple(job)
        if job not in self.cache:
            cell, values = _without(job, *self.PATCHED), self._values(job)
            resolved = self._patched(cell, values)
            if resolved is None:
                resolved = resolve_config(self.compose(job), machine=self.machine)
                self.cells.setdefault(cell, (values, resolved))
            self.cache[job] = resolved, record_of(resolved)  # in its profile's partition
        return self.cache[job]

    def _values(self, job: Job) -> dict[str, object]:
        """The job's seed and multiplier overrides, typed as Hydra types them."""
        overrides = (self.parser.parse_override(o) for o in job if _key(o) in self.PATCHED)
        return {o.key_or_group: o.value() for o in overrides}

    def _patched(self, cell: Job, values: dict[str, object]) -> dict | None:
        if cell not in self.cells or self.cells[cell][0].keys() != values.keys():
            return None
        config = copy.deepcopy(self.cells[cell][1])
        for key, value in values.items():
            schema_field(key).check(value)  # the one-line error composing would give
            *sections, name = self.PATCHED[key]
            parent = config
            for section in sections:
                parent = parent[section]
            parent[name] = value
        return config


@dataclass
class Plan:
    jobs: list[Job] = field(default_factory=list)  # every job known now, in launch order
    # one record job per cell whose LR is not chosen yet, at a placeholder LR: to validate
    unplanned: list[Job] = field(default_factory=list)
    # GN jobs that wait for the grouping decision they take (normexp/protocol/grouping.py)
    waiting: list[Job] = field(default_factory=list)
    selection: dict[str, dict] = field(default_factory=dict)  # selection cell -> its outcome
    experiment: str = ""
    results_dir: Path | None = None


def selection_cell(cell: Job, select_batch_size: int | None) -> Job:
    """The cell whose selection runs decide ``cell``'s multiplier: itself, or (the coarser
    rule) the same cell at the reference batch size."""
    if select_batch_size is None:
        return cell
    return (*_without(cell, BATCH), f"{BATCH}={select_batch_size}")


def selection_jobs(cell: Job, grid: Sequence[float], seeds: Sequence[int]) -> list[Job]:
    return [(*cell, _mult(m), f"{SEED}={s}", STAGE_SELECT) for m in grid for s in seeds]


def in_check(config: Mapping, check: Mapping | None) -> bool:
    """Whether the resolved job ``config`` lies in the declared sub-grid ``check``."""
    return in_subgrid(lambda path: _field(config, path), check)


def _budget(config: Mapping) -> tuple[str, int]:
    """The run's budget: (train.steps, n) when a step budget is set, else (train.epochs, n)."""
    train = config["train"]
    steps = train.get("steps")
    return (STEPS, steps) if steps is not None else (EPOCHS, train["epochs"])


def check_job(job: Sequence[str], config: Mapping, mult: int) -> Job:
    """The budget-doubling run of a run of record (``job``, resolved as ``config``): its budget
    x ``mult`` (train.steps when a step budget is set, else train.epochs; the schedule spans
    the budget), stage check, everything else as the run of record."""
    key, n = _budget(config)
    return (*_without(job, EPOCHS, STEPS), f"{key}={mult * n}", STAGE_CHECK)


def ladder_budgets(config: Mapping) -> list[str]:
    """The budget overrides of the rungs below a run of record: each fraction of
    ``protocol.ladder`` of its budget, rounded, at least 1, the record's own left out."""
    key, n = _budget(config)
    rungs = {max(1, round(f * n)) for f in config["protocol"].get("ladder") or []} - {n}
    return [f"{key}={r}" for r in sorted(rungs)]


def checked(config: Mapping) -> bool:
    """Whether a cell's runs are checked at its profile (the ladder goes with the check)."""
    protocol = config["protocol"]
    return runs_check(config["profile"], protocol.get("check_profiles")) and in_check(
        config, protocol.get("check")
    )


def cell_ladder_jobs(jobs: Sequence[Job], records: "JobRecords") -> list[Job]:
    """The ladder's jobs for the cell of record jobs ``jobs`` (without the LR multiplier): every
    seed at every rung below the record's budget; none when the cell is not checked."""
    config = records(jobs[0])[0]
    if not checked(config):
        return []
    budgets = ladder_budgets(config)
    return [(*_without(job, EPOCHS, STEPS), b, STAGE_LADDER) for b in budgets for job in jobs]


def first_seed_job(jobs: Sequence[Job], records: "JobRecords") -> Job:
    """The job of a cell's first (smallest) seed of record."""
    return min(jobs, key=lambda j: records(j)[0]["seed"])


def cell_check_job(jobs: Sequence[Job], records: "JobRecords") -> Job | None:
    """The convergence check's job for the cell of record jobs ``jobs`` (without its LR
    multiplier), or None when the cell is not checked at its profile."""
    first = first_seed_job(jobs, records)
    config = records(first)[0]
    if not checked(config):
        return None
    return check_job(first, config, config["protocol"].get("check_budget_mult", 2))


def _rows(jobs: list[Job], records: JobRecords, metric: str) -> "pd.DataFrame":
    """One row per finished selection run: multiplier, status, the selection metric only."""
    rows = []
    for job in jobs:
        config, record = records(job)
        if not record.is_finished():
            continue
        summary = read_json(record.path / "summary.json") or {}
        rows.append(
            {
                "cell": "",
                LR_MULT: config["optim"]["lr_mult"],
                STATUS: record.status["status"],
                metric: summary.get(metric),
            }
        )
    import pandas as pd  # only where the store's tables are read

    return pd.DataFrame(rows, columns=["cell", LR_MULT, STATUS, metric])


def _decide(cell: Job, settings: Mapping, records: JobRecords) -> tuple[list[Job], dict]:
    """The selection jobs of one selection cell (widened as far as the store says) and its
    outcome."""
    grid, seeds, metric = settings["lr_grid"], settings["selection_seeds"], settings["select_on"]
    jobs: list[Job] = []
    widen = 0
    while True:
        jobs += [j for j in selection_jobs(cell, grid, seeds) if j not in jobs]
        rows = _rows(jobs, records, metric)
        result = select_lr(rows, ["cell"], grid, metric, seeds=len(seeds))
        outcome = result.iloc[0].to_dict() if len(result) else {"complete": False}
        if outcome["complete"] and outcome["at_edge"] and widen < settings["max_widen"]:
            grid, widen = widened(grid, outcome["chosen"]), widen + 1
            continue
        outcome.pop("cell", None)
        return jobs, {
            **outcome,
            "grid": sorted(float(g) for g in grid),
            "widened": widen,
            "overrides": list(cell),
            "selection_seeds": list(seeds),
            "select_on": metric,
        }


def plan(config: DictConfig, basic_jobs: Sequence[Sequence[str]], records: JobRecords) -> Plan:
    """The protocol's jobs for the sweep whose plain jobs are ``basic_jobs`` (see module doc);
    without an LR grid, the plain jobs themselves. Either way GN's jobs first take the grouping
    their experiment reads from another's decision, or wait for it (``with_decision``)."""
    basic_jobs, waiting = with_decision(config, basic_jobs, records)
    if not uses_protocol(config) or not basic_jobs:
        return Plan(jobs=basic_jobs, waiting=waiting)
    first, _ = records(basic_jobs[0])
    settings = first["protocol"]
    if not settings["lr_grid"]:
        raise ConfigError("protocol.lr_grid", "an empty grid; null turns the protocol off")
    cells: dict[Job, list[Job]] = {}
    for job in basic_jobs:
        cells.setdefault(_without(job, SEED), []).append(tuple(job))
    record_seeds = {int(o.split("=", 1)[1]) for j in basic_jobs for o in j if _key(o) == SEED}
    if any(all(_key(o) != SEED for o in j) for j in basic_jobs):
        record_seeds.add(first["seed"])  # a job that keeps the config's seed
    if record_seeds & set(settings["selection_seeds"]):
        raise ConfigError(
            "protocol.selection_seeds",
            f"{sorted(record_seeds & set(settings['selection_seeds']))} are seeds of record too; "
            "selection and record seeds must be separate",
        )
    folder = profile_dir(first["paths"]["results_dir"], first["profile"])
    out = Plan(experiment=first["claim"]["name"], results_dir=folder, waiting=waiting)
    # Selection cells are named by the batch size and the grid axes that vary across the sweep's
    # cells: an axis with one value at this profile (e.g. model: cnn at quick, cnn,resnet from
    # standard on) is a fixed setting there, so names stay as they were at the cheaper profile.
    swept = OmegaConf.select(config, "hydra.sweeper.params") or {}
    values = {k: {o for cell in cells for o in cell if _key(o) == k} for k in swept}
    axes = {k for k, v in values.items() if len(v) > 1} | {BATCH}
    chosen: dict[Job, float | None] = {}
    for cell in cells:
        sel = selection_cell(cell, settings["select_batch_size"])
        if sel in chosen:
            continue
        jobs, outcome = _decide(sel, settings, records)
        out.jobs += [j for j in jobs if j not in out.jobs]
        # Named by the experiment's grid axes only (not the command line's fixed settings).
        out.selection[" ".join(o for o in sel if _key(o) in axes) or "all"] = outcome
        chosen[sel] = outcome.get("chosen") if outcome["complete"] else None
    ladders: list[Job] = []  # after every record job: the record stage first, then the ladder
    checks: list[Job] = []  # and the check stage
    for cell, jobs in cells.items():
        m = chosen[selection_cell(cell, settings["select_batch_size"])]
        placeholder = m is None
        mult = _mult(settings["lr_grid"][0] if placeholder else m)
        if placeholder:
            out.unplanned.append((*jobs[0], mult))
        else:
            out.jobs += [(*job, mult) for job in jobs]
        rungs = [(*j, mult) for j in cell_ladder_jobs(jobs, records)]
        out.unplanned += rungs[:1] if placeholder else []  # validated before the LR is chosen
        ladders += [] if placeholder else rungs
        job = cell_check_job(jobs, records)
        if job is not None:
            (out.unplanned if placeholder else checks).append((*job, mult))
    out.jobs += ladders + checks
    return out


def write_selection(p: Plan) -> Path | None:
    """Merge the plan's selection into the experiment's selection file (several sweeps, such
    as the more-seeds files, share an experiment)."""
    if p.results_dir is None or not p.selection:
        return None
    path = selection_path(p.results_dir, p.experiment)
    old = read_json(path) or {}
    cells = {**old.get("cells", {}), **p.selection}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"experiment": p.experiment, "cells": cells})
    return path
