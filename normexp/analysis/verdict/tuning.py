"""An LR not known to be tuned makes no verdict (README "How verdicts are decided").

Rule (written before any run of record under it). The LR protocol (normexp/protocol/plan.py)
widens a cell's grid by one x2 step past an edge that wins, at most ``protocol.max_widen``
times. A deciding cell whose choice still sits at an edge of its widened grid (read from its
selection runs in the raw collected table, with the selection rule itself) may have its best LR
outside the grid: the comparison it enters is between a tuned and a possibly untuned network.
Every sub-claim of a claim with such a cell that had a call reads *inconclusive (LR at the
grid's edge)*, its call as run kept beside it (``call_untuned``); the claim's notes name the
cells. This holds for sub-claims about training too (C9 (a) compares how fast BN and noisy BN
train: not meaningful with one of them at the edge of its grid). A cell selected elsewhere (a
choice carried from another batch size) has no selection runs of its own and is not judged.
"""

import pandas as pd

from normexp.analysis import columns as col
from normexp.analysis.columns import Tables
from normexp.analysis.verdict.convergence import cell_columns, record_runs, short
from normexp.analysis.verdict.lr_selection import selection_metric, selection_runs
from normexp.analysis.verdict.regime import CALLS, OWN_RUNS, raw_table_of
from normexp.protocol.select import select_lr


def edge_cells(raw: Tables, deciding: Tables) -> pd.DataFrame:
    """One row per deciding cell whose complete selection chose an edge of its grid: the cell
    columns, ``grid`` (every multiplier its selection ran), ``chosen`` and ``deciding`` (the
    deciding table's name)."""
    rows = []
    for key, runs in deciding.items():
        if runs.empty:
            continue
        table = raw_table_of(raw, runs)
        selection = selection_runs(table)
        if selection.empty:
            continue
        cells = [c for c in cell_columns(record_runs(table)) if c in runs and c in selection]
        mine = selection.merge(runs[cells].drop_duplicates(), on=cells) if cells else selection
        # dropna=False: a column one architecture lacks (the ResNet's final_norm) is NaN there
        groups = mine.groupby(cells, sort=True, dropna=False) if cells else [((), mine)]
        for cell, group in groups:
            cell = cell if isinstance(cell, tuple) else (cell,)
            grid = sorted(group[col.LR_MULT].astype(float).unique())
            seeds = int(group[col.SEED].nunique())
            choice = select_lr(group.assign(cell=0), ["cell"], grid, selection_metric(group), seeds)
            if len(choice) and choice.iloc[0]["complete"] and choice.iloc[0]["at_edge"]:
                rows.append({**dict(zip(cells, cell, strict=True)), "grid": grid,
                             "chosen": float(choice.iloc[0]["chosen"]), "deciding": key})
    return pd.DataFrame(rows)


def edge_note(edges: pd.DataFrame) -> str:
    """A sentence naming the cells chosen at an edge of their grid."""
    cells = [c for c in edges.columns if c not in ("grid", "chosen", "deciding")]
    named = "; ".join(
        ", ".join([f"{r['deciding']}", *(f"{short(c)}={r[c]}" for c in cells)])
        + f" (x{r['chosen']:g} of x{min(r['grid']):g}..x{max(r['grid']):g})"
        for _, r in edges.iterrows()
    )
    return (
        f"LR at the grid's edge: {len(edges)} deciding cell(s) chose an end of their LR grid "
        f"after it was widened as far as protocol.max_widen allows, so their best LR may lie "
        f"outside it and the comparison is not known to be fair: {named}."
    )


def apply_tuning(verdict: dict, edges: pd.DataFrame) -> dict:
    """``verdict`` with every call of the claim withheld when a deciding cell's LR sits at the
    edge of its grid (module doc); unchanged otherwise. A sub-claim judged on runs of its own
    (``apply_sub_tuning``) is left as it is."""
    if edges.empty or verdict["verdict"] not in CALLS:
        return verdict
    note = edge_note(edges)
    verdict["notes"] = " ".join([verdict.get("notes") or "", note]).strip()
    for part in [*(s for s in verdict.get("sub") or [] if OWN_RUNS not in s), verdict]:
        _untuned(part)
    return verdict


def apply_sub_tuning(sub: dict, edges: pd.DataFrame) -> None:
    """A sub-claim judged on runs of its own, withheld when one of their cells' LR sits at the
    edge of its grid; the cells named in its note."""
    if not edges.empty and sub["verdict"] in CALLS:
        sub["note"] = " ".join([sub.get("note") or "", edge_note(edges)]).strip()
        _untuned(sub)


def _untuned(part: dict) -> None:
    if part.get("under_trained"):  # already withheld: its call is beside it
        part["lr_at_edge"] = True
    elif part["verdict"] in CALLS and part["verdict"] != "inconclusive":
        part["call_untuned"], part["verdict"] = part["verdict"], "inconclusive"
        part["lr_at_edge"] = True
