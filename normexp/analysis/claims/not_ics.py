"""C9 not_ics: BN's benefit has nothing to do with internal covariate shift (Santurkar et al. 2018).

Two tests at one batch size, the LR per norm chosen by the fair protocol, on the VGG-style CNN
and (from standard on) the CIFAR ResNet, each architecture's runs decided apart; the one whose
baseline (BN vs none test accuracy at batch 32, these runs) shows no norm clearly worse than BN
decides (normexp/analysis/verdict/architecture.py; stated at the end of the rule):
(a) "noisy BN" (Santurkar et al.'s: after each BN, in the training steps only, a scale and a
shift per (sample, channel) drawn around per-channel centres that are themselves redrawn at
every step, non-zero in mean and non-unit in scale, so every layer's input distribution moves
from step to step; none at evaluation; normexp/norms/batch_variants.py) still trains about as
fast as BN;
(b) ICS, measured as the change of a conv layer's gradient G when the earlier layers take their
gradient step on the same batch (G'), is not lower with BN: ‖G − G'‖₂ (absolute), ‖G − G'‖₂ /
‖G‖₂ (relative to the gradient's size, comparable across norms whose gradients differ in scale)
and cos(G, G') (normexp.train.landscape.ics_per_layer). Per run, each ICS measure is averaged
over conv layers 2…k and over the probe points of training.

Speed. Per run, the steps to target: the first point of the running training accuracy (the
batches trained since the previous probe point, as trained: noisy BN's noise on;
``running_train_acc_series`` at ``running_train_acc_steps``, normexp/train/instrumented.py) at
or above the target ``target.train_acc``, stated per profile in experiments/not_ics.yaml before
running (quick: 60%, which BN reaches comfortably within the 2000-step schedule). A run that
never reaches it is censored: its steps are set to the budget + 1 (``trained_steps`` + 1), a lower
bound of the steps it would need. Training accuracy, not test: the claim is about optimization,
and Santurkar et al. compare training accuracy against steps (their Fig. 2). Each norm's LR is
chosen on the same kind of measure, its final training accuracy (``protocol.select_on:
train_acc``, experiments/not_ics.yaml). The final training loss (last epoch's mean, as
trained), the final training accuracy and the validation accuracy (evaluated without the noise)
are reported beside it, not tested.

Verdict rule. Paired by seed, on log10 of the steps to target. (a) "noisy BN trains about as
fast as BN": *supported* if steps(noisy BN) / steps(BN) lies below MARGIN_RATIO = 1.25 and both
BN and noisy BN reach the target in fewer steps than no norm (ratios none / noisy BN and none /
BN above 1); *contradicted* if the ratio noisy BN / BN lies above 1.25; *inconclusive* otherwise
(among them: BN or noisy BN not faster than none: the comparison's premise fails). Censoring: a
censored value is a lower bound, so a censored run of none only makes "faster than none" harder
to show; a censored noisy-BN run understates noisy / BN, so (a) is not *supported* while any
noisy-BN run of record is censored (it can still be *contradicted*: the true ratio is larger
still); a censored BN run means the schedule is too short for the profile, and (a) is
*inconclusive* (the verdict says so).
(b) "BN does not reduce ICS": with r = log10(relative ICS ℓ2 with BN / without BN) and c = cos
with BN − cos without (lower ICS means a lower ℓ2 and a higher cosine): *contradicted* if r's CI
lies below 0 and c's above 0 (BN clearly lowers ICS by both measures); *supported* if neither r's
CI lies below 0 nor c's above 0 (no sign that BN lowers ICS); *inconclusive* otherwise. The
absolute ℓ2 ratio is reported beside it (not tested: it also moves with the gradient's size).
The claim is *supported* if (a) and (b) both are, *contradicted* if both are contradicted,
*inconclusive* otherwise. The estimate is the geometric mean ratio steps(noisy BN) / steps(BN).
"Lies above/below" is decided by paired t-tests over seeds (log10 noisy / BN against log10 1.25,
log10 none / noisy BN and log10 none / BN against 0, r and c against 0), the five Holm-adjusted
as one family: a test counts as on one side when its adjusted p is ≤ 5% with the estimate on
that side. The report shows (a) and (b) as two rows, C9 (a) and C9 (b), each with the test that
decided it.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from normexp.analysis import columns as col
from normexp.analysis.curves import (
    color,
    curve,
    label,
    landscape_notes,
    ok_runs,
    parse_list,
    plot_curve,
    save_landscape,
    scale_note,
    usable,
)
from normexp.analysis.stats import mean_ci
from normexp.analysis.style import figure, mark_not_run, seed_bar
from normexp.analysis.verdict import (
    architecture,
    by_seed,
    conjunction,
    finite,
    holm_family,
    join_notes,
    paired_difference,
    sub_verdict,
)
from normexp.analysis.verdict.paired import difference, json_safe
from normexp.analysis.verdict.spec import Claim, Grid, Quote
from normexp.metrics import metric

EXPERIMENT = "not_ics"
VAL_ACC = metric("val_acc")  # the last epoch's, evaluated without noisy BN's noise
MARGIN_RATIO = 1.25  # noisy BN "trains about as fast as BN": steps noisy / BN below this
ANCHOR = (
    "Santurkar et al. 2018, Fig. 2: VGG on CIFAR-10, noisy BN (noise after each BN whose mean "
    "and variance change at every step) trains about as well as BN and better than no norm, "
    "in training accuracy against steps; Fig. 5 / Sec. 2.2: with BN the ICS (ℓ2 change of a "
    "layer's gradient after the earlier layers update) is as large or larger and the cosine as "
    "low or lower (qualitative: no numbers in the text)"
)
CLAIM = Claim.from_doc("C9", EXPERIMENT, ANCHOR, __doc__)
NORM_ORDER = ("none", "batch", "noisy_batch")


def _norms(df: pd.DataFrame) -> list[str]:
    present = set(df[col.NORM])
    return [n for n in NORM_ORDER if n in present] + sorted(present - set(NORM_ORDER))


def _scale_note(df: pd.DataFrame) -> str:
    lr, seeds = df[col.LR].iloc[0], df[col.SEED].nunique()
    return f"{scale_note(df)}, LR {lr} per 128, {seeds} seed(s)"


def steps_to_target(
    steps: Sequence[float], accuracy: Sequence[float], target: float, budget: float
) -> tuple[float, bool]:
    """(steps, censored): the first step whose running training accuracy is at or above
    ``target``; ``budget`` + 1 and True when none is (a lower bound: the run never got there)."""
    for step, acc in zip(steps, accuracy, strict=False):
        if math.isfinite(acc) and acc >= target:
            return float(step), False
    return float(budget) + 1, True


def speed(df: pd.DataFrame, target: float) -> dict[str, dict[int, tuple[float, bool]]]:
    """{norm: {seed: (steps to target, censored)}} from the finished runs of record."""
    col.require(df, (col.RUNNING_ACC_STEPS, col.RUNNING_ACC_SERIES))
    out: dict[str, dict[int, tuple[float, bool]]] = {}
    for norm in _norms(df):
        runs = ok_runs(df, {col.NORM: norm})
        per_seed = {}
        for _, run in runs.iterrows():
            steps = parse_list(run[col.RUNNING_ACC_STEPS])
            acc = parse_list(run[col.RUNNING_ACC_SERIES])
            budget = run.get(col.TRAINED_STEPS)
            if budget is None or not math.isfinite(float(budget)):
                budget = steps[-1] if steps else math.nan
            per_seed[int(run[col.SEED])] = steps_to_target(steps, acc, target, float(budget))
        out[norm] = per_seed
    return out


def _log_steps(per_seed: dict[int, tuple[float, bool]]) -> dict[int, float]:
    return {s: math.log10(v) for s, (v, _) in per_seed.items() if v > 0}


def _censored(per_seed: dict[int, tuple[float, bool]]) -> list[int]:
    return sorted(s for s, (_, c) in per_seed.items() if c)


def target_of(df: pd.DataFrame) -> float | None:
    """The target training accuracy the runs state (``target.train_acc``), if any."""
    value = col.first(df, col.TARGET_ACC)
    return finite(value) if value is not None else None


def _bars(ax, per_norm: dict[str, list[float]], ylabel: str, title: str, censored=None) -> None:  # noqa: ANN001
    """One bar per norm (mean, 95% CI, seeds as dots); censored seeds ringed."""
    names = list(per_norm)
    for i, norm in enumerate(names):
        if per_norm[norm]:
            seed_bar(ax, i, per_norm[norm], color(norm), width=0.6)
        for v in (censored or {}).get(norm, []):
            ax.plot([i], [v], "o", mfc="none", mec="black", ms=9)
    ax.set_xticks(range(len(names)), [label(n) for n in names])
    ax.set(ylabel=ylabel, title=title)


def draw(tables: dict, out: Path, results_dir: Path | None = None) -> Path:
    model, df = record_runs(tables)  # the verdict's architecture
    fig = figure(8.6)
    axes = list(fig.subplots(3, 2).flat)
    note = None
    if not usable(df):
        for ax in axes:
            mark_not_run(ax, EXPERIMENT)
    else:
        note = f"{_scale_note(df)}; ICS: mean over conv layers 2…k"
        _draw_panels(df, axes)
    for ax in axes:
        ax.grid(alpha=0.3)
    return save_landscape(
        fig,
        [ax for ax in axes[:2] if ax.get_legend_handles_labels()[0]],  # the norms; censored
        out,
        "C9: BN's training speed, with and without internal covariate shift (noisy BN)",
        note,
        ANCHOR,
        architecture.name(model, df),
    )


def _draw_panels(df: pd.DataFrame, axes: list) -> None:
    """The six panels, in the grid's order: training accuracy, steps to target; final loss,
    ICS ℓ2; relative ℓ2, cosine."""
    acc_ax, steps_ax, loss_ax, l2_ax, rel_ax, cos_ax = axes
    target = target_of(df)
    for norm in _norms(df):
        _draw_norm_curves(df, norm, acc_ax, (l2_ax, rel_ax, cos_ax))
    _label_accuracy(acc_ax, target)
    _draw_steps_to_target(steps_ax, df, target)
    _bars(
        loss_ax,
        {n: list(by_seed(df, col.TRAIN_LOSS, {col.NORM: n}).values()) for n in _norms(df)},
        "training loss",
        "Final training loss (as trained)",
    )
    _label_ics(l2_ax, rel_ax, cos_ax)
    for ax in (steps_ax, loss_ax):
        ax.grid(alpha=0.3, axis="y")


def _draw_norm_curves(df: pd.DataFrame, norm: str, acc_ax, ics_axes: tuple) -> None:  # noqa: ANN001
    """One norm's curves over training: running training accuracy and the three ICS measures."""
    l2_ax, rel_ax, cos_ax = ics_axes
    runs = ok_runs(df, {col.NORM: norm})
    style = {"color": color(norm), "label": f"{label(norm)} ({len(runs)} runs)"}
    xs, m, lo, hi = curve(runs, col.RUNNING_ACC_SERIES, col.RUNNING_ACC_STEPS)
    if xs:
        plot_curve(acc_ax, xs, *([100 * v for v in vs] for vs in (m, lo, hi)), **style)
    for ax, column in ((l2_ax, col.ICS_L2_SERIES), (rel_ax, col.ICS_REL_SERIES)):
        xs, m, lo, hi = curve(runs, column, col.PROBE_STEPS, log=True)
        if xs:
            plot_curve(ax, xs, m, lo, hi, **style)
    # 1 − cos on a log scale: the cosines all sit just below 1
    one_minus = curve(
        runs, col.ICS_COS_SERIES, col.PROBE_STEPS, transform=lambda v: 1 - v, log=True
    )
    if one_minus[0]:
        plot_curve(cos_ax, *one_minus, **style)


