"""Gather the store's runs into one table per experiment (Parquet, plus CSV for eyes)."""

from pathlib import Path

import pandas as pd

from normexp.tracking.store import iter_records

# Config subtrees that say how or where a run was executed, not what it computed.
DROPPED_PREFIXES = ("scale.", "paths.", "runtime.", "tracking.")


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


def collect_runs(results_dir: Path, experiment: str) -> pd.DataFrame:
    """One row per run that has a config: its config fields (dotted), summary, status, error."""
    rows = []
    for record in iter_records(results_dir, experiment):
        config = _read(record.path / "config.json")
        if config is None:
            continue
        status = record.status or {"status": "running"}
        summary = _read(record.path / "summary.json") or {}
        row = {k: v for k, v in _flatten(config).items() if not k.startswith(DROPPED_PREFIXES)}
        row.update(
            {k: v for k, v in summary.items() if k not in ("status", "run_key", "provenance")}
        )
        row.update({f"provenance.{k}": v for k, v in summary.get("provenance", {}).items()})
        row.update(
            run_key=record.key,
            status=status["status"],
            error=status.get("error"),
            finished_at=status.get("time"),
        )
        rows.append(row)
    return pd.DataFrame(rows)


def _read(path: Path) -> dict | None:
    from normexp.tracking.store import read_json

    return read_json(path)


def experiments_in_store(results_dir: Path) -> list[str]:
    runs = Path(results_dir) / "runs"
    return sorted(p.name for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []


def write_collected(results_dir: Path, experiment: str) -> pd.DataFrame:
    """Collect and write ``<results>/collected/<experiment>.{parquet,csv}``."""
    df = collect_runs(results_dir, experiment)
    out = Path(results_dir) / "collected"
    out.mkdir(parents=True, exist_ok=True)
    if not df.empty:
        df = df.sort_values([c for c in ("norm.name", "train.batch_size", "seed") if c in df])
    df.to_parquet(out / f"{experiment}.parquet", index=False)
    df.to_csv(out / f"{experiment}.csv", index=False)
    return df
