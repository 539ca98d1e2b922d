"""C4 bn_small_batch: test error vs batch size per norm, in two protocols, plus remedies.

Plain protocol (experiments/bn_small_batch.yaml): the SGD batch is BN's batch. GN-paper protocol
(experiments/bn_small_batch_devices.yaml): a batch of 8 × b images is split over 8 simulated
devices, BN normalizes with each device's b images (ghost BN) and the gradient and the LR follow
the whole batch; norms that normalize each sample alone do not depend on the split, so GN, LN,
IN and no norm at total batch 8 × b are the plain runs at that batch size. Remedies
(experiments/bn_small_batch_remedies.yaml): batch renormalization and GN + weight
standardization in the plain protocol at a few batch sizes.

Scale: the GN-paper protocol and the remedies are read beside the plain runs, so they run at the
plain runs' scale at every profile (normexp/analysis/one_scale.py: one scale per figure and
statistic); a profile whose store holds them at another scale leaves their panel, curves and
statistics out of its report and says why.

Architecture: the plain protocol's cells also run on the CIFAR ResNet (bn_small_batch_resnet:
BN and GN at 2 and 32, LN and the no-norm baseline at 32); (a) and (b) are computed on each
architecture apart (the ResNet has no GN-paper protocol or remedies), and the
architecture whose baseline shows no norm clearly worse than BN decides
(normexp/analysis/verdict/architecture.py; stated at the end of the rule).

Verdict rule: ``RULE`` below (normexp/analysis/verdict/rule.py writes its text).
"""

from pathlib import Path

import pandas as pd

from normexp.analysis import columns as col
from normexp.analysis.one_scale import difference_text, one_scale, same_scale
from normexp.analysis.style import (
    NEUTRAL,
    REFERENCE,
    caption,
    ci_line,
    figure,
    log2_axis,
    mark_left_out,
    mark_not_run,
    norm_color,
    norm_label,
    save_figure,
)
from normexp.analysis.verdict import (
    architecture,
    by_seed,
    failures,
)
from normexp.analysis.verdict.anchors import GN_PAPER_ERROR_BY_BATCH
from normexp.analysis.verdict.paired import (
    against_zero,
    batch_cells,
    difference,
    fmt_ci,
    gap,
    json_safe,
)
from normexp.analysis.verdict.record import select
from normexp.analysis.verdict.regime import CALLS
from normexp.analysis.verdict.rule import Part, Rule
from normexp.analysis.verdict.spec import Claim, Grid, Quote

EXPERIMENT = "bn_small_batch"
REFERENCE_BATCH = 32
ANCHOR = (
    "GN paper, ResNet-50 ImageNet top-1 error at 32/16/8/4/2 images per GPU: "
    "BN 23.6/23.7/24.8/27.3/34.7, GN 24.1/24.2/24.0/24.2/24.1 (one run each)"
)
RULE = Rule(
    preamble=(
        "With D(b) = err_BN(b) − err_GN(b), paired by seed, at the smallest batch size b_s of "
        f"the grid and at the reference batch b_r = {REFERENCE_BATCH} (the GN paper's; else the "
        f"largest size above b_s and ≤ {REFERENCE_BATCH}, else the largest size of the grid)"
    ),
    parts=(
        Part(
            "C4a",
            "BN degrades at very small batches",
            "growth of BN − GN test error from batch {ref} to {small}, pp",
            "D(b_s) − D(b_r)",
            "> 0",
            why="BN loses more than GN when the batch shrinks (measured against GN, because with "
            "a fixed number of epochs a smaller batch also means more steps, which moves every "
            "norm)",
        ),
        Part(
            "C4b",
            "GN is the choice for tiny batches",
            "BN − GN test error at batch {small}, pp",
            "D(b_s)",
            "> 0",
        ),
    ),
    unit="pp of test error",
    estimate="C4a's",
    postscript=(
        "Both are decided on the plain protocol; the details give (a) and (b) for the GN-paper "
        "protocol too (b = images per device, over the splits whose total batch the plain "
        "protocol's GN runs have; BN with per-device statistics vs GN at the same total batch; "
        f"b_r = the largest per-device batch ≤ {REFERENCE_BATCH}), and the "
        "remedies' paired differences at each of their batch sizes (batch renorm − BN, "
        "GN+WS − GN, GN+WS − BN)."
    ),
)
CLAIM = Claim("C4", EXPERIMENT, ANCHOR, RULE.text())
NORM_ORDER = ("batch", "group", "layer", "instance", "none")
DEVICES = "bn_small_batch_devices"
REMEDIES = "bn_small_batch_remedies"
RESNET = "bn_small_batch_resnet"  # C4, C5 and C8's cells and the baseline on the CIFAR ResNet
DEFAULT_DEVICES = 8  # the GN paper's 8 GPUs, when a table lacks devices.count
LEFT_OUT = "left out: another scale"  # the call of a protocol left out of a profile's report
# Curves of the remedies: (norm.name, model.weight_side) -> label; drawn dashed.
REMEDY_LABELS = {("batch_renorm", "none"): "batch renorm", ("group", "weight_std"): "GN+WS"}