def _label_accuracy(acc_ax, target: float | None) -> None:  # noqa: ANN001
    if target is not None:
        acc_ax.axhline(100 * target, color="black", ls=":", lw=1)
        acc_ax.annotate(f"target {100 * target:g}%", (0.02, 100 * target), va="bottom",
                        xycoords=("axes fraction", "data"))  # fmt: skip
    acc_ax.set(
        xlabel="training step",
        ylabel="training accuracy (%)",
        title="Running training accuracy (as trained)",
    )


def _draw_steps_to_target(steps_ax, df: pd.DataFrame, target: float | None) -> None:  # noqa: ANN001
    """Steps to the target per norm, censored runs (budget + 1) ringed."""
    if target is None or col.RUNNING_ACC_SERIES not in df:
        mark_not_run(steps_ax, "steps to target (no target or running accuracy)")
        return
    reached = speed(df, target)
    _bars(
        steps_ax,
        {n: [v for v, _ in per.values()] for n, per in reached.items()},
        "steps",
        f"Steps to {100 * target:g}% training accuracy",
        {n: [v for v, c in per.values() if c] for n, per in reached.items()},
    )
    steps_ax.plot([], [], "o", mfc="none", mec="black", ms=9, label="censored: budget + 1")


def _label_ics(l2_ax, rel_ax, cos_ax) -> None:  # noqa: ANN001
    panels = (
        (l2_ax, "‖G − G′‖₂", "ICS: ℓ2 change of a layer's gradient"),
        (rel_ax, "‖G − G′‖₂ / ‖G‖₂", "ICS: ℓ2 change, relative"),
        (cos_ax, "1 − cos(G, G′)", "ICS: 1 − cosine (0: no shift)"),
    )
    for ax, ylabel, title in panels:
        ax.set(xlabel="training step", ylabel=ylabel, title=title)
        ax.set_yscale("log")


