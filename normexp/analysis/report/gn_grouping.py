"""The report's section on GN's grouping: the ablation that decides it, and which grouping the
claims that compare GN trained it with.

Not a claim: it decides no verdict. It draws, from the runs of record of
experiments/gn_grouping.yaml, ``figures/gn_grouping.png``: per cell (model x batch) the
validation and test error of every arm (mean and 95% CI over seeds; the chosen arm marked), and
a last panel with the decision's statistic, each arm's validation error pooled over the cells
(per seed, then the mean and 95% CI over seeds). Its text states the rule (from the ablation's
declaration), the outcome (recomputed from the runs of record by the planner's own rule,
normexp/protocol/grouping.py ``decide``, and checked against the decision the sweep wrote), a
table of every arm x cell, the cells whose LR sat at the edge of its grid, the GN paper's
grouping table as anchor, and the grouping the GN runs of C4's experiments carry. C4, C8 and
C11's sections get one line saying which grouping their GN used (``claim_line``).
"""

from pathlib import Path

import numpy as np
import pandas as pd

from normexp.analysis import columns as col
from normexp.analysis import style
from normexp.analysis.stats import mean_ci
from normexp.analysis.verdict import anchors
from normexp.analysis.verdict.architecture import name as architecture_name
from normexp.analysis.verdict.grouping import decision_of, describe, gn_groupings
from normexp.analysis.verdict.paired import pooled_by_seed
from normexp.analysis.verdict.spec import ReportSection
from normexp.protocol.grouping import read_decision
from normexp.tracking.store import read_json, selection_path

Tables = dict[str, pd.DataFrame]
NAME = "gn_grouping"
EXPERIMENT = "gn_grouping"
TITLE = "GN's grouping: the ablation that decides it (C4, C8 and C11 train GN with its choice)"
# The experiments that train GN with the decided grouping (protocol.grouping_from), and the
# claims whose sections read their GN runs.
READERS = ("bn_small_batch", "bn_small_batch_resnet", "bn_small_batch_remedies")
READS = (EXPERIMENT, *READERS)
CLAIMS = ("C4", "C8", "C11")
MODEL_ORDER = ("cnn", "resnet")
CHOSEN_COLOR, OTHER_COLOR = style.norm_color("group"), style.REFERENCE  # GN's; grey


def ablation(tables: Tables) -> pd.DataFrame:
    """The ablation's runs of record (empty when not run)."""
    df = col.table(tables, EXPERIMENT)
    return df if col.has_rows(df, col.ARM, col.MODEL, col.BATCH) else pd.DataFrame()


def arm_order(df: pd.DataFrame, decision: dict | None) -> list[str]:
    """The candidates in the rule's order, then the reported arms."""
    arms = list(decision["rule"]["arms"]) if decision else []
    return arms + sorted(set(df[col.ARM]) - set(arms))


def cells(df: pd.DataFrame) -> list[tuple[str, int]]:
    """The (model, batch) cells of the ablation, CNN first, small batch first."""
    pairs = {(str(m), int(b)) for m, b in zip(df[col.MODEL], df[col.BATCH], strict=True)}
    rank = {m: i for i, m in enumerate(MODEL_ORDER)}
    return sorted(pairs, key=lambda p: (rank.get(p[0], len(rank)), p[0], p[1]))


def errors(df: pd.DataFrame, arm: str, model: str, batch: int, metric: str) -> list[float]:
    """Error (%) of one arm in one cell, one value per finished run (ok runs only)."""
    runs = df[(df[col.ARM] == arm) & (df[col.MODEL] == model) & (df[col.BATCH] == batch)]
    ok = runs[runs[col.STATUS] == "ok"]
    return [100 * (1 - float(v)) for v in ok[metric].dropna()] if metric in ok else []


def pooled(df: pd.DataFrame, arm: str) -> list[float]:
    """One arm's validation error (%) per seed, averaged over every cell (the seeds that have
    all of them): the decision's statistic, per seed."""
    runs = df[df[col.ARM] == arm]
    runs = runs.assign(cell=runs[col.MODEL].astype(str) + "/" + runs[col.BATCH].astype(str))
    by_seed = pooled_by_seed(runs, col.VAL_ACC, "cell", sorted(set(runs["cell"])))
    return [100 * (1 - v) for v in by_seed.values()]


def _fmt(values: list[float]) -> str:
    if not values:
        return "—"
    mean, lo, hi = mean_ci(values)
    return f"{mean:.1f} [{lo:.1f}, {hi:.1f}]" if len(values) > 1 else f"{mean:.1f}"


def _point(ax, x: float, values: list[float], color: str, filled: bool) -> None:  # noqa: ANN001
    """The mean of ``values`` with its 95% CI as an error bar (a ring when not ``filled``)."""
    mean, lo, hi = mean_ci(values)
    ax.errorbar(x, mean, yerr=[[mean - lo], [hi - mean]], fmt="s" if filled else "o",
                color=color, mfc=color if filled else "white", capsize=3)


