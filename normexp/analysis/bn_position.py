"""C3 bn_position: BN before the activation (the original paper) vs after it (later work).

Runs: experiments/bn_position.yaml, BN in ``pre`` (layer → BN → act) and ``post`` (layer → act
→ BN) position, in four cells (model, activation) = {CNN, MLP} × {ReLU, tanh}, same schedule and
LR for both positions, seeds paired (same data order and initialization seed).

Verdict rule. In each cell, Δ = test accuracy(post) − test accuracy(pre) in percentage points,
paired by seed, with its 95% CI and a paired t-test over seeds; the four cells' tests are one
family, Holm-adjusted ("beats" below: the adjusted test rejects 0 with that sign). *supported*
if post beats pre in the ReLU CNN cell, the setting of the claim and of the public CaffeNet
comparison, and in no cell does pre beat post; *contradicted* if pre beats post in the ReLU CNN
cell;
*inconclusive* otherwise (among them: the ReLU CNN cell's CI straddles 0, or post wins there
but pre wins significantly in another cell). The estimate is Δ in the ReLU CNN cell; every
cell's Δ is in the details. A diverged or failed run drops its seed from its cell's pairs and
is listed in the notes.
"""

from pathlib import Path

import numpy as np
import pandas as pd

from normexp.analysis import columns as col
from normexp.analysis.claims import Claim
from normexp.analysis.paired import difference, json_safe
from normexp.analysis.stats import mean_ci
from normexp.analysis.style import anchor_bars, mark_not_run, panels, save_figure
from normexp.analysis.verdict import by_seed, failures, holm_family, sub_verdict

EXPERIMENT = "bn_position"
ANCHOR = (
    "Ioffe & Szegedy 2015 put BN before the nonlinearity; public CaffeNet benchmark on ImageNet "
    "(ducha-aiki/caffenet-benchmark, one run each): BN before ReLU 47.4% vs after ReLU 49.9% top-1"
)
CLAIM = Claim.from_doc("C3", EXPERIMENT, ANCHOR, __doc__)
ANCHOR_CAFFENET = {"pre": 47.4, "post": 49.9}  # top-1 accuracy (%), one run each
KEY_CELL = ("cnn", "relu")  # the claim's setting
CELLS = (("cnn", "relu"), ("cnn", "tanh"), ("mlp", "relu"), ("mlp", "tanh"))
CELL_CALLS = {"supported": "post better", "contradicted": "pre better", "inconclusive": "unclear"}
POSITION_COLORS = {"pre": "#1f77b4", "post": "#ff7f0e"}


def _usable(df: pd.DataFrame) -> bool:
    return col.has_rows(df, col.MODEL, col.ACTIVATION, col.POSITION, col.NORM) and (
        col.TEST_ACC in df
    )


def _bn_runs(df: pd.DataFrame) -> pd.DataFrame:
    return df[df[col.NORM] == "batch"]


def cells_present(df: pd.DataFrame) -> list[tuple[str, str]]:
    present = set(zip(df[col.MODEL], df[col.ACTIVATION], strict=True))
    return [c for c in CELLS if c in present] + sorted(present - set(CELLS))


def cell_difference(df: pd.DataFrame, model: str, activation: str) -> dict:
    """Δ = acc(post) − acc(pre) in pp for one cell, paired by seed: mean, lo, hi, n, decision."""
    where = {col.MODEL: model, col.ACTIVATION: activation}
    pre = by_seed(df, col.TEST_ACC, {col.POSITION: "pre", **where})
    post = by_seed(df, col.TEST_ACC, {col.POSITION: "post", **where})
    test = difference(post, pre, scale=100)
    return {"cell": f"{model}/{activation}", "post_minus_pre_pp": test["mean"], **test}