def _ci_text(mean: float, lo: float, hi: float, fmt: str = "+.1f") -> str:
    return f"{mean:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"


def _log_ratio(a: dict[int, float], b: dict[int, float]) -> dict[int, float]:
    return {
        s: math.log10(a[s] / b[s])
        for s in set(a) & set(b)
        if a[s] > 0 and b[s] > 0 and math.isfinite(a[s]) and math.isfinite(b[s])
    }


def as_ratio(test: dict) -> dict:
    """A test on log10 values shown as a ratio: its mean and CI as powers of 10."""
    lo, hi = test["ci"]
    return {**test, "mean": 10 ** test["mean"], "ci": [10**lo, 10**hi]}


def _ratio_text(test: dict) -> str:
    shown = as_ratio(test)
    return f"{shown['mean']:.2f} [{shown['ci'][0]:.2f}, {shown['ci'][1]:.2f}]"


def part_a_call(
    tests: dict[str, dict], censored: dict[str, list[int]]
) -> tuple[str, str, str]:
    """(call, the deciding test's name, note) of (a), with the censoring rules of the doc."""
    like_bn = "noisy BN / BN (vs 1.25)"
    call_a, by = conjunction(tests)
    note = ""
    if call_a == "contradicted" and tests[like_bn]["decision"] != "contradicted":
        # only noisy BN clearly slower than BN contradicts; not beating none fails the premise
        call_a = "inconclusive"
    if censored["batch"]:
        call_a, by = "inconclusive", like_bn
        note = (
            f"schedule too short: BN did not reach the target in {len(censored['batch'])} "
            "seed(s)"
        )
    elif call_a == "supported" and censored["noisy_batch"]:
        call_a, by = "inconclusive", like_bn
        note = (
            f"noisy BN did not reach the target in {len(censored['noisy_batch'])} seed(s): "
            "its ratio to BN is a lower bound"
        )
    return call_a, by, note


