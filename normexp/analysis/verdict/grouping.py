"""GN's grouping in the collected tables: which grouping a table's GN runs used, in words; the
grouping ablation's decision recomputed from its runs of record (the rule the planner applied,
normexp/protocol/grouping.py, on the same runs); and the GN runs of an experiment that takes its
grouping from that decision but carry another one (an earlier design's runs left in the same
store folder: not of record)."""

import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from normexp.analysis import columns as col
from normexp.protocol.grouping import GROUPING_FIELDS as FIELDS
from normexp.protocol.grouping import decide, decision_rule, read_decision

GN = "group"


def _plain(v: object) -> object:
    """A table's value as the config had it: NaN is unset, 8.0 is 8."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return None
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def grouping_of_row(row: Mapping) -> dict:
    """The grouping fields a run set ({field: value}, unset ones left out)."""
    values = {f: _plain(row.get(f)) for f in FIELDS}
    return {f: v for f, v in values.items() if v is not None}


def describe(grouping: Mapping) -> str:
    """A grouping in words, from its fields: 'a constant 8 channels per group in every layer'."""
    width, count = grouping.get(col.CHANNELS_PER_GROUP), grouping.get(col.NUM_GROUPS)
    if width is not None:
        return f"a constant {width} channels per group in every layer"
    if count is not None:
        return f"a constant {count} groups in every layer"
    return (
        "the legacy per-layer rule (32 groups, else the width nearest 16 that leaves 2 groups: "
        "16/32/64 channels in groups of 8, 16, then 2)"
    )


def gn_groupings(df: pd.DataFrame) -> list[dict]:
    """The distinct groupings of a table's GN runs (in the order first met)."""
    if df.empty or col.NORM not in df:
        return []
    seen: list[dict] = []
    for _, row in df[df[col.NORM] == GN].iterrows():
        grouping = grouping_of_row(row)
        if grouping not in seen:
            seen.append(grouping)
    return seen


def rule_of(df: pd.DataFrame) -> dict | None:
    """The ablation's decision rule, as its runs' configs declare it."""
    arms = col.first(df, "protocol.grouping_decision.arms")
    if arms is None:
        return None
    if isinstance(arms, str):  # the text collect writes for a list: "['w16', 'w8']"
        arms = [a.strip().strip("'\"") for a in arms.strip().strip("[]").split(",")]
    metric = col.first(df, "protocol.grouping_decision.select_on", "val_acc")
    rule = {"arms": [str(a) for a in arms], "select_on": metric}
    return decision_rule({"protocol": {"grouping_decision": rule}})


def decision_of(df: pd.DataFrame) -> dict | None:
    """The ablation's decision from its runs of record (``columns.table``): the rule's outcome
    (chosen, score, runs), ``complete`` (every candidate arm has every cell and seed the
    others have, each finished) and ``sets`` (the chosen arm's grouping fields); None without
    runs or a declared rule."""
    rule = rule_of(df)
    if rule is None or col.ARM not in df:
        return None
    mine = df[df[col.ARM].isin(rule["arms"])]
    finished = mine[mine[col.STATUS].isin(("ok", "diverged"))]
    metric = rule["select_on"]
    rows = [
        {"arm": r[col.ARM], "status": r[col.STATUS], metric: _plain(r.get(metric))}
        for _, r in finished.iterrows()
    ]
    outcome = decide(rows, rule)
    counts = set(outcome["runs"].values())
    complete = len(counts) == 1 and counts != {0} and len(finished) == len(mine)
    chosen = outcome["chosen"]
    sets = grouping_of_row(mine[mine[col.ARM] == chosen].iloc[0]) if chosen else {}
    return {**outcome, "rule": rule, "complete": complete, "sets": sets}


def other_grouping(df: pd.DataFrame, results_dir: Path | None) -> pd.Series:
    """The GN runs of a table whose experiment takes GN's grouping from another's decision
    (``protocol.grouping_from`` in its runs' configs) that do not carry the grouping that
    decision chose (in ``results_dir``'s store) or, without a decision there, carry no
    ``grouping_from`` themselves: runs of an earlier design, not of record."""
    none = pd.Series(False, index=df.index)
    if df.empty or col.GROUPING_FROM not in df or col.NORM not in df:
        return none
    sources = df[col.GROUPING_FROM].dropna().unique()
    if len(sources) != 1:
        return none
    gn = df[col.NORM] == GN
    decision = read_decision(results_dir, str(sources[0])) if results_dir is not None else None
    if decision is None:
        return gn & df[col.GROUPING_FROM].isna()
    wanted = {f: _plain(v) for f, v in decision["sets"].items()}
    carries = [grouping_of_row(r) == wanted for _, r in df.iterrows()]
    return gn & ~pd.Series(carries, index=df.index)
