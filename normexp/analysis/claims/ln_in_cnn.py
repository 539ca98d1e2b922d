"""C8 ln_in_cnn: LN in CNNs is worse than BN or GN (and IN worse still, in the GN paper).

No runs of its own: the runs of bn_small_batch at batch sizes ≥ 32, where BN has enough samples
per statistic (the GN paper's comparison is at 32 images per GPU). Only (norm, batch) cells that
pass the convergence check (normexp/analysis/verdict/convergence.py) are used; the notes name
the others.
The same cells of bn_small_batch_resnet (LN, BN, GN at 32 on the CIFAR ResNet) are decided by the
same rule apart, and the architecture whose baseline shows no norm clearly worse than BN decides
(normexp/analysis/verdict/architecture.py; stated at the end of the rule).

Verdict rule. For each seed, a norm's test error is averaged over the batch sizes ≥ 32 of the
grid that every compared norm has (32, 64, 128 at quick), so every seed contributes one paired
value per norm; LN − BN and LN − GN are then paired differences over seeds (pp of test error,
95% CI, paired t-test over seeds, the two Holm-adjusted as one family). "Worse than BN or GN"
means worse than each of them: *supported* if both adjusted tests reject 0 with LN worse;
*contradicted* if either rejects with LN better; *inconclusive* otherwise.
The estimate is LN − BN. IN − BN and IN − LN are reported in the details, not decided on.
Without a batch size at which LN, BN and GN all pass the check there is no test: the verdict is
*inconclusive (under-trained)* when a deciding cell failed the check, *not run yet* when the
runs or their checks are still missing.
"""

from pathlib import Path

import numpy as np
import pandas as pd

from normexp.analysis import columns as col
from normexp.analysis.style import (
    anchor_bars,
    mark_not_run,
    norm_color,
    norm_label,
    panels,
    save_figure,
    seed_bar,
    wrap,
)
from normexp.analysis.verdict import architecture, conjunction, failures, holm_family, sub_verdict
from normexp.analysis.verdict.anchors import GN_PAPER_ERROR_AT_32
from normexp.analysis.verdict.convergence import (
    THRESHOLD_PP,
    cell_convergence,
    passing,
    record_runs,
)
from normexp.analysis.verdict.paired import difference, fmt_ci, json_safe, pooled_by_seed
from normexp.analysis.verdict.record import select
from normexp.analysis.verdict.spec import Claim, Grid, Quote

EXPERIMENT = "bn_small_batch"
RESNET = "bn_small_batch_resnet"  # LN, BN and GN at 32 on the CIFAR ResNet (its own store folder)
NAME = "ln_in_cnn"
ANCHOR = (
    "GN paper (Wu & He 2018), ResNet-50 ImageNet top-1 error at 32 images per GPU: "
    "BN 23.6, GN 24.1, LN 25.3, IN 28.4 (one run each)"
)
CLAIM = Claim.from_doc("C8", NAME, ANCHOR, __doc__)
MIN_BATCH = 32
NORM_ORDER = ("batch", "group", "layer", "instance", "none")
DECIDING = ("layer", "batch", "group")  # the norms C8 compares
NO_RUNS = (
    f"no finished LN, BN and GN runs of {EXPERIMENT} at batch >= {MIN_BATCH} in cells that pass "
    "the convergence check"
)


def large_batches(df: pd.DataFrame, norms: tuple[str, ...]) -> list[int]:
    """Batch sizes ≥ MIN_BATCH where every one of ``norms`` has a finished run."""
    ok = df[(df[col.STATUS] == "ok") & (df[col.BATCH] >= MIN_BATCH)]
    sizes = None
    for norm in norms:
        have = set(int(b) for b in ok[ok[col.NORM] == norm][col.BATCH])
        sizes = have if sizes is None else sizes & have
    return sorted(sizes or [])


def pooled_error(df: pd.DataFrame, norm: str, batches: list[int]) -> dict[int, float]:
    """{seed: test error (%) averaged over ``batches``} for ``norm``."""
    errs = pooled_by_seed(df, col.TEST_ERR, col.BATCH, batches, {col.NORM: norm})
    return {s: 100 * e for s, e in errs.items()}


def trained_runs(tables: dict) -> pd.DataFrame:
    """The runs of record in (norm, batch) cells that pass the convergence check (the raw
    table: the check's runs pair with the runs of record there; not checked is no pass)."""
    return passing(tables.get(EXPERIMENT, pd.DataFrame()), [col.NORM, col.BATCH])


def under_trained(tables: dict) -> pd.DataFrame:
    """The deciding cells (LN, BN, GN at batch >= MIN_BATCH) whose doubled-budget run gained
    THRESHOLD_PP or more: the runs exist but are shown not to be trained."""
    gains = checked_gains(tables)
    if gains.empty:
        return gains
    return gains[gains[col.NORM].isin(DECIDING) & (gains["converged"] == False)]  # noqa: E712