def verdict(tables: dict) -> dict:
    """The verdict of record: each architecture's runs (model.name) apart, never pooled; the one
    the baseline rule picks (normexp/analysis/verdict/architecture.py) decides."""
    per_arch = architecture.swept(tables, EXPERIMENT)
    return architecture.decide(per_arch, EXPERIMENT, _verdict_of, dict)


def _verdict_of(tables: dict) -> dict:
    return verdict_of(col.table(tables, EXPERIMENT))


def deciding(tables: dict) -> dict:
    """Every run of the architecture of record (none, BN and noisy BN all decide)."""
    return architecture.deciding(
        architecture.swept(tables, EXPERIMENT), EXPERIMENT, _verdict_of, dict
    )


def record_runs(tables: dict) -> tuple[str, pd.DataFrame]:
    """(the architecture of record, its runs): what the figure shows."""
    per_arch = architecture.swept(tables, EXPERIMENT)
    model, _ = architecture.of_record(per_arch, EXPERIMENT, _verdict_of, dict)
    return model, per_arch[model][EXPERIMENT]


@dataclass(frozen=True)
class _Evidence:
    """What C9's verdict reads, from one architecture's finished runs: steps to target and the
    measures per norm and seed, and the paired tests on them (Holm-adjusted as one family)."""

    target: float
    reached: dict[str, dict[int, tuple[float, bool]]]  # speed(): {norm: {seed: (steps, censored)}}
    measures: dict[str, dict[str, dict[int, float]]]  # _measures(): {measure: {norm: {seed: v}}}
    like_bn: dict  # log10 steps noisy BN / BN, against log10 MARGIN_RATIO
    noisy_over_none: dict  # log10 steps none / noisy BN
    bn_over_none: dict  # log10 steps none / BN
    rel_l2: dict  # log10 relative ICS ℓ2 BN / none
    cos: dict  # ICS cosine BN − none
    abs_l2: dict  # log10 absolute ICS ℓ2 BN / none: reported, not tested

    @property
    def censored(self) -> dict[str, list[int]]:
        return {n: _censored(self.reached.get(n, {})) for n in NORM_ORDER}

    @property
    def speed_tests(self) -> dict[str, dict]:
        """(a)'s tests by the names the report shows."""
        return {
            "noisy BN / BN (vs 1.25)": self.like_bn,
            "none / noisy BN": self.noisy_over_none,
            "none / BN": self.bn_over_none,
        }

    @property
    def ics_tests(self) -> dict[str, dict]:
        """(b)'s tests by the names the report shows."""
        return {"log10 relative ℓ2 ratio": self.rel_l2, "cosine difference": self.cos}

    @property
    def pct(self) -> str:
        return f"{100 * self.target:g}%"


