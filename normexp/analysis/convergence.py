"""The convergence check, written once (README "Fair protocol").

A run is trained when its validation accuracy improved by less than 1 pp over the last quarter
of training: final value minus the value max(1, epochs // 4) epochs before the end (a one-epoch
run cannot be judged: None). A cell (the runs of record of one configuration, over seeds) passes
when its mean curve over seeds passes: the mean is less noisy than any one seed, and a claim is
decided on means. Per-epoch validation accuracy comes from each run's metrics.jsonl, which
collect puts in the ``val_acc_by_epoch`` column.
"""

from collections.abc import Sequence

import numpy as np
import pandas as pd

from normexp.analysis import columns as col

THRESHOLD = 0.01  # 1 pp of accuracy


def improvement(curve: Sequence[float]) -> float | None:
    """Validation accuracy gained over the last quarter of training (None: one epoch)."""
    n = len(curve)
    if n < 2:
        return None
    return float(curve[-1] - curve[-1 - max(1, n // 4)])


def run_converged(curve: Sequence[float]) -> bool | None:
    gain = improvement(curve)
    return None if gain is None else gain < THRESHOLD


def cell_columns(df: pd.DataFrame) -> list[str]:
    """The configuration columns that vary between a table's runs (its grid's cells)."""
    return [c for c in col.CONFIG_COLUMNS if c in df and df[c].nunique(dropna=False) > 1]


def cell_convergence(df: pd.DataFrame, cells: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per cell of the finished runs: the cell columns, ``runs``, ``gain_pp`` (of the
    mean curve over seeds) and ``converged`` (None where it cannot be judged)."""
    cells = list(cell_columns(df) if cells is None else cells)
    out_columns = [*cells, "runs", "gain_pp", "converged"]
    if df.empty or col.VAL_ACC_BY_EPOCH not in df:
        return pd.DataFrame(columns=out_columns)
    ok = df[(df[col.STATUS] == "ok") & df[col.VAL_ACC_BY_EPOCH].notna()]
    rows = []
    for key, group in ok.groupby(cells, sort=True) if cells else [((), ok)]:
        curves = [list(c) for c in group[col.VAL_ACC_BY_EPOCH]]
        length = min(len(c) for c in curves)
        mean = np.mean([c[:length] for c in curves], axis=0)
        gain = improvement(mean)
        key = key if isinstance(key, tuple) else (key,)
        rows.append(
            {
                **dict(zip(cells, key, strict=True)),
                "runs": len(curves),
                "gain_pp": None if gain is None else 100 * gain,
                "converged": run_converged(mean),
            }
        )
    return pd.DataFrame(rows, columns=out_columns)


def passing(df: pd.DataFrame, cells: Sequence[str]) -> pd.DataFrame:
    """The runs of ``df`` in cells that pass the check (tables without per-epoch curves, from
    before the check existed, pass whole: nothing to judge them by)."""
    if df.empty or col.VAL_ACC_BY_EPOCH not in df:
        return df
    check = cell_convergence(df, cells)
    good = check[check["converged"] == True][list(cells)]  # noqa: E712 - None is not a pass
    return df.merge(good, on=list(cells), how="inner")


def short(column: str) -> str:
    """A config column as a label: norm.name -> norm, train.batch_size -> batch_size."""
    section, _, field = column.rpartition(".")
    return section.rpartition(".")[2] if field == "name" else field


def failing_note(check: pd.DataFrame) -> str:
    """One sentence for a verdict's notes naming the cells that fail the check ('' if none)."""
    failed = check[check["converged"] == False]  # noqa: E712
    if failed.empty:
        return ""
    cells = [c for c in check.columns if c not in ("runs", "gain_pp", "converged")]
    names = "; ".join(
        ", ".join(f"{short(c)}={r[c]}" for c in cells) + f" (+{r['gain_pp']:.1f} pp)"
        for _, r in failed.iterrows()
    )
    return (
        f"Convergence check: {len(failed)} of {len(check)} cells still improved by >= 1 pp of "
        f"validation accuracy over the last quarter of training (under-trained): {names}."
    )