def error_by_batch(df: pd.DataFrame, key: str = col.NORM) -> pd.DataFrame:
    """Mean test error (%, ``err``) with 95% CI over seeds per (``key``, batch size), from
    finished runs; ``failed`` counts diverged/failed runs of the cell, which count as failures."""
    return batch_cells(df, col.TEST_ERR, "err", key, scale=100)


def _usable(df: pd.DataFrame, *columns: str) -> bool:
    """Runs with these config columns and a test error (not run yet without rows)."""
    return col.has_rows(df, col.BATCH, *columns) and col.TEST_ERR in df


def with_remedy_labels(df: pd.DataFrame) -> pd.DataFrame:
    """The remedies' runs with a ``remedy`` column ('batch renorm', 'GN+WS')."""
    if not _usable(df, col.NORM):
        return pd.DataFrame()
    # a CNN without a weight-side layer may predate the model.weight_side option
    side = df[col.WEIGHT_SIDE] if col.WEIGHT_SIDE in df else pd.Series("none", df.index)
    df = df.assign(
        remedy=[
            REMEDY_LABELS.get((n, w), f"{n}+{w}") for n, w in zip(df[col.NORM], side, strict=True)
        ]
    )
    return df


def _curve(ax, cells: pd.DataFrame, label: str, color: str, style: str, x_scale: float = 1):  # noqa: ANN001
    """A norm's error against the batch size with its 95% CI: a band, or an error bar where it
    ran at one size; × where runs failed."""
    c = cells.sort_values("batch_size")
    xs = c["batch_size"] / x_scale
    ci_line(ax, xs, c["err"], c["lo"], c["hi"], color=color, label=label, fmt=style, lw=1.6)
    bad = c[c["failed"] > 0]
    ax.plot(bad["batch_size"] / x_scale, bad["err"], "x", color="black", ms=8)


def _draw_plain(ax, df: pd.DataFrame, remedies: pd.DataFrame, model: str = "cnn") -> None:  # noqa: ANN001
    cells = error_by_batch(df)
    norms = [n for n in NORM_ORDER if n in set(cells["norm"])]
    norms += sorted(set(cells["norm"]) - set(norms))
    for norm in norms:
        c = cells[cells["norm"] == norm]
        _curve(ax, c, norm_label(norm), norm_color(norm), "o-")
    if not remedies.empty:
        one_scale("C4's plain-protocol panel", {EXPERIMENT: df, REMEDIES: remedies})
        rcells = error_by_batch(remedies, key="remedy")
        for remedy in sorted(set(rcells["norm"])):
            name = "batch_renorm" if remedy == "batch renorm" else "group"
            _curve(ax, rcells[rcells["norm"] == remedy], remedy, norm_color(name), "D--")
    sizes = sorted(set(cells["batch_size"]) | set(remedies.get(col.BATCH, [])))
    seeds = int(cells["seeds"].max())
    ax.set_title(f"Ours, plain: {architecture.name(model, df)}\n(mean, 95% CI, {seeds} seeds)")
    ax.set_ylabel("test error (%)")
    dashed = "; dashed: remedies" if not remedies.empty else ""
    log2_axis(ax, [int(s) for s in sizes], f"batch size (= BN batch){dashed}", legend=False)


