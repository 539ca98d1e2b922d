"""C9 not_ics: BN's benefit has nothing to do with internal covariate shift (Santurkar et al. 2018).

Two tests on one VGG-style CNN, one batch size and one learning rate for every norm: (1) "noisy
BN" (BN followed, in training, by per-step, per-(sample, channel) random scale and shift, so
every layer's input distribution keeps moving) still trains like BN; (2) ICS measured as the
change of a conv layer's gradient when the earlier layers take their gradient step on the same
batch (‖G − G'‖₂ and cos(G, G'), normexp.train.landscape.ics_per_layer), over training, with and
without BN. Per run, ICS is averaged over conv layers 2…k and over the probe points of training.

The collected tables hold scalars and lists: the over-training curves come from the per-run
summary lists (``train_acc_by_epoch``, ``test_acc_by_epoch``, ``probe_steps`` with
``probe_ics_*_series``), which the store keeps as JSON lists and the collected table as their
text (parsed back by parse_list).

Verdict rule. Paired by seed. (a) "noisy BN still trains like BN", on the training accuracy of
the last epoch (``train_acc``: how well each network fits its training batches as trained, noise
on for noisy BN): *supported* if the 95% CI of acc(noisy BN) − acc(BN) lies above −MARGIN_PP =
−3 pp and the CI of acc(noisy BN) − acc(none) lies above 0 (noisy BN keeps BN's gain);
*contradicted* if the CI of acc(noisy BN) − acc(BN) lies below −3 pp; *inconclusive* otherwise.
Training, not test, accuracy: the claim is about optimization, and noisy BN's test accuracy in
inference mode also pays for a train/test mismatch of its own (the noise scale has mean
(1 + max_scale)/2 ≠ 1, so the later layers' running statistics are fitted to noisier, larger
inputs than inference gives them); the test-accuracy gaps are reported next to it.
(b) "BN does not reduce ICS": with r = log10(ICS ℓ2 with BN / without BN) and c = cos with BN −
cos without (lower ICS means a lower ℓ2 and a higher cosine): *contradicted* if r's CI lies below
0 and c's above 0 (BN clearly lowers ICS by both measures); *supported* if neither r's CI lies
below 0 nor c's above 0 (no sign that BN lowers ICS); *inconclusive* otherwise. The claim is
*supported* if (a) and (b) both are, *contradicted* if both are contradicted, *inconclusive*
otherwise. The estimate is train acc(noisy BN) − acc(BN) in pp. "Lies above/below" is decided
by paired t-tests over seeds (of noisy − BN against −3 pp, of noisy − none, r and c against 0),
the four Holm-adjusted as one family: a test counts as on one side when its adjusted p is ≤ 5%
with the estimate on that side. The report shows (a) and (b) as two rows, C9 (a) and C9 (b),
each with the test that decided it.
"""

import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

from normexp.analysis import columns as col
from normexp.analysis.claims import Claim
from normexp.analysis.paired import difference
from normexp.analysis.stats import mean_ci
from normexp.analysis.style import (
    caption,
    finish,
    mark_not_run,
    norm_color,
    norm_label,
    save_figure,
)
from normexp.analysis.verdict import (
    by_seed,
    conjunction,
    failures,
    finite,
    holm_family,
    join_notes,
    paired_difference,
    sub_verdict,
)

EXPERIMENT = "not_ics"
MARGIN_PP = 3.0  # noisy BN "trains like BN" if it loses clearly less than this (pp)
ACC_COLUMN = col.TRAIN_ACC  # the verdict's accuracy (last epoch, as trained); see the rule
ANCHOR = (
    "Santurkar et al. 2018, Fig. 2: VGG on CIFAR-10, noisy BN trains about as well as BN and "
    "better than no norm; Fig. 5 / Sec. 2.2: with BN the ICS (ℓ2 change of a layer's gradient "
    "after the earlier layers update) is as large or larger and the cosine as low or lower "
    "(qualitative: no numbers in the text)"
)
CLAIM = Claim.from_doc("C9", EXPERIMENT, ANCHOR, __doc__)
NORM_ORDER = ("none", "batch", "noisy_batch")
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
    if df.empty:
        return df
    col.require(df, (col.STATUS, *where))
    mask = df[col.STATUS] == "ok"
    for column, wanted in where.items():
        mask &= df[column] == wanted
    return df[mask]


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
    ax.plot(xs, mean, marker="o", ms=3, lw=1.6, **kw)
    ax.fill_between(xs, lo, hi, color=kw.get("color"), alpha=0.18, lw=0)


def _norms(df: pd.DataFrame) -> list[str]:
    present = set(df[col.NORM])
    return [n for n in NORM_ORDER if n in present] + sorted(present - set(NORM_ORDER))


def usable(df: pd.DataFrame, *columns: str) -> bool:
    """Runs of one CNN at one batch size over norms (and LRs), with a test accuracy."""
    return col.has_rows(df, col.NORM, col.BATCH, col.LR, *columns) and col.TEST_ACC in df


