"""C10 smoothness: BN makes the loss landscape smoother (Santurkar et al. 2018, Fig. 4).

During training, every few steps, on the batch about to be trained on, the loss and its gradient
are measured at w − η·g for step sizes η along the gradient g (normexp.train.landscape.
landscape_along_gradient): the loss range over the steps ("loss landscape"), the largest change
of the gradient ("gradient predictiveness", lower is more predictive) and the largest gradient
change per unit of distance moved ("effective β-smoothness"). Per run each is averaged over the
probe points of training; the curves over training come from the summary lists
(``probe_steps``, ``probe_*_series``). The same runs sweep the learning rate, with and without
BN: "the range of learning rates that train".

Verdict rule. (a) Landscape, at the reference learning rate REFERENCE_LR (0.1 per 128, the LR of
C9; else the grid LR nearest to it in log scale), paired by seed: with r_L = log10(loss range
with BN / without) and r_β = log10(β-smoothness with BN / without), *supported* if the 95% CIs of
both lie below 0, *contradicted* if both lie above 0, *inconclusive* otherwise. (b) LR range: an
LR "trains" a norm if none of its runs diverged or failed and their mean final test accuracy is
at least 10% + half of (the best cell's accuracy − 10%), the best over both norms and all LRs;
*supported* if more grid LRs train BN than no norm, *contradicted* if fewer, *inconclusive* if
as many, or if a cell has fewer than 2 finished (ok, diverged or failed) runs, or the best cell
is less than MIN_GAIN_PP = 5 pp above chance (nothing trained: the count would be noise). The
claim is *supported* if (a) and (b) both are, *contradicted* if one is contradicted and neither
is supported, *inconclusive* otherwise. The estimate is r_β. In (a), "CI lies below/above 0"
is decided by paired t-tests over seeds of r_L and r_β against 0, Holm-adjusted as a family of
two; (b) is a count, not a test. The report shows (a) and (b) as two rows, C10 (a) and C10 (b).
"""

import math
from pathlib import Path

import pandas as pd

from normexp.analysis import columns as col
from normexp.analysis.curves import (
    color,
    curve,
    label,
    landscape_notes,
    ok_runs,
    plot_curve,
    save_landscape,
    scale_note,
    usable,
)
from normexp.analysis.stats import mean_ci
from normexp.analysis.style import ci_line, figure, mark_not_run
from normexp.analysis.verdict import by_seed, conjunction, finite, holm_family, sub_verdict
from normexp.analysis.verdict.paired import difference
from normexp.analysis.verdict.spec import Claim, Grid, Quote

EXPERIMENT = "smoothness"
REFERENCE_LR = 0.1  # per 128 examples: the LR at which the landscape is compared (as in C9)
CHANCE = 0.1  # CIFAR-10
MIN_GAIN_PP = 5.0  # the best cell must beat chance by this much for the LR range to mean anything
ANCHOR = (
    "Santurkar et al. 2018, Fig. 4: VGG on CIFAR-10, along the gradient the loss varies less, the "
    "gradient changes less and the effective β-smoothness is lower with BN, throughout training; "
    "Sec. 1 and Fig. 1: BN trains at larger learning rates (qualitative)"
)
CLAIM = Claim.from_doc("C10", EXPERIMENT, ANCHOR, __doc__)
NORMS = ("none", "batch")
PROBES = (
    ("loss_range", "Loss range along the step", "max − min of L(w − ηg)"),
    ("grad_predictiveness", "Gradient predictiveness", "max ‖∇L(w) − ∇L(w − ηg)‖₂"),
    ("beta_smoothness", "Effective β-smoothness", "max ‖∇L(w) − ∇L(w − ηg)‖₂ / ‖ηg‖₂"),
)


def _lrs(df: pd.DataFrame) -> list[float]:
    return sorted(float(v) for v in df[col.LR].dropna().unique())


def reference_lr(df: pd.DataFrame) -> float | None:
    """REFERENCE_LR if the grid has it, else the grid LR nearest to it in log scale."""
    lrs = _lrs(df)
    if not lrs:
        return None
    return min(lrs, key=lambda lr: abs(math.log(lr / REFERENCE_LR)))


def lr_cells(df: pd.DataFrame) -> pd.DataFrame:
    """Per (norm, LR): mean final test accuracy (%) with 95% CI over finished runs, and the count
    of runs that diverged or failed."""
    rows = []
    for (norm, lr), cell in df.groupby([col.NORM, col.LR]):
        ok = cell[cell[col.STATUS] == "ok"]
        mean, lo, hi = mean_ci(list(100 * ok[col.TEST_ACC].astype(float)))
        bad = int(cell[col.STATUS].isin(["diverged", "failed"]).sum())
        rows.append(
            {
                "norm": norm,
                "lr": float(lr),
                "acc": mean,
                "lo": lo,
                "hi": hi,
                "ok": len(ok),
                "bad": bad,
            }
        )
    return pd.DataFrame(rows)


