"""The convergence check, written once (README "Fair protocol"; configs/config.yaml, protocol).

Rule: a cell counts as trained when training it for twice its budget (train.epochs x2, or
train.steps x2 when a step budget is set; the LR schedule spans the doubled budget; everything
else identical, same seed) improves its final validation metric by less than a stated amount:
1 pp of accuracy for a classifier, 0.01 bits per character for the character LSTM (a sixth of
the BN-LSTM's 0.06 bpc gain in Cooijmans et al.), 0.1 dB of PSNR for an image-to-image network,
1% of the held-out loss for the Gram-loss stylization (a loss has no natural unit: relative, as
1 pp of a classifier's ~70% and 0.01 of the LSTM's ~1.5 bpc are about 1%) (``CHECK_RULES``; a
table is judged on the first of these metrics its runs log).

Why not "improved by < 1 pp over the last quarter of training": every classification run uses a
one-cycle schedule that anneals the LR to 0 over that quarter, so the gain there measures the
schedule, not under-training, and almost no run passes it.

The doubled run (``protocol.stage`` check, planned by normexp/protocol/plan.py for the cells an
experiment declares in ``protocol.check``) is trained on the cell's first seed of record at the
LR multiplier the selection chose, and paired with that seed's run of record: ``gain`` is how
much better its final validation metric is than the run of record's, in ``unit``. A check run
is never a run of record (``columns.table`` leaves it out of every verdict table); it is read
here only, from the raw collected table. A cell without a finished pair is *not checked*
(``converged`` None): never a pass, and reported as "not checked", not as failed.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from normexp.analysis import columns as col
from normexp.protocol.subgrid import in_subgrid, runs_check


@dataclass(frozen=True)
class CheckRule:
    metric: str  # the final validation metric the check compares
    scale: float  # gain = scale x (doubled - record): positive is better, in ``unit``
    threshold: float  # a cell is trained when its gain is below this
    unit: str
    relative: bool = False  # the difference over the record's value (a loss without a unit)

    def gain(self, record: float, doubled: float) -> float:
        """How much better the doubled run is, in ``unit``."""
        return self.scale * (doubled - record) / (abs(record) if self.relative else 1.0)


CHECK_RULES = (  # in the order a table is matched: the first metric its runs log decides
    CheckRule("val_acc", 100.0, 1.0, "pp"),
    CheckRule("valid_bpc", -1.0, 0.01, "bpc"),
    CheckRule("val_psnr", 1.0, 0.1, "dB"),
    CheckRule("val_stylization_loss", -100.0, 1.0, "%", relative=True),
)
ACCURACY = CHECK_RULES[0]
THRESHOLD_PP = ACCURACY.threshold  # a classifier's rule, in pp of validation accuracy
CHECK_STAGE = "check"
# Columns in which a check run differs from its run of record by construction.
BUDGET_COLUMNS = (col.EPOCHS, "train.steps")
PAIR = ("record_value", "check_value", "gain")


def check_rule(df: pd.DataFrame) -> CheckRule:
    """The rule that judges the runs of ``df``: the first of CHECK_RULES whose metric they log
    (a classifier's when none does)."""
    for rule in CHECK_RULES:
        if rule.metric in df and df[rule.metric].notna().any():
            return rule
    return ACCURACY


def converged(gain: float | None, rule: CheckRule = ACCURACY) -> bool | None:
    """The rule on one doubled-budget gain (in ``rule.unit``): True below its threshold; None:
    not checked."""
    if gain is None or pd.isna(gain):
        return None
    return bool(gain < rule.threshold)


def _stage(df: pd.DataFrame) -> pd.Series:
    return df[col.STAGE].fillna("record") if col.STAGE in df else pd.Series("record", df.index)


def check_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The convergence check's runs of a raw collected table (none in older tables)."""
    return df[_stage(df) == CHECK_STAGE] if not df.empty else df


def with_check_runs(record: pd.DataFrame, raw: pd.DataFrame | None) -> pd.DataFrame:
    """Runs of record plus the check runs of the raw collected table ``raw`` (the table the
    check's pairing reads; ``columns.table`` still gives the runs of record alone)."""
    checks = check_runs(raw) if raw is not None else pd.DataFrame()
    if checks.empty:
        return record
    return pd.concat([record, checks], ignore_index=True)


def record_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The runs of record of a raw collected table, as ``columns.table`` gives them."""
    return col.table({"x": df}, "x")


def cell_columns(df: pd.DataFrame) -> list[str]:
    """The configuration columns that vary between a table's runs (its grid's cells)."""
    return [c for c in col.CONFIG_COLUMNS if c in df and df[c].nunique(dropna=False) > 1]


def _match_key(row: pd.Series, columns: Sequence[str]) -> tuple:
    """A hashable identity of a run over ``columns`` (NaN and None compare equal)."""
    return tuple(None if pd.isna(v) else str(v) for v in (row.get(c) for c in columns))


def paired_gains(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run of record that has a finished check run: the run of record's row (its
    config columns), ``record_value`` and ``check_value`` (the final validation metric of
    ``check_rule``) and ``gain`` (in its unit; positive: the doubled run is better). A check run
    pairs with the run of record equal to it in every config column but the budget (and stage),
    seed and LR multiplier included; the latest one counts if a cell has several."""
    record = record_runs(df)
    checks = check_runs(df)
    rule = check_rule(df)
    metric = rule.metric
    if record.empty or checks.empty or metric not in df:
        return pd.DataFrame(columns=[*record.columns, *PAIR])
    same = [
        c
        for c in (*col.CONFIG_COLUMNS, col.SEED, col.LR_MULT)
        if c in df and c not in BUDGET_COLUMNS
    ]
    ok = checks[(checks[col.STATUS] == "ok") & checks[metric].notna()]
    if col.FINISHED_AT in ok:
        ok = ok.sort_values(col.FINISHED_AT, na_position="first")
    by_key = {_match_key(r, same): float(r[metric]) for _, r in ok.iterrows()}  # latest wins
    rows = []
    for _, r in record[(record[col.STATUS] == "ok") & record[metric].notna()].iterrows():
        doubled = by_key.get(_match_key(r, same))
        if doubled is not None:
            base = float(r[metric])
            rows.append(
                {**r.to_dict(), "record_value": base, "check_value": doubled,
                 "gain": rule.gain(base, doubled)}
            )
    return pd.DataFrame(rows, columns=[*record.columns, *PAIR])