def _undecided(tables: dict) -> dict:
    """The verdict when no batch size has LN, BN and GN all passing the check: under-trained
    when each of the three has finished runs at batch >= MIN_BATCH and a deciding cell failed;
    else not run yet (runs, or their checks, missing)."""
    failed = under_trained(tables)
    runs = record_runs(tables.get(EXPERIMENT, pd.DataFrame()))
    if failed.empty or not all(large_batches(runs, (n,)) for n in DECIDING):
        return CLAIM.not_run_yet(NO_RUNS)
    gains = failed["gain"]
    effect = (
        f"not decided, under-trained: {len(failed)} deciding cells (LN, BN, GN at batch >= "
        f"{MIN_BATCH}) fail the convergence check (twice the budget raises validation accuracy "
        f"by +{gains.min():.1f} to +{gains.max():.1f} pp), so no batch size has all three "
        "trained; the rule compares passing cells only"
    )
    return CLAIM.verdict(
        "inconclusive",
        effect,
        notes=failures(runs[runs[col.BATCH] >= MIN_BATCH]),
        ci_note="no estimate: under-trained (no batch size with LN, BN and GN all passing the "
        "convergence check)",
        details={"under_trained": True, "failing_cells": len(failed)},
    )


def _usable(df: pd.DataFrame) -> bool:
    return col.has_rows(df, col.NORM, col.BATCH) and col.TEST_ERR in df


def draw(tables: dict, out: Path, results_dir: Path | None = None) -> Path:
    """Left: on the architecture of record, each norm's test error over the batch sizes where
    LN, BN and GN are all trained; without one, what the convergence check measured instead
    (each deciding cell's gain from twice the budget). Right: the anchor."""
    per_arch = PER_ARCHITECTURE.architectures(tables)
    model, _ = architecture.of_record(per_arch, EXPERIMENT, verdict_of, deciding_of)
    mine = per_arch[model]
    arch = architecture.name(model, col.table(mine, EXPERIMENT))
    df = trained_runs(mine)
    fig, (ax, ax_ref) = panels(2, 3.8, (1.5, 1))
    batches = large_batches(df, DECIDING) if _usable(df) else []  # the verdict's batch sizes
    # every norm with runs at all of them (IN and none are shown, not decided on)
    norms = [n for n in NORM_ORDER if batches and set(batches) <= set(large_batches(df, (n,)))]
    gains = checked_gains(mine)
    if batches:
        x = np.arange(len(norms))
        for i, norm in enumerate(norms):
            errs = pooled_error(df, norm, batches)
            seed_bar(ax, i, errs.values(), norm_color(norm), width=0.6)
        ax.set_xticks(x, [norm_label(n) for n in norms])
        ax.set_ylabel("test error (%)")
        sizes = ", ".join(str(b) for b in batches)
        ax.set_title(wrap(f"Ours: CIFAR-10 {arch}, error averaged over batch {sizes}; mean, "
                          "95% CI, seeds", 50))  # fmt: skip
        ax.grid(alpha=0.3, axis="y")
    elif not gains.empty:
        draw_gains(ax, gains, arch)
    else:
        mark_not_run(ax, f"{EXPERIMENT} at batch ≥ {MIN_BATCH}")
    anchor_bars(
        ax_ref,
        GN_PAPER_ERROR_AT_32,
        [norm_color(n) for n in GN_PAPER_ERROR_AT_32],
        [norm_label(n) for n in GN_PAPER_ERROR_AT_32],
        ylabel="top-1 error (%)",
        title="Anchor: GN paper, ResNet-50\nImageNet, 32 images/GPU",
        alpha=0.8,
    )
    return save_figure(fig, out, "C8: LN against BN and GN in a CNN at batch ≥ 32")


def checked_gains(tables: dict) -> pd.DataFrame:
    """The checked cells at batch >= MIN_BATCH (norm, batch, gain, converged), in NORM_ORDER."""
    raw = tables.get(EXPERIMENT, pd.DataFrame())
    if not _usable(raw):
        return pd.DataFrame()
    check = cell_convergence(raw, [col.NORM, col.BATCH])
    check = check[(check[col.BATCH] >= MIN_BATCH) & check["gain"].notna()]
    rank = check[col.NORM].map({n: i for i, n in enumerate(NORM_ORDER)}).fillna(len(NORM_ORDER))
    return check.assign(rank=rank).sort_values(["rank", col.BATCH]).drop(columns="rank")