def trains(cells: pd.DataFrame) -> tuple[dict[str, list[float]], float]:
    """({norm: LRs that train it}, the accuracy threshold in %) as the verdict rule says."""
    best = cells["acc"].max()
    if not math.isfinite(best):
        return {n: [] for n in cells["norm"].unique()}, math.nan
    threshold = 100 * CHANCE + 0.5 * (best - 100 * CHANCE)
    good = cells[(cells["bad"] == 0) & (cells["ok"] > 0) & (cells["acc"] >= threshold)]
    return (
        {n: sorted(good[good["norm"] == n]["lr"]) for n in cells["norm"].unique()},
        threshold,
    )


def _scale_note(df: pd.DataFrame) -> str:
    return f"{scale_note(df)}, step sizes η ∈ {df[col.PROBE_STEP_SIZES].iloc[0]}"


def draw(tables: dict, out: Path, results_dir: Path | None = None) -> Path:
    df = col.table(tables, EXPERIMENT)
    fig = figure(6.4)
    axes = list(fig.subplots(2, 2).flat)
    note = None
    if not usable(df, col.PROBE_STEP_SIZES):
        for ax in axes:
            mark_not_run(ax, EXPERIMENT)
    else:
        note = _scale_note(df)
        ref = reference_lr(df)
        for ax, (key, title, ylabel) in zip(axes[:3], PROBES, strict=True):
            for norm in NORMS:
                runs = ok_runs(df, {col.NORM: norm, col.LR: ref})
                xs, m, lo, hi = curve(runs, col.probe_series(key), col.PROBE_STEPS, log=True)
                if xs:
                    style = {"color": color(norm), "label": f"{label(norm)} ({len(runs)} runs)"}
                    plot_curve(ax, xs, m, lo, hi, **style)
            ax.set(xlabel="training step", ylabel=ylabel, title=f"{title} (LR {ref} per 128)")
            ax.set_yscale("log")
        ax = axes[3]
        cells = lr_cells(df)
        trained, threshold = trains(cells)
        for norm in [n for n in NORMS if n in set(cells["norm"])]:
            c = cells[cells["norm"] == norm].sort_values("lr")
            ci_line(ax, c["lr"], c["acc"], c["lo"], c["hi"], color=color(norm), label=label(norm))
            bad = c[c["bad"] > 0]
            ax.plot(bad["lr"], [100 * CHANCE] * len(bad), "x", color=color(norm), ms=9, mew=2)
        if math.isfinite(threshold):
            ax.axhline(threshold, color="black", ls=":", lw=1)
            ax.annotate("“trains” threshold", (0.02, threshold), va="bottom",
                        xycoords=("axes fraction", "data"))  # fmt: skip
        ax.set_xscale("log")
        ax.set(
            xlabel="peak learning rate per 128 examples",
            ylabel="final test accuracy (%)",
            title="Learning rates that train (×: diverged)",
        )
    return save_landscape(
        fig, axes, out, "C10: the loss landscape along the gradient, with and without BN", note,
        ANCHOR,
    )


def _log_ratios(df: pd.DataFrame, probe: str, lr: float) -> dict:
    bn = by_seed(df, col.probe_mean(probe), {col.NORM: "batch", col.LR: lr})
    none = by_seed(df, col.probe_mean(probe), {col.NORM: "none", col.LR: lr})
    ratios = {
        s: math.log10(bn[s] / none[s])
        for s in set(bn) & set(none)
        if min(bn[s], none[s]) > 0 and math.isfinite(bn[s]) and math.isfinite(none[s])
    }
    return difference(ratios, dict.fromkeys(ratios, 0.0), claimed_sign=-1)


def verdict(tables: dict) -> dict:
    """C10's verdict: (a) the landscape at the reference LR, (b) the range of LRs that train."""
    df = col.table(tables, EXPERIMENT)
    if not usable(df, col.PROBE_STEP_SIZES):
        return CLAIM.not_run_yet()
    if not set(NORMS) <= set(df[col.NORM]):
        return CLAIM.not_run_yet("needs runs of both none and batch")
    ref = reference_lr(df)
    tests_a = _landscape_tests(df, ref)
    t_p = _log_ratios(df, "grad_predictiveness", ref)  # reported, not tested
    part_a, by_a = _landscape_call(tests_a)
    cells = lr_cells(df)
    trained, threshold = trains(cells)
    n_bn, n_none = len(trained.get("batch", [])), len(trained.get("none", []))
    n_lrs = len(_lrs(df))
    part_b = _lr_range_call(cells, n_bn, n_none, n_lrs)
    t_b = tests_a["β-smoothness"]
    counts = f"BN {n_bn}/{n_lrs}, no norm {n_none}/{n_lrs}"
    sub = [
        sub_verdict(
            "C10 (a)",
            "BN makes the loss landscape smoother",
            part_a,
            f"log10(BN / no norm) of the {by_a} at LR {ref} per 128",
            tests_a[by_a],
        ),
        sub_verdict(
            "C10 (b)",
            "BN trains at a wider range of learning rates",
            part_b,
            f"grid LRs that train: {counts} (a count)",
            {"mean": n_bn - n_none, "seeds": int(cells["ok"].min()) if len(cells) else 0},
        ),
    ]
    return CLAIM.verdict(
        _claim_call(part_a, part_b),
        _effect_text(ref, tests_a, t_p, counts),
        estimate=t_b["mean"],
        ci=tuple(t_b["ci"]),
        sub=sub,
        notes=landscape_notes(
            df,
            _scale_note(df),
            "the landscape is probed on training batches at the weights training reached, so a "
            "norm that trains slower is probed elsewhere",
        ),
        details={
            "parts": {"smoother_landscape": part_a, "wider_lr_range": part_b},
            "reference_lr_per_128": ref,
            "log10_loss_range_ratio": _finite_ci(tests_a["loss range"]),
            "log10_beta_ratio": _finite_ci(t_b),
            "log10_grad_change_ratio": _finite_ci(t_p),
            "lrs_that_train": trained,
            "trains_threshold_pct": finite(threshold),
            "acc_by_lr_pct": {
                f"{row.norm}@{row.lr:g}": finite(row.acc) for row in cells.itertuples()
            },
        },
    )


