"""Every verdict names the training budget it holds at (README "How verdicts are decided").

Regime rule (written before any run of record under it). A sub-claim is decided *at convergence*
when every one of its deciding cells passes the convergence check
(normexp/analysis/verdict/convergence.py: twice the budget improves the final validation metric
by less than 1 pp of accuracy, 0.01 bpc or 0.1 dB) at the budget the verdict is read at.
Otherwise it is decided *at a fixed budget*, named with the budget and the largest gain a
deciding cell still makes when its budget doubles; a deciding cell that is not checked never
counts as converged. A sub-claim about final performance decided only at a fixed budget reads
*inconclusive (under-trained)*: its call at that budget is kept beside it (``call_at_budget``),
never in its place. A sub-claim about training itself (how fast a network trains, what its loss
landscape is along training: a claim's ``about_training``) keeps its call and names its budget.
A sub-claim decided by runs of its own (a claim that reads other claims, C11: each row rests on
its source's deciding runs, ``ClaimAnalysis.sub_deciding``) gets the regime of those runs; the
claim reads under-trained when any of its sub-claims does.
"""

from collections.abc import Iterable, Mapping

import pandas as pd

from normexp.analysis import columns as col
from normexp.analysis.columns import Tables
from normexp.analysis.verdict.convergence import (
    cell_columns,
    cell_convergence,
    gain_text,
    record_runs,
)

CONVERGED = "at convergence"
FIXED = "at a fixed budget"
UNDER_TRAINED = "under-trained"
CALLS = ("supported", "contradicted", "inconclusive")  # "not run yet" has no regime to name
OWN_RUNS = "deciding_runs"  # a sub-claim judged on runs of its own: the names of their tables


def deciding_cells(raw: Tables, deciding: Tables) -> pd.DataFrame:
    """The convergence check of every cell holding a deciding run: one row per cell
    (``converged`` True/False, None when not checked; ``gain`` in ``unit``), from the raw collected
    tables (the check runs pair with the runs of record there)."""
    rows = []
    for key, runs in deciding.items():
        if runs.empty:
            continue
        table = raw_table_of(raw, runs)
        cells = [c for c in cell_columns(record_runs(table)) if c in runs]
        checked = cell_convergence(table, cells)
        if cells:
            checked = checked.merge(runs[cells].drop_duplicates(), on=cells, how="inner")
        rows.append(checked.assign(deciding=key))
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()


def raw_table_of(raw: Tables, runs: pd.DataFrame) -> pd.DataFrame:
    """The raw collected table that holds ``runs`` (found by run key: a per-architecture
    claim's deciding tables are named after the architecture, not the store folder)."""
    keys = set(runs[col.RUN_KEY]) if col.RUN_KEY in runs else set()
    for table in raw.values():
        if col.RUN_KEY in table and keys & set(table[col.RUN_KEY]):
            return table
    return runs


def budget_text(deciding: Tables) -> str:
    """The deciding runs' budget in words: '8 epochs × 10,000 images' (several: each); from
    the finished runs (a diverged run records no data size)."""
    found = [
        _budget(r)
        for runs in deciding.values()
        if not runs.empty
        for _, r in runs[runs[col.STATUS] == "ok"].iterrows()
    ]
    return "; ".join(dict.fromkeys(b for b in found if b)) or "its budget"


def _budget(run: pd.Series) -> str:
    steps, epochs, images = (run.get(c) for c in ("train.steps", col.EPOCHS, col.N_TRAIN))
    if steps is not None and not pd.isna(steps):
        return f"{int(steps):,} steps"
    if epochs is None or pd.isna(epochs):
        return ""
    per = f" × {int(images):,} images" if images is not None and not pd.isna(images) else ""
    return f"{int(epochs)} epochs{per}"


def regime_of_runs(raw: Tables, deciding: Tables) -> dict:
    """The regime of the runs of record ``deciding`` (a claim's compared cells: its baseline's
    left out), their convergence checks read in ``raw``."""
    return regime_of(deciding_cells(raw, deciding), budget_text(deciding))


