"""GN's grouping, decided like an LR: a rule fixed before any run picks one arm of an ablation
from its runs of record, on validation only; the experiments that compare GN then train it so.

The deciding experiment (experiments/gn_grouping.yaml) declares ``protocol.grouping_decision``:
``arms``, its candidate arms (``arm.name``) in the order a tie goes (the first listed wins), and
``select_on``, a validation metric (``protocol.select``'s, in its better direction). The rule
(``decide``): each candidate scores the mean of ``select_on`` over all of its runs of record,
pooled over every cell of the ablation (each arm has the same cells and seeds); a diverged run
scores the worst value; the best score wins. Arms not listed (the legacy grouping) are reported,
never chosen. The outcome is complete only when every run of record of every candidate is
finished (ok or diverged); the ablation's sweep then writes it, with the run keys it was computed
from, to ``runs/<experiment>/decision.json`` (``write_decision``).

An experiment that declares ``protocol.grouping_from: <experiment>`` takes it (``with_decision``,
in the planner): each of its GN jobs gets the chosen arm's grouping fields as overrides, so they
reach the run's config and key. Until the decision is complete, or while a run it was computed
from is no longer finished in the store, those jobs wait: not launched, validated as they are,
and the sweep names the command that decides it (`make run-sweep` runs that experiment first).
"""

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from omegaconf import DictConfig, OmegaConf

from normexp.errors import ConfigError
from normexp.protocol.overrides import Job
from normexp.protocol.select import SELECT_DIRECTION
from normexp.protocol.subgrid import field_value
from normexp.tracking.store import (
    RunRecord,
    atomic_write_json,
    profile_dir,
    read_json,
)

if TYPE_CHECKING:  # the planner's record cache; plan.py imports this module
    from normexp.protocol.plan import JobRecords

DECISION_FILE = "decision.json"
APPLIES_TO = ("norm.name", "group")  # the jobs a grouping decision applies to: GN's
# The fields of GN's grouping (configs/norm/group.yaml) a decision hands on, when set.
GROUPING_FIELDS = ("norm.grouping", "norm.channels_per_group", "norm.num_groups")
ARM = "arm"  # the ablation's arm, by name (a section stands for its name: subgrid.field_value)
# What a grouping may be chosen on: validation metrics only (never test, nor training accuracy).
VALIDATION_METRICS = tuple(m for m in SELECT_DIRECTION if m.startswith("val"))


def decision_rule(config: Mapping) -> dict | None:
    """The experiment's ``protocol.grouping_decision`` (arms, select_on), checked; None when it
    decides nothing."""
    rule = (config.get("protocol") or {}).get("grouping_decision")
    if rule is None:
        return None
    rule = OmegaConf.to_container(rule) if OmegaConf.is_config(rule) else dict(rule)
    arms, metric = rule.get("arms"), rule.get("select_on", "val_acc")
    if not isinstance(arms, list) or not arms or not all(isinstance(a, str) for a in arms):
        raise ConfigError("protocol.grouping_decision.arms", "a non-empty list of arm names")
    if metric not in VALIDATION_METRICS:
        raise ConfigError(
            "protocol.grouping_decision.select_on",
            f"unknown {metric!r}; allowed: {', '.join(VALIDATION_METRICS)}",
        )
    return {"arms": arms, "select_on": metric}


def decide(rows: Iterable[Mapping], rule: Mapping) -> dict:
    """The rule (module doc) on ``rows``, one per finished run of record: ``arm``, ``status``
    and the ``select_on`` metric. Returns ``score`` ({arm: mean, in the metric's units; None
    where a run diverged}), ``runs`` ({arm: count}) and ``chosen`` (None without runs)."""
    metric, arms = rule["select_on"], list(rule["arms"])
    sign = 1.0 if SELECT_DIRECTION[metric] == "higher" else -1.0
    values: dict[str, list[float]] = {a: [] for a in arms}
    for row in rows:
        if row["arm"] not in values:
            continue  # a reported arm
        bad = row["status"] == "diverged" or row.get(metric) is None
        values[row["arm"]].append(-math.inf if bad else sign * float(row[metric]))
    scores = {a: sum(v) / len(v) for a, v in values.items() if v}
    chosen = None
    if scores:
        best = max(scores.values())
        chosen = next(a for a in arms if scores.get(a) == best)  # ties: the first listed
    return {
        "chosen": chosen,
        "score": {a: (sign * s if math.isfinite(s) else None) for a, s in scores.items()},
        "runs": {a: len(v) for a, v in values.items()},
    }