def _landscape_tests(df: pd.DataFrame, ref: float) -> dict[str, dict]:
    """(a)'s tests at the reference LR, Holm-adjusted as a family of two, by their report names."""
    tests = {
        "loss range": _log_ratios(df, "loss_range", ref),
        "β-smoothness": _log_ratios(df, "beta_smoothness", ref),
    }
    holm_family(tests.values())
    return tests


def _landscape_call(tests: dict[str, dict]) -> tuple[str, str | None]:
    """(call, the deciding test's name) of (a), with fewer than 2 seeds in either test
    inconclusive."""
    call_a, by = conjunction(tests)
    if any(t["seeds"] < 2 for t in tests.values()):
        call_a = "inconclusive"
    elif call_a == "contradicted" and not all(
        t["decision"] == "contradicted" for t in tests.values()
    ):
        call_a = "inconclusive"  # contradicted only when both ratios are above 0
    return call_a, by


def _lr_range_call(cells: pd.DataFrame, n_bn: int, n_none: int, n_lrs: int) -> str:
    """(b) from the count of grid LRs that train BN and none (of ``n_lrs``): inconclusive when
    the grid or a cell is too small to count, or nothing beat chance by MIN_GAIN_PP."""
    best = cells["acc"].max()
    if (
        n_lrs < 2
        or (cells["ok"] + cells["bad"]).min() < 2
        or not best >= 100 * CHANCE + MIN_GAIN_PP
    ):
        return "inconclusive"
    return "supported" if n_bn > n_none else "contradicted" if n_bn < n_none else "inconclusive"


def _claim_call(part_a: str, part_b: str) -> str:
    parts = [part_a, part_b]
    if parts == ["supported", "supported"]:
        return "supported"
    if "contradicted" in parts and "supported" not in parts:
        return "contradicted"
    return "inconclusive"


def _effect_text(ref: float, tests_a: dict[str, dict], t_p: dict, counts: str) -> str:
    t_l, t_b = tests_a["loss range"], tests_a["β-smoothness"]
    (r_l, (l_lo, l_hi)), (r_b, (b_lo, b_hi)), (r_p, (p_lo, p_hi)) = (
        (t["mean"], t["ci"]) for t in (t_l, t_b, t_p)
    )
    return (
        f"at LR {ref} per 128, log10(BN / no norm) of the loss range {r_l:+.2f} "
        f"[{l_lo:+.2f}, {l_hi:+.2f}], of the effective β-smoothness {r_b:+.2f} "
        f"[{b_lo:+.2f}, {b_hi:+.2f}], of the gradient change {r_p:+.2f} [{p_lo:+.2f}, "
        f"{p_hi:+.2f}] ({t_b['seeds']} seeds); LRs that train: {counts}"
    )


def _finite_ci(test: dict) -> list[float | None]:
    """[mean, lo, hi] of a test, None where not finite."""
    return [finite(v) for v in (test["mean"], *test["ci"])]


QUOTE = Quote(
    zh="参数重整后的损失曲面比未重整前的参数损失曲面平滑许多(平滑程度用L-Lipschitz函数来评估)。",
    en=(
        "After this reparametrization the loss surface is much smoother than before "
        "(smoothness measured by L-Lipschitzness)."
    ),
)
DASHBOARD = (
    Grid(
        "Landscape probes per norm and learning rate",
        ("smoothness",),
        ("norm.name", "optim.lr_per_128"),
        curves=("probe/loss_range", "probe/grad_predictiveness", "probe/beta_smoothness"),
        scatter=("optim.lr_per_128", "probe/beta_smoothness_mean"),
        parallel=("norm.name", "optim.lr_per_128", "probe/beta_smoothness_mean"),
        log_x=True,
    ),
)
ANALYSIS = CLAIM.analysis(
    "BN makes the loss landscape smoother",
    (EXPERIMENT,),
    draw,
    verdict,
    quote=QUOTE,
    dashboard=DASHBOARD,
    about_training=("C10 (a)", "C10 (b)"),  # the landscape along training; the LRs it trains at
)