def verdict_of(df: pd.DataFrame) -> dict:
    """C9's verdict from one architecture's runs."""
    missing = _not_run_yet(df)
    if missing is not None:
        return missing
    ev = _evidence(df)
    part_a, by_a, note_a = part_a_call(ev.speed_tests, ev.censored)
    part_b, by_b = part_b_call(ev.ics_tests)
    sub = [
        sub_verdict(
            "C9 (a)",
            "noisy BN still trains like BN",
            part_a,
            f"steps to {ev.pct} training accuracy, {by_a}, ratio (geometric mean)",
            as_ratio(ev.speed_tests[by_a]),
            note=note_a,
        ),
        sub_verdict(
            "C9 (b)",
            "BN does not reduce internal covariate shift",
            part_b,
            f"ICS with vs without BN, {by_b}",
            ev.ics_tests[by_b],
        ),
    ]
    shown = as_ratio(ev.like_bn)
    return CLAIM.verdict(
        _claim_call(part_a, part_b),
        _effect_text(ev),
        estimate=shown["mean"],
        ci=tuple(shown["ci"]),
        sub=sub,
        notes=join_notes(
            note_a,
            landscape_notes(
                df, _scale_note(df), f"steps to a target of {ev.pct} training accuracy"
            ),
        ),
        details=_details(ev, part_a, part_b),
    )