def _scale(df: pd.DataFrame) -> str:
    """'quick profile, 4,000 train images'."""
    profile, n_train = col.first(df, col.PROFILE, "?"), col.first(df, col.N_TRAIN, 0)
    return f"{profile} profile, {int(n_train):,} train images"


def _draw_devices(ax, df: pd.DataFrame, devices: pd.DataFrame) -> None:  # noqa: ANN001
    """GN-paper protocol: error vs images per device; per-sample norms from the plain runs at
    the same total batch."""
    one_scale("C4's GN-paper-protocol panel", {DEVICES: devices, EXPERIMENT: df})
    count = _device_count(devices)
    per_device = sorted(int(g) for g in devices[col.GROUP_SIZE].unique())
    ghost = error_by_batch(devices)
    _curve(ax, ghost, f"BN per device ({count} devices)", norm_color("batch"), "o-", count)
    if _usable(df, col.NORM):
        totals = set(int(b) for b in devices[col.BATCH].unique())
        plain = error_by_batch(df[df[col.BATCH].isin(totals)])
        for norm in ("batch", "group", "layer", "instance", "none"):
            c = plain[plain["norm"] == norm]
            if c.empty:
                continue
            if norm == "batch":
                label, style = f"BN over all {count} devices (plain run)", "o:"
            else:
                label, style = f"{norm_label(norm)} (plain run)", "o-"
            _curve(ax, c, label, norm_color(norm), style, count)
    ax.set_title(f"Ours, GN-paper protocol: batch = {count} ×\nimages per device, LR by total")
    ax.set_ylabel("test error (%)")
    log2_axis(ax, per_device, "images per device (BN batch)", legend=False)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncols=2, columnspacing=1)


def _device_count(devices: pd.DataFrame) -> int:
    return int(col.first(devices, col.DEVICES, DEFAULT_DEVICES))


def scale_note(extra: str, runs: pd.DataFrame, plain: pd.DataFrame) -> str:
    """'' when ``extra``'s runs are at the scale of the plain runs they are read beside; else
    why this profile's report leaves them out (one scale per figure and statistic)."""
    pair = {extra: runs, EXPERIMENT: plain}
    if same_scale(pair):
        return ""
    return (
        f"{extra} is left out of this profile's report: its runs are at another scale than the "
        f"{EXPERIMENT} runs they are compared with ({difference_text(pair)})"
    )


def paired_gaps(df: pd.DataFrame) -> pd.DataFrame:
    """D(b) = err_BN(b) − err_GN(b) in pp, paired by seed, at every batch size with both: the
    statistic C4 decides on (``RULE``), one row per size (mean, 95% CI, seeds)."""
    rows = []
    if _usable(df, col.NORM):
        plain = _plain(df)
        for b in sorted(int(v) for v in plain[col.BATCH].unique()):
            d = against_zero(gap(*bn_gn_errors(plain, b)))
            if d["seeds"]:
                rows.append({"batch_size": b, "mean": d["mean"], "lo": d["ci"][0],
                             "hi": d["ci"][1], "seeds": d["seeds"]})  # fmt: skip
    return pd.DataFrame(rows, columns=["batch_size", "mean", "lo", "hi", "seeds"])