def draw_gains(ax, gains: pd.DataFrame, arch: str) -> None:  # noqa: ANN001 - a matplotlib Axes
    """Each checked cell's gain from twice the budget (pp of validation accuracy), the trained
    threshold drawn: why C8 has no verdict of its own."""
    x = np.arange(len(gains))
    norms = list(gains[col.NORM])
    ax.bar(x, gains["gain"], color=[norm_color(n) for n in norms], alpha=0.8, width=0.7)
    ax.axhline(THRESHOLD_PP, color="black", lw=1, ls="--", label=f"trained: < {THRESHOLD_PP:g} pp")
    ax.legend(frameon=True, framealpha=0.9, edgecolor="none")
    labels = [
        f"{norm_label(n).replace(' ', chr(10))}\n{int(b)}"
        for n, b in zip(norms, gains[col.BATCH], strict=True)
    ]
    ax.set_xticks(x, labels)
    ax.set_xlabel("norm, batch size")
    ax.set_ylabel("val. accuracy gain, 2× budget (pp)")
    ax.set_title(wrap(f"Ours, {arch}: no batch size with LN, BN and GN all trained "
                      "(convergence check per norm and batch)", 50))  # fmt: skip
    ax.grid(alpha=0.3, axis="y")


def verdict_of(tables: dict) -> dict:
    """C8's verdict from one architecture's tables (its runs under bn_small_batch's name)."""
    df = trained_runs(tables)
    batches = large_batches(df, DECIDING) if _usable(df) else []
    if not batches:
        return _undecided(tables)
    err = {n: pooled_error(df, n, batches) for n in DECIDING}
    ln_bn = difference(err["layer"], err["batch"])
    ln_gn = difference(err["layer"], err["group"])
    holm_family([ln_bn, ln_gn])
    tests = {"LN − BN": ln_bn, "LN − GN": ln_gn}
    result, by = conjunction(tests)
    details = {"batch_sizes": batches, "ln_minus_bn_pp": ln_bn, "ln_minus_gn_pp": ln_gn}
    in_batches = large_batches(df, ("instance", "batch", "layer"))
    if in_batches:
        inst = pooled_error(df, "instance", in_batches)
        details["in_batch_sizes"] = in_batches
        details["in_minus_bn_pp"] = difference(inst, pooled_error(df, "batch", in_batches))
        details["in_minus_ln_pp"] = difference(inst, pooled_error(df, "layer", in_batches))
    effect = (
        f"test error of LN minus BN {fmt_ci(ln_bn)}, LN minus GN {fmt_ci(ln_gn)} "
        f"(averaged over batch {', '.join(map(str, batches))}; {ln_bn['seeds']} seeds)"
    )
    sub = [
        sub_verdict(
            "C8",
            "LN in CNNs is worse than BN or GN",
            result,
            f"{by} test error at batch ≥ {MIN_BATCH}, pp",
            tests[by],
        )
    ]
    return CLAIM.verdict(
        result,
        effect,
        ln_bn,
        sub=sub,
        notes=failures(df[df[col.BATCH] >= MIN_BATCH]),
        details=json_safe(details),
    )


def deciding_of(tables: dict) -> dict:
    """The cells that decide C8 on one architecture: LN, BN and GN at the batch sizes ≥ 32 where
    all three pass the convergence check (the cells its test reads); without such a batch size,
    every LN, BN and GN cell at batch ≥ 32 (the verdict is then under-trained)."""
    df = col.table(tables, EXPERIMENT)
    if not _usable(df):
        return {EXPERIMENT: df}
    trained = trained_runs(tables)
    if batches := (large_batches(trained, DECIDING) if _usable(trained) else []):
        return {EXPERIMENT: select(trained, {col.NORM: list(DECIDING), col.BATCH: batches})}
    large = df[df[col.BATCH] >= MIN_BATCH]
    return {EXPERIMENT: select(large, {col.NORM: list(DECIDING)})}


# Decided per architecture (normexp/analysis/verdict/architecture.py): its baseline rule picks
# which.
PER_ARCHITECTURE = architecture.PerArchitecture(EXPERIMENT, RESNET, verdict_of, deciding_of)

QUOTE = Quote(
    zh=(
        "但Layer Normalization目前看好像也只适合应用在RNN场景下，在CNN等环境下效果是不如BatchNorm"
        "或者GroupNorm等模型的。"
    ),
    en=(
        "But Layer Normalization seems suited to RNNs only; in CNNs it is worse than "
        "BatchNorm or GroupNorm."
    ),
)
DASHBOARD = (
    Grid(
        "Test error per norm at batch >= 32",
        ("bn_small_batch",),
        ("norm.name", "train.batch_size"),
        bars=("test/err",),
        scatter=("train.batch_size", "test/err"),
        where="Config('train.batch_size') >= 32",
        log_x=True,
    ),
)
ANALYSIS = CLAIM.analysis(
    "LN in CNNs is worse than BN or GN",
    (EXPERIMENT, RESNET),
    draw,
    per_architecture=PER_ARCHITECTURE,
    quote=QUOTE,
    dashboard=DASHBOARD,
)