def _not_run_yet(df: pd.DataFrame) -> dict | None:
    """The "not run yet" verdict while runs of a norm, the target or the running accuracy are
    missing; None when the verdict can be decided."""
    runs = {n: by_seed(df, col.TRAIN_LOSS, {col.NORM: n}) for n in NORM_ORDER} if usable(df) else {}
    if not all(runs.get(n) for n in NORM_ORDER):
        if not any(runs.values()):
            return CLAIM.not_run_yet()
        return CLAIM.not_run_yet("needs finished runs of none, batch and noisy_batch")
    if target_of(df) is None or col.RUNNING_ACC_SERIES not in df:
        return CLAIM.not_run_yet(
            "needs runs that state a target (target.train_acc) and record the running training "
            "accuracy (running_train_acc_series)"
        )
    return None


def _evidence(df: pd.DataFrame) -> _Evidence:
    target = target_of(df)
    reached = speed(df, target)
    log_steps = {n: _log_steps(reached.get(n, {})) for n in NORM_ORDER}
    measures = _measures(df)
    rel, cos = measures["ics_l2_rel"], measures["ics_cos"]
    ev = _Evidence(
        target=target,
        reached=reached,
        measures=measures,
        like_bn=difference(
            log_steps["noisy_batch"],
            log_steps["batch"],
            claimed_sign=-1,
            null=math.log10(MARGIN_RATIO),
        ),
        noisy_over_none=difference(log_steps["none"], log_steps["noisy_batch"]),
        bn_over_none=difference(log_steps["none"], log_steps["batch"]),
        # claimed side: BN does not lower ICS (ℓ2 ratio not below 0, cosine difference not
        # above 0)
        rel_l2=_bn_over_none_test(rel),
        cos=difference(cos["batch"], cos["none"], claimed_sign=-1),
        abs_l2=_bn_over_none_test(measures["ics_l2"]),
    )
    holm_family([*ev.speed_tests.values(), *ev.ics_tests.values()])  # the five: one family
    return ev


def _measures(df: pd.DataFrame) -> dict[str, dict[str, dict[int, float]]]:
    """{measure: {norm: {seed: value}}}: the ICS measures (each run's mean over layers and probe
    points), the final training loss, and the final training, validation and test accuracy
    in %."""

    def per_norm(column: str) -> dict[str, dict[int, float]]:
        return {n: by_seed(df, column, {col.NORM: n}) for n in NORM_ORDER}

    return {
        "ics_l2": per_norm(col.ICS_L2_MEAN),
        "ics_l2_rel": per_norm(col.ICS_REL_MEAN),
        "ics_cos": per_norm(col.ICS_COS_MEAN),
        "train_loss": per_norm(col.TRAIN_LOSS),
        "train_acc_pct": _accuracy(df, col.TRAIN_ACC),
        "val_acc_pct": _accuracy(df, VAL_ACC),
        "test_acc_pct": _accuracy(df, col.TEST_ACC),
    }


def _bn_over_none_test(per_norm: dict[str, dict[int, float]]) -> dict:
    """log10(BN / none) paired by seed, against 0."""
    ratio = _log_ratio(per_norm["batch"], per_norm["none"])
    return difference(ratio, dict.fromkeys(ratio, 0.0))