def grouping_of(config: Mapping) -> dict:
    """The grouping fields a resolved run config sets ({field: value}, unset ones left out)."""
    values = {f: field_value(config, f) for f in GROUPING_FIELDS}
    return {f: v for f, v in values.items() if v is not None}


def decision_path(folder: Path | str, experiment: str) -> Path:
    """Where an experiment's grouping decision lives in a profile's store ``folder``."""
    return Path(folder) / "runs" / experiment / DECISION_FILE


def write_decision(
    config: DictConfig, jobs: Sequence[Job], unplanned: Sequence[Job], records: "JobRecords"
) -> Path | None:
    """After a sweep of the deciding experiment: its decision from the record runs among
    ``jobs`` (complete only with none ``unplanned`` and every candidate's run finished), written
    to ``decision.json``; None when the experiment decides nothing."""
    rule = decision_rule(config)
    if rule is None or not jobs:
        return None
    rows, keys, example = [], [], {}
    complete = not unplanned
    for job in jobs:
        resolved, record = records(job)
        arm = field_value(resolved, ARM)
        if resolved["protocol"]["stage"] != "record" or arm not in rule["arms"]:
            continue
        example.setdefault(arm, resolved)
        if not record.is_finished():
            complete = False
            continue
        metric = (read_json(record.path / "summary.json") or {}).get(rule["select_on"])
        rows.append({"arm": arm, "status": record.status["status"], rule["select_on"]: metric})
        keys.append(record.key)
    complete = complete and set(example) == set(rule["arms"])
    outcome = decide(rows, rule) if complete else {"chosen": None}
    chosen = outcome["chosen"]
    first = records(jobs[0])[0]
    folder = profile_dir(first["paths"]["results_dir"], first["profile"])
    path = decision_path(folder, first["claim"]["name"])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        path,
        {
            "experiment": first["claim"]["name"],
            "profile": first["profile"],
            "rule": rule,
            "complete": complete,
            **outcome,
            "sets": grouping_of(example[chosen]) if chosen else {},
            "run_keys": sorted(keys) if complete else [],
        },
    )
    return path


def read_decision(folder: Path | str, experiment: str) -> dict | None:
    """The complete decision of ``experiment`` in a profile's store ``folder``, or None (not
    written, incomplete, or computed from a run that is no longer finished there)."""
    decision = read_json(decision_path(folder, experiment))
    if not decision or not decision.get("complete") or not decision.get("sets"):
        return None
    for key in decision.get("run_keys", []):
        if not RunRecord(Path(folder), experiment, key).is_finished():
            return None
    return decision


def decided_by(config: DictConfig) -> str | None:
    """The experiment whose decision sets GN's grouping in this sweep's jobs, or None."""
    return OmegaConf.select(config, "protocol.grouping_from", default=None)


def with_decision(
    config: DictConfig, jobs: Sequence[Sequence[str]], records: "JobRecords"
) -> tuple[list[Job], list[Job]]:
    """(``jobs`` with the decided grouping added to each GN job, the GN jobs that wait for the
    decision). Without ``protocol.grouping_from``: the jobs as they are, none waiting."""
    jobs = [tuple(j) for j in jobs]
    source = decided_by(config)
    if not source or not jobs:
        return jobs, []
    first = records(jobs[0])[0]
    decision = read_decision(profile_dir(first["paths"]["results_dir"], first["profile"]), source)
    path, name = APPLIES_TO
    ready, waiting = [], []
    for job in jobs:
        if field_value(records(job)[0], path) != name:
            ready.append(job)
        elif decision is None:
            waiting.append(job)
        else:  # ++: set or add (a norm node without these fields, e.g. the ResNet's cells)
            fields = decision["sets"].items()
            ready.append((*job, *(f"++{f}={_value(v)}" for f, v in fields)))
    return ready, waiting


def _value(v: object) -> str:
    """A value as an override writes it."""
    return "null" if v is None else str(v)


def waiting_line(config: DictConfig, waiting: int) -> str:
    """The sweep's line for jobs that wait for the grouping decision."""
    source = decided_by(config)
    profile = OmegaConf.select(config, "profile", default="?")
    return (
        f"normexp: {waiting} GN jobs wait for {source}'s decision of GN's grouping at the "
        f"{profile} profile (not in the store yet): run `python -m normexp.run -m "
        f"experiment={source} profile={profile}` (make run-sweep runs it first), then rerun "
        "this command"
    )
