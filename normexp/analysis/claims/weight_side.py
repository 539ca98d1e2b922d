"""C2 weight_side: weight normalization acts on weights, not activations; L1/L2 penalties are
weight-side normalization too: L1 makes weights sparse, L2 makes them small.

Runs: experiments/weight_side.yaml, one CNN and eight arms, seeds paired: BN, no normalization,
WN alone, WN + mean-only BN (all without any penalty), and, on the CNN without activation
normalization, L2 (``optim.weight_decay``) and L1 (``optim.l1``) penalties at two strengths
matched pairwise (equal penalty gradient at |w| = 0.1: l1 = 0.1 × weight_decay). Arms are read
from the config columns (norm.name, model.weight_side, optim.l1, optim.weight_decay), so the
analysis does not depend on the arms' names. Weight statistics are the summary's
``weight_near_zero_frac`` (share of weights with |w| < 1e-3 × the largest |w| of their layer),
``weight_l2_norm`` and ``weight_l1_norm``, over the effective weights of every conv and linear
layer (normexp/train/weight_stats.py).

Verdict rule. Three parts, each a paired difference over seeds with its 95% CI:
(a) "L1 makes weights sparse": at the strongest matched strength, near-zero fraction with L1
minus with L2 > 0 (sparsity specific to L1, not to any penalty); (b) "L2 makes weights small":
at the strongest L2 strength, the L2 norm of the weights relative to the same CNN without any
penalty, 100·(‖w‖_L2/‖w‖_none − 1) < 0; (c) weight normalization does the job of a
normalization: test accuracy of WN alone minus no normalization > 0 (the claim is about WN;
WN + mean-only BN, the pairing Salimans & Kingma recommend, adds an activation-side norm, so
its difference from none is reported beside (c), not decided on). Each part is a sub-claim
(C2a, C2b, C2c) decided by its paired t-test over seeds, the three Holm-adjusted as one family:
supported if the adjusted test rejects 0 with the effect on the claimed side, contradicted if on
the other side, inconclusive otherwise. The claim is *supported* if all three parts are,
*contradicted* if any is, *inconclusive* otherwise; a part whose runs or summary columns are
missing counts as not supported (the verdict is "not run yet"
only when no part can be measured). The estimate is (a), in percentage points of weights.
"""

from pathlib import Path

import numpy as np
import pandas as pd

from normexp.analysis import columns as col
from normexp.analysis.columns import L2_NORM, NEAR_ZERO
from normexp.analysis.style import (
    REFERENCE,
    anchor_bars,
    figure,
    mark_not_run,
    norm_color,
    save_figure,
    seed_bar,
)
from normexp.analysis.verdict import all_parts, by_seed, failures, holm_family, sub_verdict
from normexp.analysis.verdict.anchors import SALIMANS_KINGMA_ERROR
from normexp.analysis.verdict.paired import difference, fmt_ci, json_safe
from normexp.analysis.verdict.spec import Claim, Grid, Quote
from normexp.norms.registry import WEIGHT_SIDE_COLORS

EXPERIMENT = "weight_side"
ANCHOR = (
    "Salimans & Kingma 2016, CIFAR-10 test error of their CNN: plain 8.43%, BN 8.05%, WN 8.46%, "
    "WN + mean-only BN 7.31% (Table 1; one run each); L1/L2: no published anchor at this scale"
)
CLAIM = Claim.from_doc("C2", EXPERIMENT, ANCHOR, __doc__)
CONFIG = (col.NORM, col.WEIGHT_SIDE, col.L1, col.WEIGHT_DECAY)
PLAIN_ARMS = {  # (norm.name, model.weight_side) without any penalty -> arm label
    ("none", "none"): "none",
    ("batch", "none"): "BN",
    ("none", "weight_norm"): "WN",
    ("mean_only_batch", "weight_norm"): "WN + mean-only BN",
}
SUB_CLAIMS = (  # (part, the blog's statement, the statistic that decides it)
    (
        "a_l1_sparser_than_l2",
        "L1 makes weights sparse",
        "near-zero weights, L1 − L2 at the strongest matched strength, pp",
    ),
    (
        "b_l2_smaller_than_none_pct",
        "L2 makes weights small",
        "‖w‖₂ with the strongest L2 relative to no penalty, %",
    ),
    (
        "c_wn_minus_none_acc_pp",
        "WN does the job of a normalization",
        "test accuracy, WN alone − none, pp",
    ),
)
ARM_COLORS = {  # the palette's (normexp.norms.registry.palette)
    "none": norm_color("none"),
    "BN": norm_color("batch"),
    "WN": WEIGHT_SIDE_COLORS["weight_norm"],
    "WN + mean-only BN": norm_color("mean_only_batch"),
}


