"""Gather one profile's runs into one table per experiment (Parquet, plus CSV for eyes).

Every function here reads one profile's folder of the store (``profile_dir``); a table never
mixes profiles. A run whose files fail ``RunRecord.check``, or whose config names another
profile than its folder's (a run copied into the wrong partition), is left out of the table,
never half-used: the caller gets it in its ``damaged`` list (the report counts and names such
runs)."""

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from normexp.metrics import by_epoch
from normexp.tracking.store import (  # noqa: F401 - experiments_in_store: collect's callers
    RunRecord,
    experiments_in_store,
    iter_records,
    read_json,
)
from normexp.train.optim import peak_lr

log = logging.getLogger("normexp")


@dataclass(frozen=True)
class DamagedRun:
    """A run left out of its experiment's table, and why."""

    experiment: str
    run_key: str
    path: Path
    problems: tuple[str, ...]

# Config subtrees that say how or where a run was executed, not what it computed (the ``scale``
# table holds every profile's row: the run's own becomes the ``scale`` column instead).
DROPPED_PREFIXES = ("scale.", "paths.", "runtime.", "tracking.")
# Entries of a scale row that are not scale: ``sweep`` holds grid values (a batch size), and
# ``val_every`` how often a run is validated (what it logs per epoch, never what a statistic
# reads: normexp/train/cadence.py), so runs stored before it share their scale with new ones.
NOT_SCALE = ("sweep", "val_every")


def scale_signature(config: Mapping) -> str | None:
    """What the run's profile sets for it: its profile's row of the resolved ``scale`` table,
    less NOT_SCALE, as canonical JSON (normexp/analysis/one_scale.py); None without that row."""
    rows = config.get("scale")
    row = rows.get(config.get("profile")) if isinstance(rows, Mapping) else None
    if not isinstance(row, Mapping):
        return None
    entries = {k: v for k, v in row.items() if k not in NOT_SCALE}
    return json.dumps(entries, sort_keys=True, separators=(", ", ": "), default=str)


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        elif isinstance(value, list):
            flat[name] = str(value)  # keep list-valued fields (widths) hashable for grouping
        else:
            flat[name] = value
    return flat


def problems_in(record: RunRecord, profile: str) -> list[str]:
    """What keeps the run out of profile ``profile``'s table: damaged files, another profile."""
    problems = record.check()
    if problems:
        return problems
    theirs = (read_json(record.path / "config.json") or {}).get("profile")
    if theirs != profile:
        return [f"config.json: profile {theirs!r}, in the folder of profile {profile!r}"]
    return []


def collect_runs(
    folder: Path, experiment: str, damaged: list[DamagedRun] | None = None
) -> pd.DataFrame:
    """One row per started run of the profile folder ``folder`` (its name is the profile) whose
    files pass the store's check: its config fields (dotted), summary, status, error. Damaged
    runs, and runs of another profile, are logged and appended to ``damaged`` when given."""
    rows = []
    for record in iter_records(folder, experiment):
        if not record.is_started():
            continue
        problems = problems_in(record, Path(folder).name)
        if problems:
            log.warning("left out damaged run %s: %s", record.path, "; ".join(problems))
            if damaged is not None:
                damaged.append(DamagedRun(experiment, record.key, record.path, tuple(problems)))
            continue
        config = read_json(record.path / "config.json")
        status = record.status
        summary = read_json(record.path / "summary.json") or {}  # none while running
        row = {k: v for k, v in _flatten(config).items() if not k.startswith(DROPPED_PREFIXES)}
        row.update(
            {k: v for k, v in summary.items() if k not in ("status", "run_key", "provenance")}
        )
        row.update({f"provenance.{k}": v for k, v in summary.get("provenance", {}).items()})
        row.update(_protocol_columns(record, config))
        row.update(
            scale=scale_signature(config),
            run_key=record.key,
            status=status["status"],
            error=status.get("error"),
            finished_at=status.get("time"),
        )
        rows.append(row)
    return pd.DataFrame(rows)


def _protocol_columns(record: RunRecord, config: dict) -> dict:
    """What the fair protocol reads: the per-epoch validation curve (convergence check) and the
    peak LR the run trained at (the batch-scaled LR x optim.lr_mult)."""
    curve = [m["val_acc"] for m in record.metrics() if "val_acc" in m]
    out: dict = {by_epoch("val_acc"): curve} if curve else {}
    optim, train = config.get("optim", {}), config.get("train", {})
    if {"lr_per_128", "lr_scaling"} <= optim.keys() and "batch_size" in train:
        out["peak_lr"] = peak_lr(optim, train["batch_size"])
    return out


def write_collected(
    folder: Path, experiment: str, damaged: list[DamagedRun] | None = None
) -> pd.DataFrame:
    """Collect and write ``<results>/<profile>/collected/<experiment>.{parquet,csv}``."""
    df = collect_runs(folder, experiment, damaged)
    out = Path(folder) / "collected"
    out.mkdir(parents=True, exist_ok=True)
    if not df.empty:
        df = df.sort_values([c for c in ("norm.name", "train.batch_size", "seed") if c in df])
    df.to_parquet(out / f"{experiment}.parquet", index=False)
    df.to_csv(out / f"{experiment}.csv", index=False)
    return df