def scale_note(df: pd.DataFrame) -> str:
    """'quick profile, 4000 train images, batch 128': the scale the figure and notes state."""
    n_train = col.first(df, col.N_TRAIN)
    images = f", {int(n_train)} train images" if n_train is not None else ""
    return f"{col.first(df, col.PROFILE, '?')} profile{images}, batch {df[col.BATCH].iloc[0]}"


def _scale_note(df: pd.DataFrame) -> str:
    lr, seeds = df[col.LR].iloc[0], df[col.SEED].nunique()
    return f"{scale_note(df)}, LR {lr} per 128, {seeds} seed(s)"


def landscape_notes(df: pd.DataFrame, scale: str, caveat: str) -> str:
    """The verdict's notes: failed runs, the scale and what it means for the comparison."""
    return join_notes(failures(df), f"scale: {scale}; {caveat}")


def save_landscape(fig, axes, out: Path, title: str, note: str | None, anchor: str) -> Path:  # noqa: ANN001
    """The figure at ``out``, cropped to its content; when runs were drawn (a scale ``note``),
    first grids and legends on every panel, and the scale and the anchor below them."""
    if note is not None:
        for ax in axes:
            finish(ax)
        caption(
            fig,
            f"Ours: CIFAR-10 VGG-style CNN, {note}; mean and 95% CI "
            "over seeds (geometric on log axes). Anchor: " + anchor,
        )
    return save_figure(fig, out, title, bbox_inches="tight")


def draw(tables: dict, out: Path, results_dir: Path | None = None) -> Path:
    df = col.table(tables, EXPERIMENT)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.3), constrained_layout=True)
    note = None
    if not usable(df):
        for ax in axes:
            mark_not_run(ax, EXPERIMENT)
    else:
        note = _scale_note(df)
        acc_ax, l2_ax, cos_ax = axes
        for norm in _norms(df):
            runs = ok_runs(df, {col.NORM: norm})
            style = {"color": color(norm), "label": f"{label(norm)} ({len(runs)} runs)"}
            for column, line in ((col.TRAIN_ACC_BY_EPOCH, "-"), (col.TEST_ACC_BY_EPOCH, "--")):
                xs, m, lo, hi = curve(runs, column)
                if xs:
                    pct = [[100 * v for v in vs] for vs in (m, lo, hi)]
                    kind = "train" if column.startswith("train") else "test"
                    plot_curve(
                        acc_ax, xs, *pct, ls=line, **{**style, "label": f"{label(norm)}, {kind}"}
                    )
            xs, m, lo, hi = curve(runs, col.ICS_L2_SERIES, col.PROBE_STEPS, log=True)
            if xs:
                plot_curve(l2_ax, xs, m, lo, hi, **style)
            # 1 − cos on a log scale: the cosines all sit just below 1
            one_minus = curve(
                runs, col.ICS_COS_SERIES, col.PROBE_STEPS, transform=lambda v: 1 - v, log=True
            )
            if one_minus[0]:
                plot_curve(cos_ax, *one_minus, **style)
        acc_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        acc_ax.set(
            xlabel="epoch",
            ylabel="accuracy (%)",
            title="Training accuracy (as trained, solid) and test accuracy (dashed)",
        )
        l2_ax.set(
            xlabel="training step",
            ylabel="‖G − G'‖₂ (mean over conv layers 2…k)",
            title="ICS, ℓ2 change of a layer's gradient",
        )
        l2_ax.set_yscale("log")
        cos_ax.set(
            xlabel="training step",
            ylabel="1 − cos(G, G') (mean over conv layers 2…k)",
            title="ICS, 1 − cosine of G and G' (0: no shift)",
        )
        cos_ax.set_yscale("log")
    return save_landscape(
        fig,
        axes,
        out,
        "C9: does BN's benefit come from reducing internal covariate shift?",
        note,
        ANCHOR,
    )


def _ci_text(mean: float, lo: float, hi: float, fmt: str = "+.1f") -> str:
    return f"{mean:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"


def _log_ratio(a: dict[int, float], b: dict[int, float]) -> dict[int, float]:
    return {
        s: math.log10(a[s] / b[s])
        for s in set(a) & set(b)
        if a[s] > 0 and b[s] > 0 and math.isfinite(a[s]) and math.isfinite(b[s])
    }