OUT = ("runs", "seed", "declared", "gain", "unit", "converged")
CHECK_PREFIX = "protocol.check."  # the declared sub-grid, as collect flattens it
CHECK_PROFILES = "protocol.check_profiles"  # the profiles that run it (null: all)


def declared(row: pd.Series) -> bool:
    """Whether a run of record lies in the sub-grid its experiment declared for the check, at
    a profile that runs it: the planner's rule (normexp/protocol/subgrid.py) on a collected row,
    where ``protocol.check`` is flattened to columns and a section such as norm to its name."""
    profiles = row.get(CHECK_PROFILES)
    if not isinstance(profiles, str | list | tuple | np.ndarray):
        profiles = None  # null, or a table from before the field (NaN): every profile
    if not runs_check(row.get(col.PROFILE), profiles):
        return False
    fields = {c[len(CHECK_PREFIX):]: row[c] for c in row.index if c.startswith(CHECK_PREFIX)}
    fields = {k: v for k, v in fields.items() if not pd.isna(v)}
    return in_subgrid(lambda path: row.get(path, row.get(f"{path}.name")), fields)


def declared_flags(record: pd.DataFrame) -> pd.Series:
    """``declared`` of every row, evaluated once per distinct value of the columns it reads
    (a row-wise apply builds a Series per row: seconds on a store of a thousand runs)."""
    checks = [c for c in record.columns if c.startswith(CHECK_PREFIX)]
    paths = {c[len(CHECK_PREFIX):] for c in checks}
    reads = [
        c for c in record.columns
        if c in (col.PROFILE, CHECK_PROFILES) or c in checks or c.removesuffix(".name") in paths
    ]  # fmt: skip
    keys = [repr(values) for values in record[reads].itertuples(index=False, name=None)]
    flags: dict[str, bool] = {}
    for position, key in enumerate(keys):
        if key not in flags:
            flags[key] = bool(declared(record.iloc[position]))
    return pd.Series([flags[k] for k in keys], index=record.index, dtype=bool)