def _draw_statistic(ax, archs: dict[str, pd.DataFrame]) -> None:  # noqa: ANN001
    """The deciding statistic D(b) per architecture (its runs of record), and the anchor's."""
    sizes: set[int] = set()
    for (model, df), style in zip(archs.items(), ("o-", "s--"), strict=False):
        gaps = paired_gaps(df)
        if gaps.empty:
            continue
        sizes |= set(gaps["batch_size"])
        color = "black" if style == "o-" else NEUTRAL
        ci_line(ax, gaps["batch_size"], gaps["mean"], gaps["lo"], gaps["hi"], color=color,
                fmt=style, label=f"ours, {architecture.name(model, df)}")  # fmt: skip
    anchor = {b: GN_PAPER_ERROR_BY_BATCH["batch"][b] - GN_PAPER_ERROR_BY_BATCH["group"][b]
              for b in sorted(GN_PAPER_ERROR_BY_BATCH["batch"])}  # fmt: skip
    ax.plot(list(anchor), list(anchor.values()), "^:", color=REFERENCE,
            label="GN paper, ResNet-50 ImageNet")  # fmt: skip
    ax.axhline(0, color=REFERENCE, lw=1)
    ax.set_ylabel("BN − GN test error (pp)")
    ax.set_title("The deciding statistic: BN − GN test\nerror, paired by seed (95% CI)")
    log2_axis(ax, sorted(sizes | set(anchor)), "batch size (= BN batch; GN paper: per GPU)")


def draw(tables: dict, out: Path, results_dir: Path | None = None) -> Path:
    """First the statistic C4 decides on, per architecture, beside the anchor's; then the
    plain protocol's errors per architecture, the GN-paper protocol and the baseline."""
    df = col.table(tables, EXPERIMENT)
    resnet = col.table(tables, RESNET)
    devices = col.table(tables, DEVICES)
    remedies = with_remedy_labels(col.table(tables, REMEDIES))
    remedies_out = scale_note(REMEDIES, remedies, df)
    if remedies_out:  # at another scale than the plain runs: not drawn beside them
        remedies = pd.DataFrame()
    fig = figure(10.4)
    rows = fig.subfigures(3, 1, height_ratios=(1.05, 1, 1.25))
    ax_stat, ax_ref = rows[0].subplots(1, 2, width_ratios=(1.6, 1))
    ax, ax_res = rows[1].subplots(1, 2, sharey=True)
    ax_dev, ax_base = rows[2].subplots(1, 2, width_ratios=(1.1, 1))
    _draw_statistic(ax_stat, {"resnet": resnet, "cnn": df})
    for axis, runs, extra, model in ((ax, df, remedies, "cnn"), (ax_res, resnet, None, "resnet")):
        if not _usable(runs, col.NORM):
            mark_not_run(axis, f"{EXPERIMENT if model == 'cnn' else RESNET}")
        else:
            _draw_plain(axis, runs, pd.DataFrame() if extra is None else extra, model)
    handles = {}
    for axis in (ax, ax_res):
        handles |= dict(zip(*reversed(axis.get_legend_handles_labels()), strict=True))
    if handles:
        rows[1].legend(handles.values(), handles.keys(), loc="outside right center")
    architecture.draw_baseline(ax_base, {"resnet": resnet, "cnn": df})
    if not _usable(devices, col.GROUP_SIZE):
        mark_not_run(ax_dev, DEVICES)
    elif why := scale_note(DEVICES, devices, df):
        mark_left_out(ax_dev, f"GN-paper protocol ({DEVICES})", why)
    else:
        _draw_devices(ax_dev, df, devices)
    if remedies_out:
        ax.set_xlabel(f"{ax.get_xlabel()}\n{REMEDIES}: left out (another scale)")
    ax_res.set_ylabel("")
    caption(fig, f"C4b: BN − GN > 0 at the smallest batch; C4a: BN − GN grows from batch "
            f"{REFERENCE_BATCH} (the GN paper's) down to it. Each architecture is decided apart; "
            "the one whose own baseline shows BN clearly ahead of no norm decides (the verdict "
            "names it).")  # fmt: skip
    for norm, errs in GN_PAPER_ERROR_BY_BATCH.items():
        sizes = sorted(errs)
        ax_ref.plot(
            sizes, [errs[s] for s in sizes], "s--", color=norm_color(norm), label=norm_label(norm)
        )
    ax_ref.set_title("Anchor: GN paper, ResNet-50\nImageNet (one run each)")
    ax_ref.set_ylabel("top-1 error (%)")
    log2_axis(ax_ref, sorted(GN_PAPER_ERROR_BY_BATCH["batch"]), "images per GPU")
    return save_figure(fig, out, f"C4: BN against GN as the batch shrinks; {_scale(df)}")


