"""The budget ladder: how each deciding statistic moves as the training budget grows.

The checked cells' seeds of record also train at fractions of their budget (stage ladder,
``protocol.ladder``; normexp/protocol/plan.py). A rung is one fraction: the claim's own rule is
applied to a copy of its tables in which, cell by cell and seed by seed, the ladder run at that
fraction stands in for the run of record (cells without ladder runs keep theirs), so every
statistic is computed exactly as the verdict computes it. The record itself is the top rung
(fraction 1); the verdict is read there, and its regime (normexp/analysis/verdict/regime.py)
comes from the convergence check, which doubles it. Each architecture a claim is decided on
gets its own series (its verdict reports the other architecture's beside it).
"""

import textwrap
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from normexp.analysis import columns as col
from normexp.analysis.columns import Tables
from normexp.analysis.style import REFERENCE, ci_line, figure, save_figure

LADDER = "ladder"  # the stage of a ladder run
RUNG = "ladder.fraction"  # at_rung's mark on a run standing in for its run of record
BUDGET_COLUMNS = (col.EPOCHS, "train.steps")


def _budget(df: pd.DataFrame) -> pd.Series:
    """Each run's budget: train.steps where a step budget is set, else train.epochs."""
    epochs = df[col.EPOCHS] if col.EPOCHS in df else pd.Series(float("nan"), df.index)
    steps = df["train.steps"] if "train.steps" in df else pd.Series(float("nan"), df.index)
    return steps.where(steps.notna(), epochs).astype(float)


def _stage(df: pd.DataFrame) -> pd.Series:
    return df[col.STAGE].fillna("record") if col.STAGE in df else pd.Series("record", df.index)


def _identity(df: pd.DataFrame) -> list[tuple]:
    """Each run's cell and seed, its budget left out (a ladder run's is its record's)."""
    same = [
        c for c in (*col.CONFIG_COLUMNS, col.SEED, col.LR_MULT)
        if c in df and c not in BUDGET_COLUMNS
    ]  # fmt: skip
    return [tuple(row) for row in df[same].astype(str).itertuples(index=False)]


def fractions(df: pd.DataFrame) -> dict[int, float]:
    """{row index of a ladder run: its budget as a fraction of its run of record's}."""
    if df.empty or col.STAGE not in df:
        return {}
    stage, budget = _stage(df), _budget(df)
    record = df[stage == "record"]
    record_budget = dict(zip(_identity(record), budget[record.index], strict=True))
    ladder = df[stage == LADDER]
    out = {}
    for index, key in zip(ladder.index, _identity(ladder), strict=True):
        if key in record_budget and record_budget[key] > 0:
            out[index] = round(float(budget[index] / record_budget[key]), 4)
    return out


def at_rung(df: pd.DataFrame, fraction: float) -> pd.DataFrame:
    """``df`` with the ladder runs at ``fraction`` of their budget as its runs of record, in
    place of the runs of record of the same cells and seeds (the others kept)."""
    rung = [i for i, f in fractions(df).items() if f == fraction]
    if not rung:
        return df[_stage(df) == "record"]
    ladder = df.loc[rung]
    standing_in = set(_identity(ladder))
    record = df[_stage(df) == "record"]
    kept = record[[key not in standing_in for key in _identity(record)]]
    rung_runs = ladder.assign(**{col.STAGE: "record", RUNG: fraction})
    return pd.concat([kept, rung_runs], ignore_index=True)


def with_ladder_runs(record: pd.DataFrame, raw: pd.DataFrame | None) -> pd.DataFrame:
    """Runs of record plus the ladder runs of the raw collected table (the statistics read the
    runs of record alone, through ``columns.table``; ``series`` reads the rungs)."""
    if raw is None or raw.empty or col.STAGE not in raw:
        return record
    ladder = raw[_stage(raw) == LADDER]
    return pd.concat([record, ladder], ignore_index=True) if not ladder.empty else record


def rungs(tables: Tables) -> list[float]:
    """The fractions below the record that some ladder run of ``tables`` trained at."""
    return sorted({f for df in tables.values() for f in fractions(df).values() if f < 1})