def cell_convergence(df: pd.DataFrame, cells: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per cell of the runs of record of the raw collected table ``df`` (check runs
    included): the cell columns, ``runs`` (of record), ``seed`` (the first seed of record, the
    one the check pairs with), ``gain`` (how much the doubled budget improved the final
    validation metric, in ``unit``: ``check_rule``) and ``converged`` (True/False by the rule;
    None: not checked). ``cells`` defaults to the config
    columns that vary between the runs of record."""
    record = record_runs(df)
    cells = list(cell_columns(record) if cells is None else cells)
    out_columns = [*cells, *OUT]
    if record.empty:
        return pd.DataFrame(columns=out_columns)
    col.require(record, (col.STATUS, col.SEED, *cells))  # a renamed column is an error
    pairs = paired_gains(df)
    rule = check_rule(df)
    flags = declared_flags(record)
    rows = []
    for key, group in record.groupby(cells, sort=True, dropna=False) if cells else [((), record)]:
        key = key if isinstance(key, tuple) else (key,)
        here = dict(zip(cells, key, strict=True))
        seed = int(group[col.SEED].min())  # the first seed of record: the check's seed
        mine = pairs[pairs[col.SEED] == seed] if not pairs.empty else pairs
        for c, v in here.items():
            mine = mine[mine[c].isna()] if pd.isna(v) else mine[mine[c] == v]
        # A cell made of several sweep cells (coarser ``cells``) is judged by its worst gain.
        gain = float(mine["gain"].max()) if len(mine) else None
        rows.append({**here, "runs": len(group), "seed": seed,
                     "declared": bool(flags.loc[group.index].all()), "gain": gain,
                     "unit": rule.unit, "converged": converged(gain, rule)})
    return pd.DataFrame(rows, columns=out_columns)


def passing(df: pd.DataFrame, cells: Sequence[str]) -> pd.DataFrame:
    """The runs of record of the raw collected table ``df`` in cells that pass the check. A cell
    not checked does not pass: C8 uses only cells shown to be trained."""
    record = record_runs(df)
    if record.empty:
        return record
    check = cell_convergence(df, cells)
    good = check[check["converged"] == True][list(cells)]  # noqa: E712 - None is not a pass
    return record.merge(good, on=list(cells), how="inner")


def short(column: str) -> str:
    """A config column as a label: norm.name -> norm, train.batch_size -> batch_size."""
    section, _, field = column.rpartition(".")
    return section.rpartition(".")[2] if field == "name" else field


def gain_text(gain: float, unit: str) -> str:
    """A gain in its unit: '+12.1 pp', '+0.052 bpc', '+0.31 dB', '+4.2 %'."""
    digits = {"pp": 1, "bpc": 3, "dB": 2, "%": 1}.get(unit, 2)
    return f"{gain:+.{digits}f} {unit}"


def threshold_text(unit: str) -> str:
    """The rule's threshold in words: '1 pp of validation accuracy'."""
    rule = next((r for r in CHECK_RULES if r.unit == unit), ACCURACY)
    what = {"pp": "of validation accuracy", "bpc": "of validation bpc", "dB": "of validation PSNR",
            "%": "of the validation stylization loss"}
    return f"{rule.threshold:g} {rule.unit} {what.get(rule.unit, '')}".strip()


def _names(rows: pd.DataFrame, cells: list[str], gains: bool) -> str:
    return "; ".join(
        (", ".join(f"{short(c)}={r[c]}" for c in cells) or "all")
        + (f" ({gain_text(r['gain'], r['unit'])})" if gains else "")
        for _, r in rows.iterrows()
    )


def failing_note(check: pd.DataFrame) -> str:
    """One or two sentences for a verdict's notes: the cells that fail the check, and the cells
    not checked ('' if every cell passes)."""
    cells = [c for c in check.columns if c not in OUT]
    failed = check[check["converged"] == False]  # noqa: E712
    unchecked = check[check["converged"].isna()]
    missing = unchecked[unchecked["declared"] == True]  # noqa: E712
    outside = len(unchecked) - len(missing)
    parts = []
    if not failed.empty:
        parts.append(
            f"Convergence check: {len(failed)} of {len(check)} cells fail it (twice the budget "
            f"improved them by at least {threshold_text(failed['unit'].iloc[0])}: "
            f"under-trained): {_names(failed, cells, gains=True)}."
        )
    if not missing.empty:
        parts.append(
            f"Convergence check: {len(missing)} of {len(check)} cells not checked (their run at "
            f"twice the budget is not finished): {_names(missing, cells, gains=False)}."
        )
    if outside:
        parts.append(
            f"Convergence check: {outside} of {len(check)} cells not checked (outside the "
            "sub-grid the experiment declares in protocol.check)."
        )
    return " ".join(parts)
