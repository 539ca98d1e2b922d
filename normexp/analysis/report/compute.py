"""Compute and provenance per experiment, from the collected tables and <results>/sweeps.jsonl.

Sittings: the sweep lines grouped into the stretches of work they were run in (a line that starts
within SITTING_GAP_S of the previous one's end continues its sitting): the wall time of each, as a
long sweep resumed across sessions is reported.

Sweep wall time comes from the sweep's own record of each sitting when it wrote one; otherwise
from the store, as the first run's start to the last run's finish (a run's finish time is in its
status.json, its duration in its summary).
"""

import time
from pathlib import Path

import pandas as pd

from normexp.analysis import columns as col
from normexp.analysis.columns import Tables, unique_values
from normexp.analysis.verdict.record import declared_seeds
from normexp.tracking.store import read_sittings

SITTING_GAP_S = 15 * 60


def group_sittings(lines: list[dict]) -> list[list[dict]]:
    """The sweep lines (one per experiment command), in stretches of consecutive work."""
    groups: list[list[dict]] = []
    end = None
    for line in sorted(lines, key=lambda s: float(s.get("started", 0.0))):
        start = float(line.get("started", 0.0))
        if end is None or start - end > SITTING_GAP_S:
            groups.append([])
        groups[-1].append(line)
        end = max(end or start, start + float(line.get("wall_s", 0.0)))
    return groups


def _trained(line: dict) -> int:
    """Runs this sweep command trained to an end (ok, diverged or failed; not those it skipped
    as finished before, nor those an interruption left unrun)."""
    counts = line.get("counts", {})
    ended = sum(counts.get(s, 0) for s in ("ok", "diverged", "failed"))
    return max(ended - int(line.get("skipped", 0)), 0)


def sittings_markdown(lines: list[dict]) -> list[str]:
    """One row per sitting: when it began (UTC), its wall time, what it ran, on which code."""
    groups = group_sittings(lines)
    if not groups:
        return []
    out = [
        "Sittings (from `sweeps.jsonl`; consecutive sweep commands are one sitting):",
        "",
        "| sitting | began (UTC) | sweep wall (min) | experiments | runs trained | code "
        "| machine |",
        "|---|---|---|---|---|---|---|",
    ]
    total = 0.0
    for i, group in enumerate(groups, 1):
        start = min(float(s["started"]) for s in group)
        wall = sum(float(s["wall_s"]) for s in group)  # time sweeping, not the pauses between
        total += wall
        names = [
            s.get("experiment", "?") + (" (interrupted)" if s.get("interrupted") else "")
            for s in group
        ]
        trained = sum(_trained(s) for s in group)
        commits = sorted({str(s.get("commit", "?"))[:10] for s in group})
        machines = sorted({f"{s.get('host', '?')}, {s.get('cpu_count', '?')} cores" for s in group})
        began = time.strftime("%Y-%m-%d %H:%M", time.gmtime(start))
        out.append(
            f"| {i} | {began} | {wall / 60:.1f} | {', '.join(names)} | {trained} | "
            f"{', '.join(commits)} | {'; '.join(machines)} |"
        )
    out.append(f"| **total** | | {total / 60:.1f} | | | | |")
    return out


def stage_of(df: pd.DataFrame) -> pd.Series:
    """Each run's stage: the LR protocol's select and check runs have seeds of their own, not
    seeds of record; runs without the protocol are record runs."""
    return df.get("protocol.stage", pd.Series("record", index=df.index)).fillna("record")


def seeds_of_record(df: pd.DataFrame) -> int:
    """Distinct seeds of the record stage that their profile declares (record.of_record leaves
    the others out of verdicts)."""
    if "seed" not in df:
        return 0
    mine = df[stage_of(df) == "record"]
    if "profile" in mine:
        declared = {p: declared_seeds(str(p)) for p in mine["profile"].dropna().unique()}
        pairs = zip(mine["seed"], mine["profile"], strict=True)
        mine = mine[[seed in declared.get(p, ()) for seed, p in pairs]]
    return int(mine["seed"].nunique())


def experiment_compute(tables: Tables, results_dir: Path) -> list[dict]:
    """One row per experiment in the store: runs, seeds, wall and run minutes, code, machine."""
    sittings = read_sittings(results_dir)
    rows = []
    for experiment, df in sorted(tables.items()):
        if df.empty:
            continue
        mine = [s for s in sittings if s.get("experiment") == experiment]
        duration = df.get(col.WALL_TIME, pd.Series(0.0, index=df.index)).fillna(0.0)
        if mine:
            wall_s, source = sum(s["wall_s"] for s in mine), f"{len(mine)} sweep sitting(s)"
        elif col.FINISHED_AT in df and df[col.FINISHED_AT].notna().any():
            finished = df[col.FINISHED_AT]
            wall_s = float(finished.max() - (finished - duration).min())
            source = "store: first start to last finish"
        else:
            wall_s, source = None, "unknown"
        profiles = unique_values(df, col.PROFILE)
        rows.append(
            {
                "experiment": experiment,
                "profiles": profiles,
                "runs": len(df),
                "by_status": df[col.STATUS].value_counts().to_dict(),
                "seeds": seeds_of_record(df),
                "sweep_wall_minutes": None if wall_s is None else wall_s / 60,
                "wall_source": source,
                "training_minutes": float(duration.sum()) / 60,
                "commits": unique_values(df, col.COMMIT),
                "hosts": unique_values(df, col.HOST),
                "devices": unique_values(df, col.DEVICE),
                "machines": unique_values(df, col.MACHINE),
                "threads_per_run": unique_values(df, col.CPU_THREADS),
                "command": f"make run-sweep PROFILE={','.join(profiles)} EXPERIMENT={experiment}",
            }
        )
    return rows


def compute_markdown(rows: list[dict]) -> list[str]:
    """The compute table of the report, with a total row."""
    if not rows:
        return ["No runs in the store yet."]
    lines = [
        "| experiment | profile | runs | seeds of record | sweep wall (min) | training (run-min) "
        "| device, threads/run | code |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        status = ", ".join(f"{n} {s}" for s, n in sorted(r["by_status"].items()))
        lines.append(
            f"| `{r['experiment']}` | {', '.join(r['profiles'])} | {r['runs']} ({status}) | "
            f"{r['seeds']} | {_minutes(r['sweep_wall_minutes'])} | {r['training_minutes']:.1f} | "
            f"{', '.join(r['devices'])}, {', '.join(r['threads_per_run'])} | "
            f"{', '.join(c[:10] for c in r['commits'])} |"
        )
    walls = [r["sweep_wall_minutes"] for r in rows]
    wall = None if None in walls else sum(walls)
    train = sum(r["training_minutes"] for r in rows)
    runs = sum(r["runs"] for r in rows)
    lines.append(f"| **total** | | {runs} | | {_minutes(wall)} | {train:.1f} | | |")
    return lines


def _minutes(value: float | None) -> str:
    return "?" if value is None else f"{value:.1f}"