def series(
    verdict_of: Callable[[Tables], dict],
    tables: Tables,
    deciding: Callable[[Tables], Tables] | None = None,
) -> dict:
    """The claim's statistics at every rung: {"fractions": [..., 1.0], "points": {sub-claim:
    {architecture: [[fraction, estimate, lo, hi, seeds], ...]}}, "mixed": [...]} (no rungs:
    {}). A rung where some deciding run has no ladder run to stand in for it would mix budgets
    in one statistic: it is left out and listed in ``mixed``."""
    below = rungs(tables)
    if not below:
        return {}
    points: dict[str, dict[str, list]] = {}
    statistics: dict[str, str] = {}  # what each sub-claim's estimate is, for the figure
    mixed = []
    for fraction in [*below, 1.0]:
        at = {e: at_rung(df, fraction) for e, df in tables.items()}
        if fraction < 1 and not _all_at_rung(deciding(at) if deciding else at):
            mixed.append(fraction)
            continue
        verdict = verdict_of(at)
        for arch, subs in _by_architecture(verdict).items():
            for sub in subs:
                if sub.get("estimate") is None:
                    continue
                lo, hi = sub.get("ci") or (None, None)
                row = [fraction, sub["estimate"], lo, hi, sub.get("seeds", 0)]
                points.setdefault(sub["id"], {}).setdefault(arch, []).append(row)
                statistics.setdefault(sub["id"], sub.get("statistic") or "estimate")
    if len(mixed) == len(below):  # no rung below the record to draw
        return {"fractions": [], "points": {}, "mixed": mixed}
    return {"fractions": [*below, 1.0], "points": points, "mixed": mixed,
            "statistics": statistics}  # fmt: skip


def mixed_note(fractions: list[float]) -> str:
    """The report's sentence on rungs left out of a claim's ladder."""
    rungs = ", ".join(f"×{f:g}" for f in fractions)
    return (
        f"rung {rungs} left out: some deciding cell has no ladder run there (the ladder trains "
        "the checked cells only), so its statistic would mix budgets"
    )


def _all_at_rung(deciding: Tables) -> bool:
    """Whether every deciding run of record is a ladder run standing in (none at its own
    budget)."""
    runs = [col.table(deciding, k) for k in deciding]
    return all(RUNG in df and df[RUNG].notna().all() for df in runs if not df.empty)


def _by_architecture(verdict: dict) -> dict[str, list[dict]]:
    """{architecture: its sub-verdicts} of a verdict (one architecture: "")."""
    subs = verdict.get("sub") or [{**verdict, "id": verdict["claim"]}]
    arch = (verdict.get("details") or {}).get("architecture")
    if not arch:
        return {"": subs}
    out = {arch.get("name", arch["decided_on"]): subs}
    for other in (arch.get("others") or {}).values():
        out[other.get("name", "")] = [s for s in other.get("sub", []) if "id" in s]
    return out


def draw(ladder: dict, out: Path, title: str) -> Path:
    """One panel per sub-claim and architecture (one scale each): the statistic's estimate and
    95% CI at every rung, against the budget as a fraction of the record's (log2 axis)."""
    points = ladder["points"]
    panels = [(sub, arch, rows) for sub, by in points.items() for arch, rows in by.items()]
    cols = min(2, len(panels))
    nrows = -(-len(panels) // cols)
    fig = figure(0.8 + 2.9 * nrows)
    axes = fig.subplots(nrows, cols, squeeze=False)
    for ax, (sub, arch, rows) in zip(axes.flat, panels, strict=False):
        rows = sorted(rows)
        nan = float("nan")
        lo = [nan if r[2] is None else r[2] for r in rows]
        hi = [nan if r[3] is None else r[3] for r in rows]
        ci_line(ax, [r[0] for r in rows], [r[1] for r in rows], lo, hi, color="black")
        ax.axhline(0, color=REFERENCE, lw=1)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ladder["fractions"], [f"×{f:g}" for f in ladder["fractions"]])
        ax.minorticks_off()
        ax.set_xlabel("budget, × the record's (verdict: ×1)")
        statistic = ladder.get("statistics", {}).get(sub, "the statistic")
        ax.set_ylabel(textwrap.fill(f"{statistic} (95% CI)", 40))
        ax.set_title(f"{sub}" + (f" ({arch})" if arch else ""))
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    return save_figure(fig, out, title)
