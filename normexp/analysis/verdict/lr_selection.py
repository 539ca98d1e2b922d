"""The fair protocol in the report: per claim, the LR chosen for each cell, a small figure of
validation accuracy vs LR multiplier (figures/<claim>_lr.png), and the convergence check of the
cells of record (budget doubling: a note in the verdict naming the cells that fail it and
those not checked).

``protocol_entry`` is the one hook the figures step calls per claim; ``protocol_markdown`` the
one the report calls. Selection runs are read here only: every analysis reads runs of record
(``columns.table``)."""

from pathlib import Path

import numpy as np
import pandas as pd

from normexp.analysis import columns as col
from normexp.analysis.columns import Tables, table
from normexp.analysis.style import norm_color, panels, save_figure
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


def draw_lr(raw: Tables, analysis: ClaimAnalysis, out: Path) -> Path | None:
    """Mean validation accuracy (over selection seeds) vs LR multiplier, one line per cell, one
    panel per batch size; the chosen multiplier ringed. None when the claim had no selection."""
    frames = [selection_runs(raw.get(e, pd.DataFrame())) for e in analysis.reads]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return None
    sel = pd.concat(frames, ignore_index=True)
    metric = selection_metric(sel)
    cells = [c for c in cell_columns(sel) if c != col.BATCH]
    batches = sorted(sel[col.BATCH].unique()) if col.BATCH in sel else [None]
    fig, axes = panels(len(batches), (4.2 * len(batches), 3.4))
    for ax, batch in zip(np.atleast_1d(axes), batches, strict=True):
        here = sel if batch is None else sel[sel[col.BATCH] == batch]
        for _, group in here.groupby(cells, sort=True) if cells else [((), here)]:
            grid = sorted(group[col.LR_MULT].astype(float).unique())
            choice = select_lr(group.assign(cell=0), ["cell"], grid, metric)
            score = choice.iloc[0]["score"]
            xs = [g for g in grid if np.isfinite(score.get(g, np.nan))]
            row = group.iloc[0]
            color = norm_color(row[col.NORM]) if col.NORM in row else None
            ax.plot(xs, [score[g] for g in xs], "o-", label=_label(row, cells), color=color)
            best = choice.iloc[0]["chosen"]
            if best is not None and np.isfinite(score[best]):
                ax.plot([best], [score[best]], "o", ms=12, mfc="none", color=color or "black")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("LR multiplier (x batch-scaled base)")
        ax.set_ylabel(METRIC_LABEL.get(metric, metric))
        ax.set_title("selection" + ("" if batch is None else f", batch {batch}"), fontsize=9)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # a panel whose cells all diverged has no line
            ax.legend(frameon=False, fontsize=7)
    label = METRIC_LABEL.get(metric, metric)
    title = f"{analysis.claim}: {label} vs learning rate (ringed: chosen)"
    return save_figure(fig, out, title, title_size=10)


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