def part_b_call(tests: dict[str, dict]) -> tuple[str, str]:
    """(call, the deciding test's name) of (b) from its two tests, Holm-adjusted."""
    r_test, c_test = tests["log10 relative ℓ2 ratio"], tests["cosine difference"]
    lowers = [t["decision"] == "contradicted" for t in (r_test, c_test)]
    if r_test["seeds"] < 2 or c_test["seeds"] < 2:
        call_b = "inconclusive"
    elif all(lowers):
        call_b = "contradicted"
    elif not any(lowers):
        call_b = "supported"
    else:
        call_b = "inconclusive"
    # the test that decided (b): the one that showed BN lowering ICS, else the ℓ2 ratio
    by = "log10 relative ℓ2 ratio" if lowers[0] or not lowers[1] else "cosine difference"
    return call_b, by


def _claim_call(part_a: str, part_b: str) -> str:
    if part_a == part_b == "supported":
        return "supported"
    if part_a == part_b == "contradicted":
        return "contradicted"
    return "inconclusive"


# The measures reported beside (a), noisy BN minus BN and minus none, by their key prefix in the
# details: final training loss and accuracy (as trained), validation and test accuracy.
GAP_MEASURES = {
    "train_loss": "train_loss",
    "train_acc": "train_acc_pct",
    "val_acc": "val_acc_pct",
    "test_acc": "test_acc_pct",
}


def _noisy_bn_gaps(ev: _Evidence) -> dict[str, tuple[float, float, float]]:
    """Noisy BN's final training loss and accuracies (pp) minus BN's and none's, paired by
    seed: (mean, lo, hi), by their key in the details."""
    gaps = {}
    for prefix, measure in GAP_MEASURES.items():
        values, unit = ev.measures[measure], "_pp" if measure.endswith("_pct") else ""
        for other in ("batch", "none"):
            key = f"{prefix}_noisy_minus_{'bn' if other == 'batch' else other}{unit}"
            gaps[key] = paired_difference(values["noisy_batch"], values[other])[:3]
    return gaps


def _effect_text(ev: _Evidence) -> str:
    pct, censored = ev.pct, ev.censored
    like_bn, noisy_over_none, bn_over_none = ev.like_bn, ev.noisy_over_none, ev.bn_over_none
    r_test, abs_test, c_test = ev.rel_l2, ev.abs_l2, ev.cos
    gaps = _noisy_bn_gaps(ev)
    loss_bn, loss_none = gaps["train_loss_noisy_minus_bn"], gaps["train_loss_noisy_minus_none"]
    train_bn, val_bn = gaps["train_acc_noisy_minus_bn_pp"], gaps["val_acc_noisy_minus_bn_pp"]
    counts = ", ".join(f"{label(n)} {len(censored[n])}" for n in NORM_ORDER)
    return (
        f"steps to {pct} training accuracy, noisy BN / BN: {_ratio_text(like_bn)}, none / noisy "
        f"BN: {_ratio_text(noisy_over_none)}, none / BN: {_ratio_text(bn_over_none)} "
        f"({like_bn['seeds']} seeds; runs that never reached it, censored at the budget + 1: "
        f"{counts}); final training loss, noisy BN − BN: {_ci_text(*loss_bn, '+.3f')}, noisy BN "
        f"− none: {_ci_text(*loss_none, '+.3f')}; final training accuracy, noisy BN − BN: "
        f"{_ci_text(*train_bn)} pp; validation accuracy (no noise), noisy BN − BN: "
        f"{_ci_text(*val_bn)} pp; ICS with vs without BN: log10 relative ℓ2 "
        f"ratio {_ci_text(r_test['mean'], *r_test['ci'], '+.2f')}, absolute "
        f"{_ci_text(abs_test['mean'], *abs_test['ci'], '+.2f')}, cosine difference "
        f"{_ci_text(c_test['mean'], *c_test['ci'], '+.3f')} ({r_test['seeds']} seeds)"
    )