def _plain(df: pd.DataFrame) -> pd.DataFrame:
    """Runs of the plain protocol (BN statistics over the whole SGD batch)."""
    return df[df[col.NORM].isin(["batch", "group"])]


def _decide_parts(d_small: dict, d_ref: dict) -> tuple[dict, dict, str]:
    """(a) D(b_s) − D(b_r), (b) D(b_s), and the combined call, by ``RULE``."""
    call, tests = RULE.decide({"C4a": difference(d_small, d_ref), "C4b": against_zero(d_small)})
    return tests["C4a"], tests["C4b"], call


def _reference(sizes: list[int], small: int) -> int:
    return max([b for b in sizes if b <= REFERENCE_BATCH and b > small] or sizes[-1:])


def devices_part(df: pd.DataFrame, devices: pd.DataFrame) -> dict:
    """The verdict's (a) and (b) for the GN-paper protocol: D(g) = err(BN with statistics per
    device of g images) − err(GN at the same total batch), pp, paired by seed."""
    if not _usable(devices, col.GROUP_SIZE) or not _usable(df, col.NORM):
        return {"call": "not run yet"}
    one_scale("C4's GN-paper-protocol statistic", {DEVICES: devices, EXPERIMENT: df})
    ok = devices[devices[col.STATUS] == "ok"]
    total_of = {int(g): int(b) for g, b in zip(ok[col.GROUP_SIZE], ok[col.BATCH], strict=True)}
    gn = df[(df[col.NORM] == "group") & (df[col.STATUS] == "ok")]
    sizes = sorted(g for g, total in total_of.items() if total in set(gn[col.BATCH]))
    if len(sizes) < 2:
        why = "needs two per-device batch sizes whose total batch has GN runs"
        return {"call": "not run yet", "why": why}

    def device_gap(g: int) -> dict[int, float]:
        bn = by_seed(ok, col.TEST_ERR, {col.GROUP_SIZE: g})
        return gap(bn, bn_gn_errors(df, total_of[g])[1])

    small = sizes[0]
    ref = _reference(sizes, small)
    inter, tiny, call = _decide_parts(device_gap(small), device_gap(ref))
    if inter["seeds"] == 0 and tiny["seeds"] == 0:
        call = "not run yet"
    return {
        "call": call,
        "devices": _device_count(devices),
        "small_per_device": small,
        "reference_per_device": ref,
        "total_batch": {str(g): total_of[g] for g in sizes},
        "a_gap_growth_pp": inter,
        "b_bn_minus_gn_at_small_pp": tiny,
    }


def remedies_part(df: pd.DataFrame, remedies: pd.DataFrame) -> dict:
    """Paired differences of test error (pp) at each batch size of the remedies' grid."""
    if remedies.empty or not _usable(df, col.NORM):
        return {}
    one_scale("C4's remedies statistic", {REMEDIES: remedies, EXPERIMENT: df})
    out = {}
    for batch in sorted(int(b) for b in remedies[col.BATCH].unique()):

        def err(table: pd.DataFrame, column: str, name: str, b: int = batch) -> dict[int, float]:
            where = {col.BATCH: b, column: name}
            return {s: 100 * v for s, v in by_seed(table, col.TEST_ERR, where).items()}

        brn = err(remedies, "remedy", "batch renorm")
        gnws = err(remedies, "remedy", "GN+WS")
        bn, gn = err(df, col.NORM, "batch"), err(df, col.NORM, "group")
        out[str(batch)] = {
            "batch_renorm_minus_bn_pp": difference(brn, bn),
            "gn_ws_minus_gn_pp": difference(gnws, gn),
            "gn_ws_minus_bn_pp": difference(gnws, bn),
        }
    return out