def draw(tables: dict, out: Path, results_dir: Path | None = None) -> Path:
    df = col.table(tables, EXPERIMENT)
    fig, (ax_acc, ax_diff, ax_ref) = panels(3, (13, 4.2), (1.4, 1.2, 0.8))
    if not _usable(df):
        mark_not_run(ax_acc, EXPERIMENT)
        mark_not_run(ax_diff, EXPERIMENT)
    else:
        df = _bn_runs(df)
        cells = cells_present(df)
        x = np.arange(len(cells))
        for k, position in enumerate(("pre", "post")):
            means, los, his = [], [], []
            for model, activation in cells:
                where = {col.MODEL: model, col.ACTIVATION: activation, col.POSITION: position}
                vals = by_seed(df, col.TEST_ACC, where)
                m, lo, hi = mean_ci([100 * v for v in vals.values()])
                means.append(m)
                los.append(m - lo)
                his.append(hi - m)
            ax_acc.errorbar(
                x + (k - 0.5) * 0.25,
                means,
                yerr=[los, his],
                fmt="o",
                color=POSITION_COLORS[position],
                capsize=4,
                label=f"BN {position} activation",
            )
        labels = [f"{m.upper()}\n{a}" for m, a in cells]
        ax_acc.set_xticks(x, labels)
        ax_acc.set_ylabel("test accuracy (%)")
        seeds = int(df[df[col.STATUS] == "ok"][col.SEED].nunique())
        ax_acc.set_title(f"Ours: CIFAR-10, mean and 95% CI over {seeds} seed(s)", fontsize=10)
        ax_acc.grid(alpha=0.3, axis="y")
        ax_acc.legend(frameon=False, fontsize=9)
        diffs = [cell_difference(df, m, a) for m, a in cells]
        means = [d["post_minus_pre_pp"] for d in diffs]
        err = [
            [m - d["ci"][0] for m, d in zip(means, diffs, strict=True)],
            [d["ci"][1] - m for m, d in zip(means, diffs, strict=True)],
        ]
        ax_diff.errorbar(x, means, yerr=err, fmt="s", color="black", capsize=4)
        ax_diff.axhline(0, color="#888888", lw=1)
        for xi, d in zip(x, diffs, strict=True):
            ax_diff.annotate(
                CELL_CALLS[d["decision"]],
                (xi, d["ci"][1] if np.isfinite(d["ci"][1]) else 0),
                textcoords="offset points",
                xytext=(0, 6),
                ha="center",
                fontsize=8,
            )
        ax_diff.set_xticks(x, labels)
        ax_diff.set_ylabel("post − pre (pp of accuracy)")
        ax_diff.set_title("Paired difference per cell (> 0: after is better)", fontsize=10)
        ax_diff.grid(alpha=0.3, axis="y")
    anchor_bars(
        ax_ref,
        ANCHOR_CAFFENET,
        [POSITION_COLORS[p] for p in ANCHOR_CAFFENET],
        ["BN before\nReLU", "BN after\nReLU"],
        ylim=(40, 52),
        ylabel="top-1 accuracy (%)",
        title="Anchor: CaffeNet, ImageNet\n(one run each)",
        offset=0.3,
        unit="%",
    )
    return save_figure(fig, out, "C3: is BN better after the activation than before it?")


def verdict(tables: dict) -> dict:
    df = col.table(tables, EXPERIMENT)
    if not _usable(df) or not (df[col.STATUS] == "ok").any():
        return CLAIM.not_run_yet()
    df = _bn_runs(df)
    diffs = {f"{m}/{a}": cell_difference(df, m, a) for m, a in cells_present(df)}
    holm_family(diffs.values())
    key = diffs.get("/".join(KEY_CELL))
    if key is None or key["seeds"] == 0:
        return CLAIM.not_run_yet("no paired pre/post runs in the ReLU CNN cell yet")
    pre_wins = [c for c, d in diffs.items() if d["decision"] == "contradicted"]
    if key["decision"] == "contradicted":
        result = "contradicted"
    elif key["decision"] == "supported" and not pre_wins:
        result = "supported"
    else:
        result = "inconclusive"
    # the test that decided: the ReLU CNN cell, unless a pre win elsewhere vetoed its support
    by = pre_wins[0] if key["decision"] == "supported" and pre_wins else "/".join(KEY_CELL)
    sub = [
        sub_verdict(
            "C3",
            "BN after the activation beats BN before it",
            result,
            f"test accuracy, post − pre, {by.replace('/', ' ')} cell, pp",
            diffs[by],
        )
    ]
    mean, (lo, hi) = key["post_minus_pre_pp"], key["ci"]
    others = "; ".join(
        f"{c} {d['post_minus_pre_pp']:+.1f} [{d['ci'][0]:+.1f}, {d['ci'][1]:+.1f}]"
        for c, d in diffs.items()
        if c != "/".join(KEY_CELL)
    )
    effect = (
        f"BN after minus before ReLU in the CNN: {mean:+.1f} pp test accuracy [{lo:+.1f}, "
        f"{hi:+.1f}] ({key['seeds']} seeds)" + (f"; other cells: {others}" if others else "")
    )
    notes = failures(df)
    if pre_wins:
        notes += f"; pre beats post significantly in: {', '.join(pre_wins)}"
    return CLAIM.verdict(
        result,
        effect,
        estimate=mean,
        ci=(lo, hi),
        sub=sub,
        notes=notes,
        details=json_safe({"cells": diffs, "anchor_caffenet_top1": ANCHOR_CAFFENET}),
    )


ANALYSIS = CLAIM.analysis(
    "BN after the activation beats BN before it", (EXPERIMENT,), draw, verdict
)