def verdict(tables: dict) -> dict:
    df = col.table(tables, EXPERIMENT)
    acc = _accuracy(df, ACC_COLUMN) if usable(df) else {}
    if not all(acc.get(n) for n in ("batch", "noisy_batch", "none")):
        if not acc:
            return CLAIM.not_run_yet()
        return CLAIM.not_run_yet("needs finished runs of none, batch and noisy_batch")
    like_bn = difference(acc["noisy_batch"], acc["batch"], null=-MARGIN_PP)
    over_none = difference(acc["noisy_batch"], acc["none"])
    d_bn, (bn_lo, bn_hi), n = like_bn["mean"], like_bn["ci"], like_bn["seeds"]
    d_none, (none_lo, none_hi) = over_none["mean"], over_none["ci"]
    test = _accuracy(df, col.TEST_ACC)
    test_bn = paired_difference(test["noisy_batch"], test["batch"])[:3]
    test_none = paired_difference(test["noisy_batch"], test["none"])[:3]

    l2 = {n_: by_seed(df, col.ICS_L2_MEAN, {col.NORM: n_}) for n_ in NORM_ORDER}
    cos = {n_: by_seed(df, col.ICS_COS_MEAN, {col.NORM: n_}) for n_ in NORM_ORDER}
    ratio = _log_ratio(l2["batch"], l2["none"])
    # claimed side: BN does not lower ICS (ℓ2 ratio not below 0, cosine difference not above 0)
    r_test = difference(ratio, dict.fromkeys(ratio, 0.0))
    c_test = difference(cos["batch"], cos["none"], claimed_sign=-1)
    holm_family([like_bn, over_none, r_test, c_test])
    r, (r_lo, r_hi), n_r = r_test["mean"], r_test["ci"], r_test["seeds"]
    c, (c_lo, c_hi), n_c = c_test["mean"], c_test["ci"], c_test["seeds"]
    tests_a = {"noisy BN − BN (vs −3 pp)": like_bn, "noisy BN − none": over_none}
    part_a, by_a = conjunction(tests_a)
    if part_a == "contradicted" and like_bn["decision"] != "contradicted":
        part_a, by_a = "inconclusive", "noisy BN − none"  # only noisy BN ≤ BN − 3 contradicts
    lowers = [t["decision"] == "contradicted" for t in (r_test, c_test)]
    if n_r < 2 or n_c < 2:
        part_b = "inconclusive"
    elif all(lowers):
        part_b = "contradicted"
    elif not any(lowers):
        part_b = "supported"
    else:
        part_b = "inconclusive"
    # the test that decided (b): the one that showed BN lowering ICS, else the ℓ2 ratio
    by_b = "log10 ℓ2 ratio" if lowers[0] or not lowers[1] else "cosine difference"
    tests_b = {"log10 ℓ2 ratio": r_test, "cosine difference": c_test}
    sub = [
        sub_verdict(
            "C9 (a)",
            "noisy BN still trains like BN",
            part_a,
            f"last-epoch train accuracy, {by_a}, pp",
            tests_a[by_a],
        ),
        sub_verdict(
            "C9 (b)",
            "BN does not reduce internal covariate shift",
            part_b,
            f"ICS with vs without BN, {by_b}",
            tests_b[by_b],
        ),
    ]

    if part_a == part_b == "supported":
        result = "supported"
    elif part_a == part_b == "contradicted":
        result = "contradicted"
    else:
        result = "inconclusive"
    effect = (
        f"last-epoch training accuracy, noisy BN − BN: {_ci_text(d_bn, bn_lo, bn_hi)} pp, noisy "
        f"BN − none: {_ci_text(d_none, none_lo, none_hi)} pp ({n} seeds; test accuracy: "
        f"{_ci_text(*test_bn)} and {_ci_text(*test_none)} pp); ICS with vs without BN: log10 ℓ2 "
        f"ratio {_ci_text(r, r_lo, r_hi, '+.2f')}, cosine difference "
        f"{_ci_text(c, c_lo, c_hi, '+.3f')} ({n_r} seeds)"
    )
    means = {
        norm: {
            "train_acc_pct": _mean_of(acc[norm]),
            "test_acc_pct": _mean_of(test[norm]),
            "ics_l2": _mean_of(l2[norm]),
            "ics_cos": _mean_of(cos[norm]),
        }
        for norm in NORM_ORDER
    }
    return CLAIM.verdict(
        result,
        effect,
        estimate=d_bn,
        ci=(bn_lo, bn_hi),
        sub=sub,
        notes=landscape_notes(
            df, _scale_note(df), "short schedules favour whichever norm trains fastest"
        ),
        details={
            "parts": {"noisy_bn_trains_like_bn": part_a, "bn_does_not_reduce_ics": part_b},
            "margin_pp": MARGIN_PP,
            "noisy_minus_none_pp": [finite(v) for v in (d_none, none_lo, none_hi)],
            "accuracy_in_rule": ACC_COLUMN,
            "test_acc_noisy_minus_bn_pp": [finite(v) for v in test_bn],
            "test_acc_noisy_minus_none_pp": [finite(v) for v in test_none],
            "ics_log10_l2_ratio_bn_over_none": [finite(v) for v in (r, r_lo, r_hi)],
            "ics_cos_bn_minus_none": [finite(v) for v in (c, c_lo, c_hi)],
            "means": means,
        },
    )


def _accuracy(df: pd.DataFrame, column: str) -> dict[str, dict[int, float]]:
    """{norm: {seed: accuracy in %}} from finished runs."""
    return {
        n: {s: 100 * v for s, v in by_seed(df, column, {col.NORM: n}).items()} for n in NORM_ORDER
    }


def _mean_of(values: dict[int, float]) -> float | None:
    return finite(mean_ci(list(values.values()))[0])


ANALYSIS = CLAIM.analysis(
    "BN's benefit is not about internal covariate shift", (EXPERIMENT,), draw, verdict
)