def arm_color(arm: str) -> str:
    """An arm's colour: its own, else its penalty's (every strength of L1 one, of L2 one)."""
    if arm in ARM_COLORS:
        return ARM_COLORS[arm]
    return WEIGHT_SIDE_COLORS["l1" if arm.startswith("L1") else "l2"]


def arm_label(norm: str, weight_side: str, l1: float, wd: float) -> str:
    """The arm a config belongs to: 'BN', 'WN', 'L2 0.005', 'L1 5e-05', ..."""
    if l1 == 0 and wd == 0:
        return PLAIN_ARMS.get((norm, weight_side), f"{norm} + {weight_side}")
    if (norm, weight_side) == ("none", "none"):
        if l1 == 0:
            return f"L2 {wd:g}"
        if wd == 0:
            return f"L1 {l1:g}"
    return f"{norm} + {weight_side}, L1 {l1:g}, L2 {wd:g}"


def with_arms(df: pd.DataFrame) -> pd.DataFrame:
    if not col.has_rows(df, *CONFIG):
        return pd.DataFrame()
    df = df.copy()
    df["arm"] = [
        arm_label(n, w, float(l1), float(wd))
        for n, w, l1, wd in zip(*(df[c] for c in CONFIG), strict=True)
    ]
    return df


def penalty_levels(df: pd.DataFrame) -> tuple[list[float], list[float]]:
    """(L1 strengths, L2 strengths), each ascending, among the pure-penalty arms."""
    plain = df[(df[col.NORM] == "none") & (df[col.WEIGHT_SIDE] == "none")]
    l1 = sorted({float(v) for v in plain[plain[col.WEIGHT_DECAY] == 0][col.L1] if v > 0})
    l2 = sorted({float(v) for v in plain[plain[col.L1] == 0][col.WEIGHT_DECAY] if v > 0})
    return l1, l2


def arm_order(df: pd.DataFrame) -> list[str]:
    l1, l2 = penalty_levels(df)
    order = [*PLAIN_ARMS.values(), *(f"L2 {v:g}" for v in l2), *(f"L1 {v:g}" for v in l1)]
    present = set(df["arm"])
    return [a for a in order if a in present] + sorted(present - set(order))


def values(df: pd.DataFrame, column: str, arm: str, scale: float = 1.0) -> dict[int, float]:
    """{seed: value × scale} of one arm's finished runs; {} where the runs did not record the
    column (weight statistics are newer than some runs)."""
    if column not in df:
        return {}
    return {s: scale * v for s, v in by_seed(df, column, {"arm": arm}).items() if v == v}


def parts(df: pd.DataFrame) -> dict:
    """The verdict's three parts and the context measured around them."""
    l1, l2 = penalty_levels(df)
    out: dict = {"matched_levels": [], "parts": {}}
    matched = list(zip(l1, l2, strict=False))  # weakest with weakest, strongest with strongest
    for a, b in matched:
        la, lb = f"L1 {a:g}", f"L2 {b:g}"
        out["matched_levels"].append(
            {
                "l1": a,
                "weight_decay": b,
                "near_zero_l1_minus_l2_pp": arm_difference(df, NEAR_ZERO, la, lb),
                "near_zero_l1_minus_none_pp": arm_difference(df, NEAR_ZERO, la, "none"),
                "acc_l1_minus_l2_pp": arm_difference(df, col.TEST_ACC, la, lb),
            }
        )
    if matched:
        out["parts"]["a_l1_sparser_than_l2"] = out["matched_levels"][-1]["near_zero_l1_minus_l2_pp"]
    if l2:
        strong, none = values(df, L2_NORM, f"L2 {l2[-1]:g}"), values(df, L2_NORM, "none")
        rel = {s: 100 * (strong[s] / none[s] - 1) for s in set(strong) & set(none) if none[s]}
        out["parts"]["b_l2_smaller_than_none_pct"] = difference(
            rel, dict.fromkeys(rel, 0.0), claimed_sign=-1
        )
    acc = {arm: values(df, col.TEST_ACC, arm, 100) for arm in PLAIN_ARMS.values()}
    out["parts"]["c_wn_minus_none_acc_pp"] = difference(acc["WN"], acc["none"])
    # beside (c), not decided on: WN with an activation-side norm (mean-only BN) added
    out["wn_mean_only_bn_minus_none_acc_pp"] = difference(acc["WN + mean-only BN"], acc["none"])
    out["wn_mean_only_bn_minus_bn_acc_pp"] = difference(acc["WN + mean-only BN"], acc["BN"])
    out["bn_minus_none_acc_pp"] = difference(acc["BN"], acc["none"])
    return out


