"""The fair protocol in the report: per claim, the LR chosen for each cell, a small figure of
validation accuracy vs LR multiplier (figures/<claim>_lr.png), and the convergence check of the
cells of record (budget doubling: a note in the verdict naming the cells that fail it and
those not checked).

``protocol_entry`` is the one hook the figures step calls per claim; ``protocol_markdown`` the
one the report calls. Selection runs are read here only: every analysis reads runs of record
(``columns.table``)."""

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

from normexp.analysis import columns as col
from normexp.analysis.columns import Tables, table
from normexp.analysis.style import figure, norm_color, norm_label, save_figure
from normexp.analysis.verdict.convergence import cell_columns, cell_convergence, failing_note, short
from normexp.analysis.verdict.spec import ClaimAnalysis
from normexp.protocol.select import select_lr

SELECT_ON = "protocol.select_on"
METRIC_LABEL = {
    "val_acc": "validation accuracy",
    "valid_bpc": "validation bpc (lower: better)",
    "valid_ppl": "validation perplexity (lower: better)",
    "val_psnr": "validation PSNR (dB)",
    "train_acc": "training accuracy (last epoch, as trained)",
    "val_stylization_loss": "validation stylization loss (lower: better)",
}


def selection_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The LR selection's runs of a raw collected table (none without a stage column)."""
    if df.empty or col.STAGE not in df:
        return pd.DataFrame()
    return df[df[col.STAGE] == "select"]


def selection_metric(selection: pd.DataFrame) -> str:
    """The metric the selection runs were chosen on (``protocol.select_on``)."""
    values = selection[SELECT_ON].dropna() if SELECT_ON in selection else pd.Series(dtype=str)
    return str(values.iloc[0]) if len(values) else "val_acc"


def _label(row: pd.Series, columns: list[str]) -> str:
    return " ".join(f"{short(c)}={row[c]}" for c in columns) or "all"