def regime_of(cells: pd.DataFrame, budget: str) -> dict:
    """The regime the deciding cells give: ``kind`` (CONVERGED or FIXED), the budget, how many
    cells fail the check or are not checked, and the largest gain of one that fails."""
    if cells.empty:
        return {"kind": FIXED, "budget": budget, "cells": 0, "unconverged": 0, "unchecked": 0}
    failed = cells[cells["converged"] == False]  # noqa: E712 - None: not checked
    unchecked = int(cells["converged"].isna().sum())
    regime = {
        "kind": CONVERGED if failed.empty and not unchecked else FIXED,
        "budget": budget,
        "cells": len(cells),
        "unconverged": len(failed),
        "unchecked": unchecked,
    }
    if not failed.empty:  # per unit: a claim may read a classifier and a language model
        units = failed["unit"] if "unit" in failed else pd.Series("pp", failed.index)
        regime["largest_gain"] = {
            str(u): round(float(g.max()), 3) for u, g in failed["gain"].groupby(units)
        }
    return regime


def largest_gain_text(regime: Mapping) -> str:
    """'+12.1 pp' (or '+12.1 pp, +0.052 bpc'): the largest gain a failing cell makes (a verdict
    stored before gains had units holds it in pp, as ``largest_gain_pp``)."""
    gains = regime.get("largest_gain") or {"pp": regime["largest_gain_pp"]}
    return ", ".join(gain_text(g, u) for u, g in gains.items())


def regime_text(regime: Mapping) -> str:
    """'at convergence (8 epochs × 10,000 images)' or 'at a fixed budget (8 epochs × 10,000
    images): 3 of 4 deciding cells still gain up to +12.1 pp when it doubles; 1 not checked'."""
    head = f"{regime['kind']} ({regime['budget']})"
    if regime["kind"] == CONVERGED:
        return head
    parts = []
    if regime.get("unconverged"):
        parts.append(
            f"{regime['unconverged']} of {regime['cells']} deciding cells still gain up to "
            f"{largest_gain_text(regime)} when it doubles"
        )
    if regime.get("unchecked"):
        parts.append(f"{regime['unchecked']} of {regime['cells']} not checked")
    if not regime.get("cells"):
        parts.append("no deciding cell checked")
    return f"{head}: {'; '.join(parts)}"


def regime_short(regime: Mapping | None) -> str:
    """The regime in a table cell: 'at convergence', or the budget and what it leaves."""
    if not regime:
        return "—"
    if regime["kind"] == CONVERGED:
        return CONVERGED
    left = []
    if regime.get("unconverged"):
        left.append(f"deciding cells still gain up to {largest_gain_text(regime)}")
    if regime.get("unchecked"):
        left.append(f"{regime['unchecked']} not checked")
    return "; ".join([f"fixed budget: {regime['budget']}", *left])


def apply_regime(verdict: dict, regime: dict, about_training: Iterable[str] = ()) -> dict:
    """``verdict`` with its regime named; decided at a fixed budget, each sub-claim about final
    performance (not in ``about_training``) reads inconclusive (under-trained) with its call at
    the budget beside it, and so does the claim when any of its sub-claims does."""
    if verdict["verdict"] not in CALLS:
        return verdict
    verdict["regime"] = dict(regime)
    verdict["regime_text"] = regime_text(regime)
    training = set(about_training)
    parts = verdict.get("sub") or []
    if regime["kind"] != CONVERGED:
        for sub in parts:  # those judged on runs of their own have their own regime
            if OWN_RUNS not in sub:
                _withhold_at_budget(sub, training)
    fixed = regime["kind"] != CONVERGED and not parts and verdict["claim"] not in training
    if fixed or any(s.get("under_trained") for s in parts):
        _under_trained(verdict)
    return verdict


def apply_sub_regime(
    sub: dict, runs: Tables, regime: dict, about_training: Iterable[str] = ()
) -> None:
    """``sub`` judged on runs of its own (``runs``: {table name: runs}) at their ``regime``:
    named, and withheld (under-trained) as ``apply_regime`` would; ``apply_regime`` then leaves
    it as it is."""
    sub[OWN_RUNS] = sorted(runs)
    sub["regime"], sub["regime_text"] = dict(regime), regime_text(regime)
    if regime["kind"] != CONVERGED:
        _withhold_at_budget(sub, set(about_training))


def _withhold_at_budget(sub: dict, training: set[str]) -> None:
    if sub["id"] not in training and sub["verdict"] in CALLS:
        _under_trained(sub)


def _under_trained(v: dict) -> None:
    v["call_at_budget"] = v["verdict"]
    v["verdict"] = "inconclusive"
    v["under_trained"] = True