def arm_difference(df: pd.DataFrame, column: str, a: str, b: str) -> dict:
    """Arm a − arm b of ``column`` in percentage points, paired by seed."""
    return difference(values(df, column, a), values(df, column, b), 100)


def _bar_panel(ax, df: pd.DataFrame, arms: list[str], column: str, scale: float, ylabel: str):  # noqa: ANN001
    if column not in df:
        mark_not_run(ax, f"{column} (not in the run summaries yet)")
        return
    for i, arm in enumerate(arms):
        vals = list(values(df, column, arm, scale).values())
        if not vals:
            continue
        seed_bar(ax, i, vals, arm_color(arm), width=0.65)
    ax.set_xticks(np.arange(len(arms)), arms, rotation=40, ha="right", rotation_mode="anchor")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, axis="y")


def _c_panel(ax, measured: dict) -> None:  # noqa: ANN001
    """C2 (c): WN alone − none (decides) and WN + mean-only BN − none (reported beside)."""
    shown = (
        ("WN\ndecides", measured["parts"]["c_wn_minus_none_acc_pp"], "WN"),
        ("WN +\nmean-\nonly BN", measured["wn_mean_only_bn_minus_none_acc_pp"], None),
    )
    for i, (_, d, arm) in enumerate(shown):
        if not d["seeds"]:
            continue
        lo, hi = d["ci"]
        color = ARM_COLORS[arm or "WN + mean-only BN"]
        yerr = [[d["mean"] - lo], [hi - d["mean"]]]
        ax.errorbar(i, d["mean"], yerr=yerr, fmt="s", color=color, capsize=3)
    ax.axhline(0, color=REFERENCE, lw=1)
    ax.set_xticks(range(len(shown)), [name for name, _, _ in shown])
    ax.set_xlim(-0.6, len(shown) - 0.4)
    ax.set_ylabel("test accuracy − none (pp)")
    ax.set_title("C2 (c): paired, 95% CI")
    ax.grid(alpha=0.3, axis="y")


def _finished(df: pd.DataFrame) -> bool:
    return not df.empty and col.TEST_ACC in df and (df[col.STATUS] == "ok").any()


def draw(tables: dict, out: Path, results_dir: Path | None = None) -> Path:
    df = with_arms(col.table(tables, EXPERIMENT))
    fig = figure(7.0)
    top, bottom = fig.subfigures(2, 1)
    ax_acc, ax_c, ax_ref = top.subplots(1, 3, width_ratios=(1.7, 0.9, 1.1))
    ax_zero, ax_norm = bottom.subplots(1, 2)
    if not _finished(df):
        for ax in (ax_acc, ax_zero, ax_norm, ax_c):
            mark_not_run(ax, EXPERIMENT)
    else:
        arms = arm_order(df)
        seeds = int(df[df[col.STATUS] == "ok"][col.SEED].nunique())
        _bar_panel(ax_acc, df, arms, col.TEST_ACC, 100, "test accuracy (%)")
        ax_acc.set_title(f"Ours: CIFAR-10 CNN, mean,\n95% CI, {seeds} seed(s)")
        _bar_panel(ax_zero, df, arms, NEAR_ZERO, 100, "near-zero weights (%)")
        ax_zero.set_title("|w| < 10⁻³ × the layer's max |w|")
        _bar_panel(ax_norm, df, arms, L2_NORM, 1, "‖w‖₂, all conv/linear weights")
        ax_norm.set_title("Size of the (effective) weights")
        _c_panel(ax_c, parts(df))
    anchor_bars(
        ax_ref,
        SALIMANS_KINGMA_ERROR,
        [ARM_COLORS[n] for n in SALIMANS_KINGMA_ERROR],
        [n.replace(" + ", " +\n") for n in SALIMANS_KINGMA_ERROR],
        ylabel="test error (%)",
        title="Anchor: Salimans &\nKingma 2016, CIFAR-10\n(one run each)",
        width=0.65,
        alpha=0.8,
        rotation=40,
        ha="right",
        rotation_mode="anchor",
    )
    return save_figure(
        fig, out, "C2: weight-side normalization: WN vs BN, and the weights L1 and L2 leave"
    )


def _decisions(measured: dict) -> dict[str, str]:
    """Each part's decision, its tests Holm-adjusted as one family; "not run yet" for a part
    without seeds, and for (a) and (b) when their runs were not there to measure at all."""
    holm_family(d for d in measured["parts"].values() if d["seeds"])
    decisions = {
        name: (d["decision"] if d["seeds"] else "not run yet")
        for name, d in measured["parts"].items()
    }
    for name in ("a_l1_sparser_than_l2", "b_l2_smaller_than_none_pct"):
        decisions.setdefault(name, "not run yet")
    return decisions