def _keyed(df: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """``columns`` of ``df`` as text, a missing value as '—' (a cell that lacks a parameter,
    e.g. GN's group size for BN, is a cell of its own, not dropped)."""
    return df[columns].astype(object).where(df[columns].notna(), "—").astype(str)


def _value(v: str) -> str:
    """1.0 -> 1, 16.0 -> 16: a config value as a label."""
    try:
        return f"{float(v):g}"
    except ValueError:
        return v


def _order(key: tuple) -> tuple:
    """Panels in order of their values, numbers by value ('2' before '16'), '—' last."""
    out = []
    for v in key:
        try:
            out.append((0, float(v), ""))
        except ValueError:
            out.append((1 if v != "—" else 2, 0.0, v))
    return tuple(out)


def _panel_title(columns: list[str], key: tuple, constant: set[str]) -> str:
    """'cnn, batch 32, group_size 16, epochs 4': a panel's cell group in a few words (a
    parameter the group lacks left out, and one that takes a single value where set:
    ``constant``), wrapped to the panel."""
    words = []
    for c, v in zip(columns, key, strict=True):
        if v == "—" or c in constant:
            continue
        words.append(v if c == col.MODEL else f"{'batch' if c == col.BATCH else short(c)} "
                     f"{_value(v)}")  # fmt: skip
    return textwrap.fill(", ".join(words), 26) or "selection"


def lr_panels(sel: pd.DataFrame) -> tuple[list[str], str | None, list[tuple]]:
    """How the LR figure splits the selection: (the columns that key a panel, the column that
    keys a line within one, the panels' keys in order). A line per norm where the norm varies
    (so the lines of a panel differ in colour), else per value of the varying column with the
    fewest values (drawn in one colour, told apart by style and legend); a panel per value of
    every other varying column, the batch size included."""
    varying = cell_columns(sel)
    if col.BATCH in sel and col.BATCH not in varying and sel[col.BATCH].notna().any():
        varying = [*varying, col.BATCH]  # named in every title even where it is one size
    rest = [c for c in varying if c != col.BATCH]
    line = col.NORM if col.NORM in rest else min(rest, key=lambda c: sel[c].nunique(), default=None)
    panel_cols = [c for c in varying if c != line]
    keys = (
        sorted(set(map(tuple, _keyed(sel, panel_cols).itertuples(index=False))), key=_order)
        if panel_cols else [()]
    )  # fmt: skip
    return panel_cols, line, keys


LINE_STYLES = ("o-", "s--", "^:", "D-.")


def draw_lr(raw: Tables, analysis: ClaimAnalysis, out: Path) -> Path | None:
    """Mean validation accuracy (over selection seeds) vs LR multiplier, one panel per cell
    group (``lr_panels``), a line per norm in its colour; the chosen multiplier ringed. None
    when the claim had no selection."""
    frames = [selection_runs(raw.get(e, pd.DataFrame())) for e in analysis.reads]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return None
    sel = pd.concat(frames, ignore_index=True)
    metric = selection_metric(sel)
    panel_cols, line, keys = lr_panels(sel)
    styles = {}
    if line and line != col.NORM:
        styles = dict(zip(sorted(_keyed(sel, [line])[line].unique()), LINE_STYLES, strict=False))
    ncols = min(3, len(keys))
    nrows = -(-len(keys) // ncols)
    fig = figure(1.2 + 2.25 * nrows)
    head, body = fig.subfigures(2, 1, height_ratios=(0.5, 2.25 * nrows))
    axes = list(body.subplots(nrows, ncols, squeeze=False, sharex=True).flat)
    keyed = _keyed(sel, [*panel_cols, *([line] if line else [])])
    constant = {c for c in panel_cols if sel[c].dropna().astype(str).nunique() <= 1}
    legend: dict[str, object] = {}
    for ax, key in zip(axes, keys, strict=False):
        here = sel[(keyed[panel_cols] == list(key)).all(axis=1)] if panel_cols else sel
        groups = here.groupby(keyed.loc[here.index, line], sort=True) if line else [("", here)]
        for name, group in groups:
            grid = sorted(group[col.LR_MULT].astype(float).unique())
            choice = select_lr(group.assign(cell=0), ["cell"], grid, metric)
            score = choice.iloc[0]["score"]
            xs = [g for g in grid if np.isfinite(score.get(g, np.nan))]
            row = group.iloc[0]
            color = norm_color(row[col.NORM]) if col.NORM in row else "black"
            fmt = styles.get(name, "o-")
            label = norm_label(name) if line == col.NORM else f"{short(line)} {_value(name)}"
            (handle,) = ax.plot(xs, [score[g] for g in xs], fmt, color=color, label=label,
                                mfc="white" if fmt != "o-" else color)  # fmt: skip
            legend.setdefault(label, handle)
            best = choice.iloc[0]["chosen"]
            if best is not None and np.isfinite(score[best]):
                ax.plot([best], [score[best]], "o", ms=11, mfc="none", color=color)
        ax.set_xscale("log", base=2)
        ax.set_title(_panel_title(panel_cols, key, constant), loc="center")
        ax.grid(alpha=0.3)
    for ax in axes[len(keys):]:
        ax.set_visible(False)
    for ax in axes[max(0, len(keys) - ncols) : len(keys)]:  # the lowest shown in each column
        ax.tick_params(labelbottom=True)
    label = METRIC_LABEL.get(metric, metric)
    body.supxlabel("LR multiplier (× the batch-scaled base LR); ringed: chosen")
    body.supylabel(label)
    head.legend(legend.values(), legend.keys(), loc="center", ncols=min(len(legend), 5))
    return save_figure(fig, out, f"{analysis.claim}: {label} against the learning rate, per cell")


def chosen_lrs(record: pd.DataFrame) -> list[dict]:
    """Per cell of the runs of record: its LR multiplier and peak LR."""
    if record.empty or col.LR_MULT not in record:
        return []
    cells = cell_columns(record)
    keep = [*cells, col.LR_MULT, *([col.PEAK_LR] if col.PEAK_LR in record else [])]
    rows = record[keep].drop_duplicates().sort_values(keep)
    return [
        {"cell": _label(r, cells), "lr_mult": float(r[col.LR_MULT]),
         **({"peak_lr": float(r[col.PEAK_LR])} if col.PEAK_LR in r else {})}
        for _, r in rows.iterrows()
    ]


def protocol_entry(raw: Tables, analysis: ClaimAnalysis, results_dir: Path, verdict: dict) -> None:
    """Add the claim's protocol facts to its verdict: chosen LRs, the LR figure, the cells that
    fail the convergence check and those not checked (also as sentences in the notes)."""
    entry: dict = {}
    figure = draw_lr(raw, analysis, results_dir / "figures" / f"{analysis.name}_lr.png")
    if figure is not None:
        entry["lr_figure"] = f"figures/{figure.name}"
    failing = []
    for experiment in analysis.reads:
        record = table(raw, experiment)
        if chosen := chosen_lrs(record):
            entry.setdefault("chosen_lr", {})[experiment] = chosen
        # The raw table: the check runs pair with the runs of record there (never in ``record``).
        check = cell_convergence(raw.get(experiment, pd.DataFrame()))
        if not check["declared"].any():
            continue  # an experiment that declares no check (reported, not deciding)
        if note := failing_note(check):
            failing.append(f"{experiment}: {note}")
        counts = {
            "unconverged_cells": int((check["converged"] == False).sum()),  # noqa: E712
            "unchecked_cells": int(check["converged"].isna().sum()),
        }
        for name, n in counts.items():
            if n:
                entry.setdefault(name, {})[experiment] = n
    if failing:
        verdict["notes"] = " ".join([verdict.get("notes") or "", *failing]).strip()
    if entry:
        verdict["protocol"] = entry


def protocol_markdown(verdict: dict) -> list[str]:
    """The report's lines for a claim's protocol entry (none without one)."""
    entry = verdict.get("protocol")
    if not entry:
        return []
    lines = []
    for experiment, cells in entry.get("chosen_lr", {}).items():
        chosen = "; ".join(f"{c['cell']}: x{c['lr_mult']:g}" for c in cells)
        lines += [f"*Chosen LR ({experiment}, multiplier of the batch-scaled base).* {chosen}", ""]
    if "lr_figure" in entry:
        lines += [f"[Validation accuracy vs LR]({entry['lr_figure']})", ""]
    for name, what in (("unconverged_cells", "fail it"), ("unchecked_cells", "not checked")):
        for experiment, n in entry.get(name, {}).items():
            lines += [f"*Convergence check ({experiment}).* {n} cell(s) {what}: see the notes.", ""]
    return lines