def extras_text(remedies: dict, small: int) -> str:
    """The remedies at the smallest batch, for the effect line."""
    at = remedies.get(str(small))
    if not at:
        return ""
    return (
        f"remedies at batch {small}: GN+WS minus BN {fmt_ci(at['gn_ws_minus_bn_pp'])}, "
        f"batch renorm minus BN {fmt_ci(at['batch_renorm_minus_bn_pp'])}"
    )


def bn_gn_errors(df: pd.DataFrame, batch: int) -> tuple[dict[int, float], dict[int, float]]:
    """({seed: BN's test error}, {seed: GN's}) at one batch size."""
    return tuple(
        by_seed(df, col.TEST_ERR, {col.NORM: norm, col.BATCH: batch}) for norm in ("batch", "group")
    )


def _plain_effect(inter_d: dict, tiny_d: dict, ref: int, small: int) -> str:
    """The effect line's plain-protocol part: (a) and (b) with their intervals."""
    inter, (i_lo, i_hi), n = inter_d["mean"], inter_d["ci"], inter_d["seeds"]
    tiny, (t_lo, t_hi) = tiny_d["mean"], tiny_d["ci"]
    return (
        f"BN minus GN test error grows by {inter:+.1f} pp [{i_lo:+.1f}, {i_hi:+.1f}] from batch "
        f"{ref} to batch {small}; at batch {small} BN minus GN is {tiny:+.1f} pp "
        f"[{t_lo:+.1f}, {t_hi:+.1f}] ({n} seeds)"
    )


def _devices_effect(gn_protocol: dict) -> str:
    """The effect line's GN-paper-protocol part; empty until that protocol has run (and where
    it is left out)."""
    if gn_protocol["call"] not in CALLS:
        return ""
    a, g = gn_protocol["a_gap_growth_pp"], gn_protocol["small_per_device"]
    return (
        f"; GN-paper protocol ({gn_protocol['devices']} devices): the gap grows by "
        f"{a['mean']:+.1f} pp [{a['ci'][0]:+.1f}, {a['ci'][1]:+.1f}] from "
        f"{gn_protocol['reference_per_device']} to {g} images per device "
        f"({gn_protocol['call']})"
    )


def _remedies_effect(remedies: dict, small: int) -> str:
    """The effect line's remedies sentence, capitalized; empty without remedies at `small`."""
    extras = extras_text(remedies, small)
    return f". {extras[0].upper()}{extras[1:]}" if extras else ""


def _all_failures(df: pd.DataFrame, tables: dict) -> str:
    """Failed runs of the plain protocol, then of the devices and remedies experiments."""
    notes = failures(df)
    for name in (DEVICES, REMEDIES):
        extra = failures(col.table(tables, name))
        if extra:
            notes += f"; {name}: {extra}"
    return notes


def _sub_verdicts(inter_d: dict, tiny_d: dict, ref: int, small: int) -> list[dict]:
    """C4a and C4b, each with its own test (Holm-adjusted together)."""
    return RULE.sub_verdicts({"C4a": inter_d, "C4b": tiny_d}, ref=ref, small=small)


def reported_beside(df: pd.DataFrame, tables: dict) -> tuple[dict, dict, list[str]]:
    """The GN-paper protocol's (a) and (b), the remedies' differences, and why either is left
    out (its runs at another scale than the plain runs ``df``: then not computed)."""
    devices = col.table(tables, DEVICES)
    remedy_runs = with_remedy_labels(col.table(tables, REMEDIES))
    devices_out = scale_note(DEVICES, devices, df)
    remedies_out = scale_note(REMEDIES, remedy_runs, df)
    gn_protocol = devices_part(df, devices) if not devices_out else {}
    remedies = remedies_part(df, remedy_runs) if not remedies_out else {}
    if devices_out:
        gn_protocol = {"call": LEFT_OUT, "why": devices_out}
    return gn_protocol, remedies, [n for n in (devices_out, remedies_out) if n]