def _details(ev: _Evidence, part_a: str, part_b: str) -> dict:
    censored_at = {
        n: sorted({v for v, c in ev.reached.get(n, {}).values() if c}) for n in NORM_ORDER
    }
    gaps = {key: [finite(v) for v in gap] for key, gap in _noisy_bn_gaps(ev).items()}
    return json_safe(
        {
            "parts": {"noisy_bn_trains_like_bn": part_a, "bn_does_not_reduce_ics": part_b},
            "target_train_acc": ev.target,
            "margin_ratio": MARGIN_RATIO,
            "censoring": "steps = budget + 1 (a lower bound); see the rule",
            "censored_at": censored_at,
            "steps_ratio_noisy_over_bn": _ratio_list(ev.like_bn),
            "steps_ratio_none_over_noisy": _ratio_list(ev.noisy_over_none),
            "steps_ratio_none_over_bn": _ratio_list(ev.bn_over_none),
            **gaps,
            "ics_log10_rel_l2_ratio_bn_over_none": [ev.rel_l2["mean"], *ev.rel_l2["ci"]],
            "ics_log10_l2_ratio_bn_over_none": [ev.abs_l2["mean"], *ev.abs_l2["ci"]],
            "ics_cos_bn_minus_none": [ev.cos["mean"], *ev.cos["ci"]],
            "means": _means(ev),
        }
    )


def _means(ev: _Evidence) -> dict[str, dict]:
    """Per norm: the mean over seeds of every measure, and the seeds censored."""
    m = ev.measures
    censored = ev.censored
    return {
        norm: {
            "steps_to_target": _mean_of({s: v for s, (v, _) in ev.reached.get(norm, {}).items()}),
            "censored_seeds": censored[norm],
            "train_loss": _mean_of(m["train_loss"][norm]),
            "train_acc_pct": _mean_of(m["train_acc_pct"][norm]),
            "val_acc_pct": _mean_of(m["val_acc_pct"][norm]),
            "test_acc_pct": _mean_of(m["test_acc_pct"][norm]),
            "ics_l2": _mean_of(m["ics_l2"][norm]),
            "ics_l2_rel": _mean_of(m["ics_l2_rel"][norm]),
            "ics_cos": _mean_of(m["ics_cos"][norm]),
        }
        for norm in NORM_ORDER
    }


def _ratio_list(test: dict) -> list[float]:
    shown = as_ratio(test)
    return [shown["mean"], *shown["ci"]]


def _accuracy(df: pd.DataFrame, column: str) -> dict[str, dict[int, float]]:
    """{norm: {seed: accuracy in %}} from finished runs."""
    return {
        n: {s: 100 * v for s, v in by_seed(df, column, {col.NORM: n}).items()} for n in NORM_ORDER
    }


def _mean_of(values: dict[int, float]) -> float | None:
    return finite(mean_ci(list(values.values()))[0])


QUOTE = Quote(
    zh=(
        "原始的BN论文给出的解释是BN可以解决神经网络训练过程中的I"
        "CS（Internal Covariate Shift）问题，"
        "……不过后来经过学者研究发现BN和ICS并没有什么关系"
    ),
    en=(
        "The original BN paper explains BN as solving internal covariate shift (ICS), … but "
        "later research found BN has nothing to do with ICS."
    ),
)
DASHBOARD = (
    Grid(
        "ICS and accuracy: none vs BN vs noisy BN",
        ("not_ics",),
        ("norm.name",),
        bars=("test/acc",),
        curves=("probe/ics_l2", "probe/ics_cos", "val/acc"),
    ),
)
ANALYSIS = CLAIM.analysis(
    "BN's benefit is not about internal covariate shift",
    (EXPERIMENT,),
    draw,
    verdict,
    deciding,
    quote=QUOTE,
    dashboard=DASHBOARD,
    about_training=("C9 (a)", "C9 (b)"),  # how fast it trains; ICS along training
)
