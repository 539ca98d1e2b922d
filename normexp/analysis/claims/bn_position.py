"""C3 bn_position: BN before the activation (the original paper) vs after it (later work).

Runs: experiments/bn_position.yaml, BN in ``pre`` (layer → BN → act) and ``post`` (layer → act
→ BN) position, in four cells (model, activation) = {CNN, MLP} × {ReLU, tanh}, the LR per cell
from the fair protocol, seeds paired (same data order and initialization seed); and the control,
experiments/bn_position_control.yaml: the CNN/ReLU cell with the same layer before the
classifier head in both positions (``model.final_norm: false``: the last conv block has no norm,
so the head sees a ReLU in pre and in post; by default a post CNN ends with BN right before the
head, which confounds the position with "is there a norm before the head").

Verdict rule. Decided on one cell, stated before running: the CNN with ReLU (the setting of the
claim and of the public CaffeNet comparison), with the profile's seeds of record (5 at quick).
There Δ = test accuracy(post) − test accuracy(pre) in percentage points, paired by seed, with
its 95% CI and a paired t-test of Δ = 0 (one deciding test, so its Holm adjustment leaves it
as it is): *supported* if the test rejects with Δ > 0 (post better), *contradicted* if it
rejects with Δ < 0, *inconclusive* otherwise. Reported beside it, not deciding: the other three
cells and the control, their tests Holm-adjusted as one family of their own; the verdict names
a cell where pre beats post, and says so when the control's Δ has the opposite sign from the
deciding cell's ("the control flips the sign": the deciding cell's difference may come from the
norm before the head rather than from the position). The estimate is Δ in the deciding cell;
every cell's Δ is in the details. A diverged or failed run drops its seed from its cell's pairs
and is listed in the notes.
"""

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.colors import to_hex, to_rgb

from normexp.analysis import columns as col
from normexp.analysis.stats import mean_ci
from normexp.analysis.style import (
    anchor_bars,
    caption,
    figure,
    mark_not_run,
    norm_color,
    save_figure,
)
from normexp.analysis.verdict import by_seed, failures, holm_family, join_notes, sub_verdict
from normexp.analysis.verdict.anchors import CAFFENET_TOP1
from normexp.analysis.verdict.paired import difference, json_safe
from normexp.analysis.verdict.spec import Claim, Grid, Quote

EXPERIMENT = "bn_position"
CONTROL = "bn_position_control"  # CNN/ReLU, no norm in the last block in either position
ANCHOR = (
    "Ioffe & Szegedy 2015 put BN before the nonlinearity; public CaffeNet benchmark on ImageNet "
    "(ducha-aiki/caffenet-benchmark, one run each): BN before ReLU 47.4% vs after ReLU 49.9% top-1"
)
CLAIM = Claim.from_doc("C3", EXPERIMENT, ANCHOR, __doc__)
KEY_CELL = ("cnn", "relu")  # the claim's setting
CONTROL_CELL = ("cnn, same layer before the head", "relu")  # the control's rows, relabelled
CELLS = (("cnn", "relu"), CONTROL_CELL, ("cnn", "tanh"), ("mlp", "relu"), ("mlp", "tanh"))
CELL_CALLS = {
    "supported": "after\nbetter", "contradicted": "before\nbetter", "inconclusive": "unclear"
}
# Both positions are BN's: its colour, filled before the activation, open (lighter) after it.
POSITION_STYLE = {"pre": {"fmt": "o", "mfc": None}, "post": {"fmt": "s", "mfc": "white"}}


def _usable(df: pd.DataFrame) -> bool:
    return col.has_rows(df, col.MODEL, col.ACTIVATION, col.POSITION, col.NORM) and (
        col.TEST_ACC in df
    )


def _bn_runs(df: pd.DataFrame) -> pd.DataFrame:
    return df[df[col.NORM] == "batch"]


def with_control(tables: dict) -> pd.DataFrame:
    """The BN runs of record of both files in one table, the control's as the cell
    CONTROL_CELL (its model column relabelled), so cells never mix the two heads."""
    df = col.table(tables, EXPERIMENT)
    control = col.table(tables, CONTROL)
    parts = [_bn_runs(df)] if _usable(df) else []
    if _usable(control):
        control = _bn_runs(control).copy()
        control[col.MODEL] = CONTROL_CELL[0]
        parts.append(control)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _cell_label(model: str, activation: str) -> str:
    if (model, activation) == CONTROL_CELL:
        return "CNN relu,\ncontrol¹"
    return f"{model.upper()}\n{activation}"


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


