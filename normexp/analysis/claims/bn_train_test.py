"""C5 bn_train_test: BN's statistics differ between training and inference.

No runs of its own: the BN runs of bn_small_batch (plain protocol) evaluate the same trained
network three ways on the same test set, so the comparisons are paired within each run:
``test_acc`` — inference as deployed, BN normalizes with its running averages (EMA);
``test_acc_batch_stats`` — BN normalizes each test batch by its own statistics, batches of the
training batch size, as in training; ``test_acc_precise_bn`` — population statistics recomputed
after training over large training batches ("precise BN", Wu & Johnson 2021).

The BN runs of bn_small_batch_resnet (the CIFAR ResNet) are evaluated the same way; the rule is
applied to each architecture apart, and the one whose baseline shows no norm clearly worse than
BN decides (normexp/analysis/verdict/architecture.py; stated at the end of the rule).

Verdict rule: ``RULE`` below (normexp/analysis/verdict/rule.py writes its text).
"""

from pathlib import Path

import pandas as pd

from normexp.analysis import columns as col
from normexp.analysis.style import (
    NEUTRAL,
    REFERENCE,
    ci_line,
    log2_axis,
    mark_not_run,
    norm_color,
    panels,
    save_figure,
)
from normexp.analysis.verdict import architecture, by_seed, failures
from normexp.analysis.verdict.paired import cell_stats, difference, fmt_ci, json_safe
from normexp.analysis.verdict.record import select
from normexp.analysis.verdict.rule import Part, Rule
from normexp.analysis.verdict.spec import Claim, Grid, Quote

EXPERIMENT = "bn_small_batch"
RESNET = "bn_small_batch_resnet"  # the same cells on the CIFAR ResNet (its own store folder)
NAME = "bn_train_test"
MAX_BATCH = 32  # the baseline's batch: BN runs only at >= 32 (the ResNet's at quick) decide none
EQUIVALENCE_PP = 0.5
ANCHOR = (
    "Wu & Johnson 2021 (Rethinking 'Batch' in BatchNorm): the EMA population statistics used at "
    "inference can differ from the true population statistics (precise BN fixes it), and "
    "training-time batch statistics differ from population ones most at small batches"
)
RULE = Rule(
    preamble=(
        f"At the smallest batch size of the grid below {MAX_BATCH} (an architecture whose BN runs "
        f"are all at {MAX_BATCH} or more, the ResNet's baseline at quick, has no C5 cell), Δ = "
        "accuracy(batch statistics) − accuracy(running averages), in percentage points, paired "
        "by seed"
    ),
    parts=(
        Part(
            "C5",
            "BN's statistics differ in training and inference",
            "test accuracy at batch {small}, batch statistics − running averages, pp",
            "Δ",
            "≠ 0",
            why="the statistics used in training and those used at inference give different "
            "accuracies",
            margin=EQUIVALENCE_PP,
        ),
    ),
    unit="pp of test accuracy",
    estimate="Δ",
    postscript=(
        "The details give Δ and the precise-BN difference (precise − running averages, how far "
        "the EMA is from the population statistics) at every batch size."
    ),
)
CLAIM = Claim("C5", NAME, ANCHOR, RULE.text())
NO_RUNS = f"no finished BN runs of {EXPERIMENT} with batch-statistics accuracy"
# One BN network evaluated three ways: BN's colour, a line style each.
MODES = {
    col.TEST_ACC: ("running averages (deployed)", "o-"),
    col.TEST_ACC_BATCH_STATS: ("batch statistics", "s--"),
    col.TEST_ACC_PRECISE_BN: ("precise BN (recomputed)", "^:"),
}
DIFFERENCES = (  # (key of per_batch, label, colour, style): paired differences, no norm's colour
    ("batch_minus_running", "batch statistics − running", "black", "s-"),
    ("precise_minus_running", "precise BN − running", NEUTRAL, "^:"),
)


