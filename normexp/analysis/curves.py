"""The per-run series of the instrumented runs (C9's and C10's: training accuracy, gradient and
loss landscape along the steps), drawn as curves with their 95% CI over runs: read from the
collected table's list cells, the two claims' shared colours and labels, and the captions of
their figures. Shared here so that neither claim module imports the other."""

import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from normexp.analysis import columns as col
from normexp.analysis.stats import mean_ci
from normexp.analysis.style import caption, ci_line, finish, norm_color, norm_label, save_figure
from normexp.analysis.verdict import failures, join_notes, ok_mask

COLORS = {"noisy_batch": "#e377c2"}
LABELS = {"noisy_batch": "noisy BN"}

_TOKEN = re.compile(r"-?inf|nan|None|[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def color(norm: str) -> str:
    return COLORS.get(norm, norm_color(norm))


def label(norm: str) -> str:
    return LABELS.get(norm, norm_label(norm))


def parse_list(value: object) -> list[float]:
    """A summary list back from a table cell: a list, or its text as the collected table keeps
    it (``"[0.1, None, inf]"``); None and NaN become NaN; a missing cell gives []."""
    if isinstance(value, list | tuple | np.ndarray):
        return [math.nan if v is None else float(v) for v in value]
    if not isinstance(value, str):
        return []
    return [math.nan if t == "None" else float(t) for t in _TOKEN.findall(value)]


def ok_runs(df: pd.DataFrame, where: dict[str, object]) -> pd.DataFrame:
    """Finished (status ok) runs whose columns equal ``where`` ({column: wanted})."""
    return df if df.empty else df[ok_mask(df, where)]


def curve(
    runs: pd.DataFrame,
    column: str,
    x_column: str | None = None,
    *,
    transform: Callable[[float], float] | None = None,
    log: bool = False,
) -> tuple[list[float], list[float], list[float], list[float]]:
    """(x, mean, lo, hi) over the runs of a per-run list column: 95% CI over runs at each index,
    the lists cut to the shortest. ``transform`` maps each value first; with ``log`` the mean and
    CI are taken of log10 (geometric mean, for positive quantities drawn on a log axis); values
    that are not finite (or not positive with ``log``) are left out. x: ``x_column``'s list of the
    first run, else 1, 2, …"""
    if column not in runs:
        return [], [], [], []
    lists = [parse_list(v) for v in runs[column]]
    lists = [[transform(x) for x in v] if transform else v for v in lists if v]
    if not lists:
        return [], [], [], []
    n = min(len(v) for v in lists)
    xs = parse_list(runs[x_column].iloc[0])[:n] if x_column and x_column in runs else []
    if len(xs) < n:
        xs = list(range(1, n + 1))
    mean, lo, hi = [], [], []
    for i in range(n):
        values = [v[i] for v in lists if math.isfinite(v[i]) and (v[i] > 0 or not log)]
        m, a, b = mean_ci([math.log10(v) for v in values] if log else values)
        if log:
            m, a, b = (10**t if math.isfinite(t) else math.nan for t in (m, a, b))
        mean.append(m)
        lo.append(a)
        hi.append(b)
    return xs, mean, lo, hi


def plot_curve(ax, xs: Sequence, mean: Sequence, lo: Sequence, hi: Sequence, **kw) -> None:  # noqa: ANN001
    ci_line(ax, xs, mean, lo, hi, fmt="o-", ms=2.5, lw=1.4, **kw)


def usable(df: pd.DataFrame, *columns: str) -> bool:
    """Runs of one CNN at one batch size over norms (and LRs), with a test accuracy."""
    return col.has_rows(df, col.NORM, col.BATCH, col.LR, *columns) and col.TEST_ACC in df


def scale_note(df: pd.DataFrame) -> str:
    """'quick profile, 4000 train images, batch 128': the scale the figure and notes state."""
    n_train = col.first(df, col.N_TRAIN)
    images = f", {int(n_train)} train images" if n_train is not None else ""
    return f"{col.first(df, col.PROFILE, '?')} profile{images}, batch {df[col.BATCH].iloc[0]}"


def landscape_notes(df: pd.DataFrame, scale: str, caveat: str) -> str:
    """The verdict's notes: failed runs, the scale and what it means for the comparison."""
    return join_notes(failures(df), f"scale: {scale}; {caveat}")


def save_landscape(  # noqa: PLR0913
    fig,  # noqa: ANN001 - a matplotlib Figure
    axes,  # noqa: ANN001
    out: Path,
    title: str,
    note: str | None,
    anchor: str,
    model: str = "VGG-style CNN",
) -> Path:
    """The figure at ``out``; when runs were drawn (a scale ``note``), first grids and legends on
    every panel, and the scale and the anchor in a caption below them."""
    if note is not None:
        for ax in axes:
            finish(ax)
        caption(
            fig,
            f"Ours: CIFAR-10 {model}, {note}; mean and 95% CI "
            "over seeds (geometric on log axes). Anchor: " + anchor,
        )
    return save_figure(fig, out, title)