def verdict_of(tables: dict) -> dict:
    """C4's verdict from one architecture's tables (its runs under bn_small_batch's name)."""
    df = col.table(tables, EXPERIMENT)
    if not _usable(df, col.NORM):
        return CLAIM.not_run_yet()
    plain = _plain(df)
    sizes = sorted(int(b) for b in plain[col.BATCH].unique())
    if len(sizes) < 2:
        return CLAIM.not_run_yet("BN and GN need at least two batch sizes")
    small = sizes[0]
    ref = _reference(sizes, small)
    inter_d, tiny_d, result = _decide_parts(
        gap(*bn_gn_errors(plain, small)), gap(*bn_gn_errors(plain, ref))
    )
    gn_protocol, remedies, left_out = reported_beside(df, tables)
    effect = (
        _plain_effect(inter_d, tiny_d, ref, small)
        + _devices_effect(gn_protocol)
        + _remedies_effect(remedies, small)
    )
    t_lo, t_hi = tiny_d["ci"]
    return CLAIM.verdict(
        result,
        effect,
        inter_d,
        sub=_sub_verdicts(inter_d, tiny_d, ref, small),
        notes="; ".join(n for n in (_all_failures(df, tables), *left_out) if n),
        details=json_safe(
            {
                "small_batch": small,
                "reference_batch": ref,
                "parts": [inter_d["decision"], tiny_d["decision"]],
                "bn_minus_gn_at_small_pp": [tiny_d["mean"], t_lo, t_hi],
                "gn_paper_protocol": gn_protocol,
                "remedies": remedies,
            }
        ),
    )


def deciding_of(tables: dict) -> dict:
    """The cells that decide C4 on one architecture: BN and GN of the plain protocol (the other
    protocols and the remedies are reported, not decided on)."""
    df = col.table(tables, EXPERIMENT)
    return {EXPERIMENT: select(df, {col.NORM: ["batch", "group"]}) if _usable(df, col.NORM) else df}


# Decided per architecture (normexp/analysis/verdict/architecture.py): its baseline rule picks
# which.
PER_ARCHITECTURE = architecture.PerArchitecture(EXPERIMENT, RESNET, verdict_of, deciding_of)

QUOTE = Quote(
    zh=(
        "如果Batch Size太小，则BN效果明显下降。……如"
        "果使用场景约束BatchSize必须设置很小，无疑此时考虑"
        "使用GroupNorm。"
    ),
    en=(
        "If the batch size is too small, BN degrades clearly. … When the batch size must be "
        "very small, GroupNorm is the choice."
    ),
)
DASHBOARD = (
    Grid(
        "Test error vs batch size, per norm (plain protocol)",
        ("bn_small_batch",),
        ("norm.name", "train.batch_size"),
        bars=("test/err",),
        curves=("val/acc",),
        scatter=("train.batch_size", "test/err"),
        parallel=("norm.name", "train.batch_size", "test/err"),
        log_x=True,
    ),
    Grid(
        "Simulated devices (GN paper protocol)",
        ("bn_small_batch_devices",),
        ("norm.name", "devices.per_device"),
        bars=("test/err",),
        scatter=("devices.per_device", "test/err"),
        log_x=True,
    ),
    Grid(
        "Remedies",
        ("bn_small_batch_remedies",),
        ("claim.name", "norm.name", "train.batch_size"),
        bars=("test/err",),
        curves=("val/acc",),
    ),
)
ANALYSIS = CLAIM.analysis(
    "BN degrades at tiny batches; GN is the choice there",
    (EXPERIMENT, DEVICES, REMEDIES, RESNET),
    draw,
    per_architecture=PER_ARCHITECTURE,
    quote=QUOTE,
    dashboard=DASHBOARD,
)