def bn_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The BN runs; their batch-statistics accuracy may be missing (not measured yet)."""
    if not col.has_rows(df, col.NORM, col.BATCH):
        return pd.DataFrame()
    return df[df[col.NORM] == "batch"]


def _measured(df: pd.DataFrame) -> bool:
    return not df.empty and col.TEST_ACC in df and col.TEST_ACC_BATCH_STATS in df


def per_batch(df: pd.DataFrame) -> dict:
    """{batch: {"batch_minus_running": diff, "precise_minus_running": diff}} in pp."""
    out = {}
    for batch in sorted(int(b) for b in df[col.BATCH].unique()):
        running = by_seed(df, col.TEST_ACC, {col.BATCH: batch})
        row = {}
        for key, column in (
            ("batch_minus_running", col.TEST_ACC_BATCH_STATS),
            ("precise_minus_running", col.TEST_ACC_PRECISE_BN),
        ):
            other = by_seed(df, column, {col.BATCH: batch}) if column in df else {}
            other = {s: v for s, v in other.items() if v == v}  # NaN: not measured in that run
            row[key] = difference(other, running, scale=100)
        out[batch] = row
    return out


def draw(tables: dict, out: Path, results_dir: Path | None = None) -> Path:
    df = bn_runs(col.table(tables, EXPERIMENT))
    fig, (ax, ax_diff) = panels(2, 3.6)
    if not _measured(df):
        mark_not_run(ax, f"{EXPERIMENT} (BN runs)")
        mark_not_run(ax_diff, f"{EXPERIMENT} (BN runs)")
    else:
        sizes = sorted(int(b) for b in df[col.BATCH].unique())
        for column, (label, style) in MODES.items():
            if column not in df:
                continue
            rows = []
            for b in sizes:
                vals = [v for v in by_seed(df, column, {col.BATCH: b}).values() if v == v]
                rows.append(cell_stats(vals, 100) + (b,))
            rows = [r for r in rows if r[3] > 0]
            if rows:
                stats = [[r[i] for r in rows] for i in (4, 0, 1, 2)]
                ci_line(ax, *stats, color=norm_color("batch"), label=label, fmt=style)
        diffs = per_batch(df)
        for key, label, color, style in DIFFERENCES:
            xs = [b for b in sizes if diffs[b][key]["seeds"] > 0]
            means = [diffs[b][key]["mean"] for b in xs]
            lo = [diffs[b][key]["ci"][0] for b in xs]
            hi = [diffs[b][key]["ci"][1] for b in xs]
            ci_line(ax_diff, xs, means, lo, hi, color=color, label=label, fmt=style)
        ax_diff.axhline(0, color=REFERENCE, lw=1)
        ax_diff.axhspan(-EQUIVALENCE_PP, EQUIVALENCE_PP, color="#cccccc", alpha=0.4, lw=0)
        for a in (ax, ax_diff):
            log2_axis(a, sizes, "training batch size")
        seed_counts = df[df[col.STATUS] == "ok"].groupby(col.BATCH)[col.SEED].nunique()
        lo, hi = int(seed_counts.min()), int(seed_counts.max())
        seeds = f"{lo} seeds" if lo == hi else f"{lo}-{hi} seeds per batch size"
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"Ours: one BN CNN evaluated 3 ways\n(mean, 95% CI, {seeds})")
        ax_diff.set_ylabel("paired difference (pp), 95% CI")
        band = f"±{EQUIVALENCE_PP} pp"
        ax_diff.set_title(f"Differences (grey: within {band},\nno practical difference)")
    return save_figure(
        fig,
        out,
        "C5: BN's accuracy with training-time vs inference-time statistics "
        "(anchor: Wu & Johnson 2021, qualitative)",
    )


def verdict_of(tables: dict) -> dict:
    """C5's verdict from one architecture's tables (its runs under bn_small_batch's name)."""
    df = bn_runs(col.table(tables, EXPERIMENT))
    diffs = per_batch(df) if _measured(df) else {}
    small = deciding_batch(diffs)
    if small is None:
        return CLAIM.not_run_yet(NO_RUNS)
    d = diffs[small]["batch_minus_running"]
    result, tests = RULE.decide({"C5": dict(d)})  # a copy: the details keep the raw test
    precise = diffs[small]["precise_minus_running"]
    effect = (
        f"at batch {small}, accuracy with batch statistics minus with running averages: "
        f"{fmt_ci(d)} ({d['seeds']} seeds)"
    )
    if precise["seeds"]:
        effect += f"; precise BN minus running averages: {fmt_ci(precise)}"
    return CLAIM.verdict(
        result,
        effect,
        d,
        sub=RULE.sub_verdicts(tests, small=small),
        notes=failures(df),
        details=json_safe({"small_batch": small, "per_batch_pp": diffs}),
    )


def deciding_batch(diffs: dict) -> int | None:
    """The batch size the rule reads: the smallest below MAX_BATCH with measured seeds."""
    measured = [
        b for b, d in diffs.items() if d["batch_minus_running"]["seeds"] > 0 and b < MAX_BATCH
    ]
    return measured[0] if measured else None


def deciding_of(tables: dict) -> dict:
    """The cell that decides C5 on one architecture: BN at the batch size the rule reads."""
    df = bn_runs(col.table(tables, EXPERIMENT))
    small = deciding_batch(per_batch(df)) if _measured(df) else None
    return {EXPERIMENT: select(df, {col.BATCH: small}) if small is not None else df}


# Decided per architecture (normexp/analysis/verdict/architecture.py): its baseline rule picks
# which.
PER_ARCHITECTURE = architecture.PerArchitecture(EXPERIMENT, RESNET, verdict_of, deciding_of)

QUOTE = Quote(
    zh="训练时和推理时统计量不一致",
    en="The statistics differ between training and inference.",
)
DASHBOARD = (
    Grid(
        "BN runs: three kinds of statistics per batch size",
        ("bn_small_batch",),
        ("train.batch_size",),
        bars=("test/acc", "test/acc_batch_stats", "test/acc_precise_bn"),
        parallel=(
            "train.batch_size",
            "test/acc",
            "test/acc_batch_stats",
            "test/acc_precise_bn",
        ),
        where="Config('norm.name') = 'batch'",
    ),
)
ANALYSIS = CLAIM.analysis(
    "BN's statistics differ between training and inference",
    (EXPERIMENT, RESNET),
    draw,
    per_architecture=PER_ARCHITECTURE,
    quote=QUOTE,
    dashboard=DASHBOARD,
)