def _accuracy_panel(
    ax, df: pd.DataFrame, cells: list[tuple[str, str]], x: np.ndarray  # noqa: ANN001
) -> None:
    """Test accuracy of pre and post side by side in each cell, mean and 95% CI over seeds."""
    for k, position in enumerate(("pre", "post")):
        means, los, his = [], [], []
        for model, activation in cells:
            where = {col.MODEL: model, col.ACTIVATION: activation, col.POSITION: position}
            vals = by_seed(df, col.TEST_ACC, where)
            m, lo, hi = mean_ci([100 * v for v in vals.values()])
            means.append(m)
            los.append(m - lo)
            his.append(hi - m)
        ax.errorbar(
            x + (k - 0.5) * 0.25,
            means,
            yerr=[los, his],
            color=norm_color("batch"),
            capsize=3,
            label=f"BN {'before' if position == 'pre' else 'after'} the activation",
            **POSITION_STYLE[position],
        )
    ax.set_xticks(x, [_cell_label(m, a) for m, a in cells])
    ax.set_ylabel("test accuracy (%)")
    seeds = int(df[df[col.STATUS] == "ok"][col.SEED].nunique())
    ax.set_title(f"Ours: CIFAR-10, mean and 95% CI over {seeds} seed(s)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend()


def _difference_panel(
    ax, df: pd.DataFrame, cells: list[tuple[str, str]], x: np.ndarray  # noqa: ANN001
) -> None:
    """Post − pre per cell, paired over seeds with its 95% CI, each labelled with its call."""
    diffs = list(_decided(df, cells).values())
    means = [d["post_minus_pre_pp"] for d in diffs]
    err = [
        [m - d["ci"][0] for m, d in zip(means, diffs, strict=True)],
        [d["ci"][1] - m for m, d in zip(means, diffs, strict=True)],
    ]
    ax.errorbar(x, means, yerr=err, fmt="s", color="black", capsize=4)
    ax.axhline(0, color="#888888", lw=1)
    for xi, d in zip(x, diffs, strict=True):
        ax.annotate(
            CELL_CALLS[d["decision"]],
            (xi, d["ci"][1] if np.isfinite(d["ci"][1]) else 0),  # no finite upper bound: at 0
            textcoords="offset points",
            xytext=(0, 4),
            ha="center",
        )
    ax.set_xticks(x, [_cell_label(m, a) for m, a in cells])
    ax.set_ylabel("after − before (pp of accuracy)")
    ax.set_title("Paired difference, 95% CI (CNN relu decides)")
    ax.margins(y=0.15)
    ax.grid(alpha=0.3, axis="y")


def draw(tables: dict, out: Path, results_dir: Path | None = None) -> Path:
    df = with_control(tables)
    fig = figure(6.2)
    top, bottom = fig.subfigures(2, 1, height_ratios=(1, 1.05))
    ax_acc = top.subplots()
    ax_diff, ax_ref = bottom.subplots(1, 2, width_ratios=(2.2, 1))
    if df.empty:
        mark_not_run(ax_acc, EXPERIMENT)
        mark_not_run(ax_diff, EXPERIMENT)
    else:
        cells = cells_present(df)
        x = np.arange(len(cells))
        _accuracy_panel(ax_acc, df, cells, x)
        _difference_panel(ax_diff, df, cells, x)
        if CONTROL_CELL in cells:
            caption(fig, "¹ Control: the CNN/ReLU cell with no norm in its last conv block, so "
                    "that the head sees a ReLU in both positions (by default BN after the "
                    "activation sits right before the head).")  # fmt: skip
    bn = norm_color("batch")
    anchor_bars(
        ax_ref,
        CAFFENET_TOP1,
        [bn, to_hex(np.add(0.45 * np.array(to_rgb(bn)), 0.55))],  # after: lighter, as open marks
        ["before\nReLU", "after\nReLU"],
        ylabel="top-1 accuracy (%)",
        title="Anchor: CaffeNet\n(ImageNet, one run each)",
        unit="%",
    )
    return save_figure(fig, out, "C3: BN before vs after the activation (test accuracy)")


def _decided(df: pd.DataFrame, cells: list[tuple[str, str]]) -> dict[str, dict]:
    """Each cell's test: the deciding cell alone, the others (the control included) Holm-adjusted
    as one family of their own."""
    diffs = {f"{m}/{a}": cell_difference(df, m, a) for m, a in cells}
    key = "/".join(KEY_CELL)
    if key in diffs:
        holm_family([diffs[key]])
    holm_family(d for c, d in diffs.items() if c != key)
    return diffs


def _ci(d: dict) -> str:
    return f"{d['post_minus_pre_pp']:+.1f} [{d['ci'][0]:+.1f}, {d['ci'][1]:+.1f}]"


def _control_text(control: dict | None, flips: bool) -> str:
    """The control's difference as the verdict reports it; "" when it has no paired seeds."""
    if not (control and control["seeds"]):
        return ""
    text = (
        f"control (same layer before the head in both positions): {_ci(control)} "
        f"({control['seeds']} seeds, {control['decision']})"
    )
    if flips:
        text += (
            "; the control flips the sign: the deciding cell's difference may come from the "
            "norm before the head rather than from the position"
        )
    return text


def _effect(diffs: dict[str, dict], key: dict, control_text: str) -> str:
    """The deciding cell's difference, then the control's and the other cells' (reported)."""
    key_name, control_name = "/".join(KEY_CELL), "/".join(CONTROL_CELL)
    others = "; ".join(
        f"{c} {_ci(d)}" for c, d in diffs.items() if c not in (key_name, control_name)
    )
    return (
        f"BN after minus before ReLU in the CNN: {_ci(key)} pp test accuracy ({key['seeds']} "
        "seeds)"
        + (f"; {control_text}" if control_text else "; control not run yet")
        + (f"; other cells (reported): {others}" if others else "")
    )


def verdict(tables: dict) -> dict:
    df = with_control(tables)
    if df.empty or not (df[col.STATUS] == "ok").any():
        return CLAIM.not_run_yet()
    diffs = _decided(df, cells_present(df))
    key_name, control_name = "/".join(KEY_CELL), "/".join(CONTROL_CELL)
    key = diffs.get(key_name)
    if key is None or key["seeds"] == 0:
        return CLAIM.not_run_yet("no paired pre/post runs in the ReLU CNN cell yet")
    result = key["decision"]
    pre_wins = [c for c, d in diffs.items() if c != key_name and d["decision"] == "contradicted"]
    control = diffs.get(control_name)
    flips = bool(
        control
        and control["seeds"]
        and key["mean"] * control["mean"] < 0  # opposite signs (NaN compares False)
    )
    control_text = _control_text(control, flips)
    sub = [
        sub_verdict(
            "C3",
            "BN after the activation beats BN before it",
            result,
            "test accuracy, post − pre, cnn relu cell, pp",
            key,
            note=control_text,
        )
    ]
    notes = join_notes(
        failures(df),
        f"pre beats post significantly in (reported, not deciding): {', '.join(pre_wins)}"
        if pre_wins
        else "",
        "the control flips the sign" if flips else "",
    )
    return CLAIM.verdict(
        result,
        _effect(diffs, key, control_text),
        estimate=key["mean"],
        ci=tuple(key["ci"]),
        sub=sub,
        notes=notes,
        details=json_safe(
            {
                "deciding_cell": key_name,
                "cells": diffs,
                "control_flips_sign": flips,
                "anchor_caffenet_top1": CAFFENET_TOP1,
            }
        ),
    )


def deciding(tables: dict) -> dict:
    """The cell that decides C3: the CNN with ReLU, pre and post (experiments/bn_position.yaml)."""
    df = col.table(tables, EXPERIMENT)
    if not _usable(df):
        return {EXPERIMENT: df}
    where = (df[col.MODEL] == KEY_CELL[0]) & (df[col.ACTIVATION] == KEY_CELL[1])
    return {EXPERIMENT: _bn_runs(df[where])}


QUOTE = Quote(
    zh=(
        "第一种是原始BN论文提出的，放在激活函数之前；另外一种是后续研究提出的，放在激活函数之后，"
        "不少研究表明将BN放在激活函数之后效果更好。"
    ),
    en=(
        "The original BN paper puts it before the activation; later work puts it after, and "
        "many studies find after the activation works better."
    ),
)
DASHBOARD = (
    Grid(
        "Pre vs post per model and activation",
        ("bn_position",),
        ("model.name", "model.activation", "norm.position"),
        bars=("test/acc",),
        curves=("val/acc", "train/loss"),
        parallel=("model.name", "model.activation", "norm.position", "test/acc"),
    ),
    Grid(
        "Control: CNN, ReLU, the same layer before the head in both positions",
        (CONTROL,),
        ("norm.position",),
        bars=("test/acc",),
        curves=("val/acc", "train/loss"),
    ),
)
ANALYSIS = CLAIM.analysis(
    "BN after the activation beats BN before it",
    (EXPERIMENT, CONTROL),
    draw,
    verdict,
    deciding,
    quote=QUOTE,
    dashboard=DASHBOARD,
)