def _arm_axis(ax, xs: np.ndarray, arms: list[str], title: str, ylabel: str) -> None:  # noqa: ANN001
    ax.set_xticks(xs, arms, rotation=30, ha="right", rotation_mode="anchor")
    ax.set_xlim(xs[0] - 0.5, xs[-1] + 0.5)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, axis="y")


def draw(tables: Tables, figures_dir: Path) -> list[Path]:
    """``figures/gn_grouping.png`` (module doc)."""
    out = figures_dir / "gn_grouping.png"
    df = ablation(tables)
    if df.empty:
        fig, ax = style.panels(1, 3.0)
        style.mark_not_run(ax, EXPERIMENT)
        return [style.save_figure(fig, out, "GN's grouping")]
    decision = decision_of(df)
    chosen = decision["chosen"] if decision else None
    arms = arm_order(df, decision)
    grid = cells(df)
    rows = -(-(len(grid) + 1) // 3)
    fig, axes = style.panels(len(grid) + 1, 0.6 + 2.9 * rows, rows=rows)
    xs = np.arange(len(arms))
    color = {arm: CHOSEN_COLOR if arm == chosen else OTHER_COLOR for arm in arms}
    for ax, (model, batch) in zip(np.atleast_1d(axes), grid, strict=False):
        for dx, metric, filled in ((-0.12, col.VAL_ACC, False), (0.12, col.TEST_ACC, True)):
            for x, arm in zip(xs, arms, strict=True):
                values = errors(df, arm, model, batch, metric)
                if values:
                    _point(ax, x + dx, values, color[arm], filled)
        ax.plot([], [], "o", color="black", mfc="white", label="validation")
        ax.plot([], [], "s", color="black", label="test")
        _arm_axis(ax, xs, arms, f"{architecture_name(model, df)}, batch {batch}", "error (%)")
        ax.legend()
    ax = np.atleast_1d(axes)[-1]
    for x, arm in zip(xs, arms, strict=True):
        values = pooled(df, arm)
        if values:
            _point(ax, x, values, color[arm], False)
            ax.plot([x] * len(values), values, ".", color="black", alpha=0.5)
    _arm_axis(ax, xs, arms, "Decides: validation error,\npooled over the cells (dots: seeds)",
              "validation error (%)")
    seeds = int(df[col.SEED].nunique())
    title = (f"GN's grouping: error per arm (mean, 95% CI over {seeds} seed(s)); chosen: "
             f"{chosen or 'not decided yet'} (in GN's colour)")
    return [style.save_figure(fig, out, title)]


def rule_text(decision: dict | None) -> str:
    """The decision rule, written from the rule the ablation declares."""
    if decision is None:
        return "the rule is declared in experiments/gn_grouping.yaml (not run yet)"
    arms, metric = decision["rule"]["arms"], decision["rule"]["select_on"]
    return (
        f"among the candidate arms {', '.join(arms)}, the one with the highest mean final "
        f"validation metric (`{metric}`, never test) over all of its runs of record, pooled over "
        "both models and both batch sizes (every arm has the same cells and seeds); a diverged "
        f"run scores the worst; a tie goes to the first listed ({arms[0]}, the wider group). "
        "Arms not listed are reported, never chosen. Fixed in experiments/gn_grouping.yaml "
        "before any run; applied by the sweep (normexp/protocol/grouping.py), which then trains "
        "the GN runs of C4's experiments with the chosen grouping"
    )


def outcome_text(df: pd.DataFrame, decision: dict | None, results_dir: Path | None) -> str:
    """Which arm decided, its statistic beside the others', and whether the sweep's decision
    file agrees with the runs of record."""
    if decision is None or decision["chosen"] is None:
        return "**Decided:** not yet (no finished runs of record of the candidate arms)."
    chosen = decision["chosen"]
    scores = ", ".join(f"{arm} {_fmt(pooled(df, arm))}" for arm in arm_order(df, decision))
    state = "" if decision["complete"] else " (incomplete: not every candidate cell has run)"
    text = (
        f"**Decided: {chosen}**, {describe(decision['sets'])}{state}. Validation error (%) "
        f"pooled over the cells, mean [95% CI] over seeds: {scores}."
    )
    stored = read_decision(results_dir, EXPERIMENT) if results_dir is not None else None
    if stored is not None and stored.get("chosen") != chosen:
        text += (f" **The sweep's decision file chose {stored.get('chosen')}**, not the runs of "
                 "record's choice: the store changed after the sweep; rerun the sweep.")
    elif stored is not None:
        text += " The sweep's decision (decision.json) is the same."
    return text


def cell_table(df: pd.DataFrame, decision: dict | None) -> list[str]:
    """Markdown rows: arm x cell, validation and test error with 95% CIs over seeds."""
    lines = ["| arm | grouping | model | batch | val error (%) | test error (%) | seeds |",
             "|---|---|---|---|---|---|---|"]
    for arm in arm_order(df, decision):
        mine = df[df[col.ARM] == arm]
        words = describe(next(iter(gn_groupings(mine)), {}))
        mark = " (chosen)" if decision and arm == decision["chosen"] else ""
        for model, batch in cells(df):
            val = errors(df, arm, model, batch, col.VAL_ACC)
            test = errors(df, arm, model, batch, col.TEST_ACC)
            lines.append(f"| {arm}{mark} | {words} | {architecture_name(model, df)} | {batch} | "
                         f"{_fmt(val)} | {_fmt(test)} | {len(test)} |")
    return lines


def edge_text(results_dir: Path | None) -> str:
    """The ablation's cells whose LR selection still chose an edge of its grid."""
    if results_dir is None:
        return ""
    selection = read_json(selection_path(results_dir, EXPERIMENT)) or {}
    edges = [name for name, c in selection.get("cells", {}).items() if c.get("at_edge")]
    if not edges:
        return ""
    return (f"LR at the grid's edge in {len(edges)} cell(s) of the ablation (their best LR may "
            f"lie outside the grid; the decision still stands on them): {'; '.join(edges)}.")


def anchor_text() -> str:
    """The GN paper's grouping table."""
    width = anchors.GN_PAPER_ERROR_BY_CHANNELS_PER_GROUP
    count = anchors.GN_PAPER_ERROR_BY_GROUPS
    row = ", ".join(f"{w}: {e}" for w, e in width.items())
    groups = ", ".join(f"{g}: {e}" for g, e in count.items())
    return (
        "Anchor: GN paper (Wu & He 2018, Table 3), ResNet-50 on ImageNet at 32 images per GPU, "
        f"top-1 error (%) by channels per group ({row}; 1 is IN) and by groups ({groups}; 1 is "
        "LN), one run each. Ours: ResNet-20 and a six-conv CNN on CIFAR-10, 16-64 channels per "
        "layer (ResNet-50: 64-2048), so the widths that leave several groups per layer are "
        "fewer; each arm's LR selected per cell; seeds."
    )


def readers_text(tables: Tables) -> str:
    """The grouping the GN runs of C4's experiments carry."""
    parts = []
    for experiment in READERS:
        groupings = gn_groupings(col.table(tables, experiment))
        if groupings:
            parts.append(f"`{experiment}`: " + "; ".join(describe(g) for g in groupings))
    if not parts:
        return ""
    return "GN in the runs of record of C4's experiments: " + ". ".join(parts) + "."


def markdown(tables: Tables, results_dir: Path | None = None) -> list[str]:
    """The section's text (module doc)."""
    df = ablation(tables)
    decision = decision_of(df) if not df.empty else None
    lines = [f"**Rule.** {rule_text(decision)}.", ""]
    if df.empty:
        return [*lines, f"`{EXPERIMENT}`: not run yet.", ""]
    epochs = col.first(df, col.EPOCHS, "?")
    theirs = {col.first(col.table(tables, e), col.EPOCHS) for e in READERS} - {None, epochs}
    if theirs:  # standard decides at 3 of its 8 epochs (experiments/gn_grouping.yaml says why)
        epochs = f"{epochs} (C4's runs of record: {', '.join(str(e) for e in sorted(theirs))})"
    selected = "the LR selected per cell" if col.first(df, "protocol.lr_grid") is not None else (
        "no LR selection at this profile")
    lines += [
        f"**What was run.** `{EXPERIMENT}`: {len(df)} runs of record, arms "
        f"{', '.join(arm_order(df, decision))} x " + ", ".join(
            f"{architecture_name(m, df)} at batch {b}" for m, b in cells(df))
        + f", {int(df[col.SEED].nunique())} seed(s), {epochs} epoch(s), {selected}.",
        "",
        outcome_text(df, decision, results_dir),
        "",
        *cell_table(df, decision),
        "",
    ]
    for text in (edge_text(results_dir), readers_text(tables), anchor_text()):
        if text:
            lines += [text, ""]
    return lines


def claim_line(tables: Tables, claim: str) -> str:
    """For C4, C8 and C11: the grouping their GN runs used, and where it came from."""
    if claim not in CLAIMS:
        return ""
    groupings = [g for e in READERS for g in gn_groupings(col.table(tables, e))]
    if not groupings:
        return ""
    used = "; ".join(dict.fromkeys(describe(g) for g in groupings))
    df = ablation(tables)
    decision = decision_of(df) if not df.empty else None
    if decision and decision["chosen"] and all(g == decision["sets"] for g in groupings):
        return (f"GN here uses {used}: arm {decision['chosen']}, the grouping `{EXPERIMENT}` "
                "chose on validation before these runs (the section on GN's grouping).")
    return (f"GN here uses {used}, not a grouping `{EXPERIMENT}` decided at this profile (the "
            "section on GN's grouping).")


SECTION = ReportSection(NAME, TITLE, READS, draw, markdown, claim_line, part="gn_grouping",
                        reads_store=True)