def _effect(measured: dict) -> str:
    """One sentence per part, measured or not yet, and the number of seeds."""
    p = measured["parts"]
    sentences = []
    a = p.get("a_l1_sparser_than_l2")
    if a and a["seeds"]:
        lv = measured["matched_levels"][-1]
        sentences.append(
            f"near-zero weights with L1 {lv['l1']:g} minus with L2 {lv['weight_decay']:g}: "
            f"{fmt_ci(a)} of weights"
        )
    else:
        sentences.append("L1 vs L2 sparsity: not run yet (no weight statistics)")
    b = p.get("b_l2_smaller_than_none_pct")
    if b and b["seeds"]:
        sentences.append(f"‖w‖₂ with the strongest L2 vs none: {fmt_ci(b, '%')}")
    else:
        sentences.append("L2 weight norm: not run yet")
    c = p["c_wn_minus_none_acc_pp"]
    beside = measured["wn_mean_only_bn_minus_none_acc_pp"]
    if c["seeds"]:
        sentences.append(
            f"accuracy of WN alone minus none: {fmt_ci(c)} (reported beside it, WN + mean-only "
            f"BN minus none: {fmt_ci(beside)})"
        )
    seeds = max(d["seeds"] for d in p.values())
    return "; ".join(sentences) + f" ({seeds} seeds)"


def _notes(df: pd.DataFrame) -> str:
    """Failed runs, and the weight statistics the summaries do not have yet."""
    notes = failures(df)
    missing = [c for c in (NEAR_ZERO, L2_NORM) if c not in df]
    if missing:
        notes += f"; summaries lack {', '.join(missing)} (weight statistics not recorded yet)"
    return notes


def verdict(tables: dict) -> dict:
    df = with_arms(col.table(tables, EXPERIMENT))
    if not _finished(df):
        return CLAIM.not_run_yet()
    measured = parts(df)
    decisions = _decisions(measured)
    if all(v == "not run yet" for v in decisions.values()):
        return CLAIM.not_run_yet("no arm pair measurable yet (runs or weight statistics missing)")
    result = all_parts(decisions.values())
    p = measured["parts"]
    a = p.get("a_l1_sparser_than_l2")
    effect = _effect(measured)
    notes = _notes(df)
    sub = [
        sub_verdict(
            f"C2{key[0]}",
            statement,
            decisions[key],
            statistic,
            p.get(key) if decisions[key] != "not run yet" else None,
        )
        for key, statement, statistic in SUB_CLAIMS
    ]
    return CLAIM.verdict(
        result,
        effect,
        sub=sub,
        estimate=a["mean"] if a and a["seeds"] else None,
        ci=tuple(a["ci"]) if a and a["seeds"] else None,
        ci_note="" if a and a["seeds"] else "L1/L2 sparsity not measured yet",
        notes=notes,
        details=json_safe({"decisions": decisions, **measured}),
    )


QUOTE = Quote(
    zh=(
        "另外一类是对神经网络中连接相邻隐层神经元之间的边上的"
        "权重进行规范化操作，比如Weight Norm就属于"
        "这一类。……L1正则的规范化目标是造成参数的稀疏化，"
        "……而L2正则的规范化目标是有效减小原始参数值的大小。"
    ),
    en=(
        "The other kind normalizes the weights on the edges between layers, e.g. Weight Norm. "
        "… L1 regularization aims to make the parameters sparse, … L2 regularization to make "
        "their values small."
    ),
)
DASHBOARD = (
    Grid(
        "Arms",
        ("weight_side",),
        ("arm.name",),
        bars=("test/acc", "weights/near_zero_frac", "weights/l1_norm", "weights/l2_norm"),
        curves=("val/acc", "train/loss"),
    ),
)
# The arms C2's three decisions read: (a) the strongest matched L1 / L2 pair, (b) strong L2 and
# none, (c) WN and none; the others are reported beside them. experiments/weight_side.yaml
# checks exactly these (protocol.check), so their regime and budget ladder are complete.
DECIDING_ARMS = ("none", "wn", "l2_strong", "l1_strong")


def deciding(tables: dict) -> dict:
    """The runs of the arms that decide C2 (DECIDING_ARMS)."""
    df = col.table(tables, EXPERIMENT)
    return {EXPERIMENT: df[df["arm.name"].isin(DECIDING_ARMS)] if "arm.name" in df else df}


ANALYSIS = CLAIM.analysis(
    "Weight-side normalization: WN; L1 makes weights sparse, L2 small",
    (EXPERIMENT,),
    draw,
    verdict,
    deciding=deciding,
    quote=QUOTE,
    dashboard=DASHBOARD,
)
