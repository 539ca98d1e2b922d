"""C7 rnn_norm: which normalization helps an LSTM language model on PTB characters.

Runs: experiments/rnn_norm.yaml, one run per cell and seed: ``none`` (plain LSTM, PyTorch's
fused kernel), ``layer`` (LN-LSTM, Ba et al. 2016), ``batch_per_step`` (BN-LSTM with statistics
per time step, Cooijmans et al. 2016), ``batch_shared`` (BN-LSTM, one set of statistics for all
steps), ``rms``. Scores are test bits per character (lower is better); at word level, bits per
word (log2 of the perplexity) take their place.

Verdict rule. With d(X, Y) = test bpc(X) − test bpc(Y) at the trained window length, paired by
seed (a paired t-test over seeds), and the two BN cells B ∈ {batch_per_step, batch_shared}, the
claim's family of tests is d(layer, none), d(B, none) and d(B, layer) for each B, Holm-adjusted
together. Two sub-claims. C7a "BN is useless in RNNs": *contradicted* if some B beats the plain
LSTM (d(B, none) < 0, adjusted test rejects); *supported* if every B is worse than the plain
LSTM (d(B, none) > 0, rejects: useless or harmful; with no equivalence margin, "no effect" can
only be inconclusive); *inconclusive* otherwise. C7b "only LN is effective in RNNs", with
RMSNorm counted in LN's family (RMSNorm is LN without the mean: reported, not a rival; ``FAMILY``,
which C11's RNN row reads too):
*supported* if LN beats the plain LSTM (d(layer, none) < 0) and beats both BN cells
(d(B, layer) > 0) and no B beats the plain LSTM; *contradicted* if LN does not help
(d(layer, none) > 0), some B beats LN (d(B, layer) < 0) or some B beats the plain LSTM (then LN
is not the only norm that helps, even when it helps more); *inconclusive* otherwise, and when
fewer than 2 seeds pair up. The claim is supported iff both sub-claims are, contradicted if
either is. A BN cell missing from the table is
skipped; with neither BN cell nor LN and the plain LSTM there is no verdict ("not run yet"). The
estimate is d(batch_per_step, layer), Cooijmans' BN-LSTM against LN (positive: LN better). The
details give every cell's bpc at the trained and at the longer evaluation length, every paired
difference, and each cell's change from the trained to the longer length (the inconvenience of
per-step statistics beyond the trained length shows there). A diverged or failed run drops its
seed from the pairs and is listed in the notes. What decides: rnn_norm alone (PTB characters,
one batch size). Two more experiments are reported beside it, in the details and the figure, as
paired differences with unadjusted CIs, outside the Holm family and the verdicts:
rnn_small_batch (every cell at batch 4 to 64 with one step budget; per batch size, BN per step
vs LN vs the plain LSTM, test bpc) and rnn_words (every cell on PTB words, test perplexity,
beside Zaremba et al. 2014's small non-regularized LSTM).
"""

import math
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from normexp.analysis import columns as col
from normexp.analysis.stats import mean_ci
from normexp.analysis.style import (
    NEUTRAL,
    REFERENCE,
    anchor_bars,
    caption,
    ci_line,
    figure,
    mark_not_run,
    norm_color,
    save_figure,
)
from normexp.analysis.verdict import (
    all_parts,
    by_seed,
    conjunction,
    failures,
    holm_family,
    sub_verdict,
)
from normexp.analysis.verdict.anchors import COOIJMANS_TEST_BPC, ZAREMBA_SMALL_PERPLEXITY
from normexp.analysis.verdict.paired import difference, json_safe
from normexp.analysis.verdict.spec import Claim, Grid, Quote, Score
from normexp.models.lstm_cells import BATCH_CELLS as BN_CELLS
from normexp.models.lstm_cells import CELLS
from normexp.tracking.store import RunRecord

EXPERIMENT = "rnn_norm"
SMALL_BATCH = "rnn_small_batch"  # the cells x batch 4..64 on PTB characters, one step budget
WORDS = "rnn_words"  # the cells on PTB words, perplexity
ANCHOR = (
    "Cooijmans et al. 2016 (Recurrent Batch Normalization), PTB characters, 1000 units, batch 64, "
    "Adam 2e-3, windows of 100: test 1.38 bpc (LSTM) vs 1.32 (BN-LSTM, statistics per time "
    "step); Ba et al. 2016 (Layer Normalization) report LN-LSTM gains on other sequence tasks"
)
CLAIM = Claim.from_doc("C7", EXPERIMENT, ANCHOR, __doc__)
# C7b's family rule, one definition: a cell counted in another's family is reported beside it,
# never its rival (RMSNorm is LN without the mean). C11's RNN row reads it (``SCORE``).
FAMILY = {"rms": "layer"}
# Paired differences the batch grid reports per batch size (a − b, test bpc; unadjusted).
GRID_PAIRS = (
    ("batch_per_step", "layer"),
    ("batch_per_step", "none"),
    ("batch_shared", "layer"),
    ("layer", "none"),
)
CELL_LABELS = {
    "none": "LSTM (no norm)",
    "layer": "LN-LSTM",
    "batch_per_step": "BN-LSTM, per-step stats",
    "batch_shared": "BN-LSTM, shared stats",
    "rms": "RMSNorm-LSTM",
}
CELL_MARKERS = {"none": "o", "layer": "s", "batch_per_step": "^", "batch_shared": "v", "rms": "D"}


def cell_color(cell: str) -> str:
    """A cell's colour: its norm's, from the registry (the palette of every figure)."""
    return norm_color(cell)


def cell_label(cell: str) -> str:
    return CELL_LABELS.get(cell, cell)


def in_family_of(head: str) -> list[str]:
    """The cells counted in ``head``'s family (``FAMILY``), ``head`` not included."""
    return [c for c, h in FAMILY.items() if h == head]


def family_note(head: str = "layer") -> str:
    """'RMSNorm counted in LN's family': C7b's statement of its family rule."""
    members = ", ".join(cell_label(c).removesuffix("-LSTM") for c in in_family_of(head))
    return f"{members} counted in {SHORT[head]}'s family" if members else ""


def _level(df: pd.DataFrame) -> str | None:
    """The level the verdict is decided on: characters when present, else words."""
    if df.empty or col.LEVEL not in df:  # runs from before word level was an option
        return "char" if not df.empty and col.TEST_BPC in df else None
    levels = set(df[col.LEVEL].dropna())
    return "char" if "char" in levels else ("word" if "word" in levels else None)


def scored(df: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Runs of the verdict's level with ``bits`` and ``bits_long`` columns (test bits per token
    at the trained and the longer length); the unit's name."""
    level = _level(df) if col.has_rows(df, col.NORM) else None
    if level is None:
        return pd.DataFrame(), "bpc"
    rows = df[df[col.LEVEL] == level] if col.LEVEL in df else df
    if level == "char":
        if col.TEST_BPC not in rows:
            return pd.DataFrame(), "bpc"
        bits = rows[col.TEST_BPC]
        long = _optional(rows, col.TEST_BPC_LONG)
        return rows.assign(bits=bits, bits_long=long), "bpc"
    if col.TEST_PPL not in rows:
        return pd.DataFrame(), "bits/word"
    long = _optional(rows, col.TEST_PPL_LONG)
    return rows.assign(bits=np.log2(rows[col.TEST_PPL]), bits_long=np.log2(long)), "bits/word"


def _optional(rows: pd.DataFrame, column: str) -> pd.Series:
    """A metric that older runs did not record (the longer windows): NaN where missing."""
    return rows[column] if column in rows else pd.Series(np.nan, rows.index)


def _scores(df: pd.DataFrame, value: str = "bits") -> dict[str, dict[int, float]]:
    """{cell: {seed: value}} of finished runs, finite values only."""
    out = {}
    for cell in df[col.NORM].unique():
        values = by_seed(df, value, {col.NORM: cell})
        values = {s: v for s, v in values.items() if math.isfinite(v)}
        if values:
            out[str(cell)] = values
    return out


def cell_table(df: pd.DataFrame, values: tuple[str, str] = ("bits", "bits_long")) -> pd.DataFrame:
    """Mean and 95% CI over seeds of each cell's ``values`` (test bits at both lengths)."""
    rows = []
    for cell in _ordered(df[col.NORM].unique()):
        runs = df[df[col.NORM] == cell]
        ok = runs[runs[col.STATUS] == "ok"]
        row = {"cell": cell, "seeds": len(ok), "failed": int((runs[col.STATUS] != "ok").sum())}
        for value in values:
            vals = [v for v in ok[value] if math.isfinite(v)]
            row[value], row[f"{value}_lo"], row[f"{value}_hi"] = mean_ci(vals)
        rows.append(row)
    return pd.DataFrame(rows)


def _ordered(cells) -> list[str]:  # noqa: ANN001
    cells = [str(c) for c in cells]
    return [c for c in CELLS if c in cells] + sorted(set(cells) - set(CELLS))


def _holm_tests(scores: dict, bn_cells: list[str]) -> tuple[dict, dict, dict]:
    """The claim's family, Holm-adjusted together (in place): d(layer, none), and {B: d(B, none)}
    and {B: d(B, layer)} for each BN cell B."""
    ln_vs_none = difference(scores["layer"], scores["none"], claimed_sign=-1)
    bn_vs_none = {b: difference(scores[b], scores["none"]) for b in bn_cells}
    bn_vs_ln = {b: difference(scores[b], scores["layer"]) for b in bn_cells}
    holm_family([ln_vs_none, *bn_vs_none.values(), *bn_vs_ln.values()])
    return ln_vs_none, bn_vs_none, bn_vs_ln


def _minus_plain_name(cell: str) -> str:
    return f"{cell_label(cell)} − plain LSTM"


def _only_ln_tests(ln_vs_none: dict, bn_vs_ln: dict) -> dict[str, dict]:
    """C7b's tests by name: LN against the plain LSTM, then every BN cell against LN."""
    tests = {"LN-LSTM − plain LSTM": ln_vs_none}
    tests |= {f"{cell_label(b)} − LN-LSTM": d for b, d in bn_vs_ln.items()}
    return tests


def _unless_bn_helps(only_ln: str, by_only: str, bn_helps: dict[str, bool]) -> tuple[str, str]:
    """C7b's call and its deciding test, contradicted by the first BN cell that beats the plain
    LSTM: then another norm helps and LN is not the only one."""
    helper = next((b for b, helps in bn_helps.items() if helps), None)
    if helper is not None and only_ln != "contradicted":
        return "contradicted", _minus_plain_name(helper)
    return only_ln, by_only


def _sub_verdicts(c7a: tuple[str, str], c7b: tuple[str, str], tests: dict, unit: str) -> list:
    """C7a and C7b, each from its (call, name of the test in ``tests`` that decided it)."""
    (useless, by), (only_ln, by_only) = c7a, c7b
    return [
        sub_verdict(
            "C7a", "BN is useless in RNNs", useless, f"{by}, test {unit}", tests[by]
        ),
        sub_verdict(
            "C7b",
            f"only LN is effective in RNNs ({family_note()})",
            only_ln,
            f"{by_only}, test {unit}",
            tests[by_only],
        ),
    ]


def _effect(key: str, ln_vs_none: dict, bn_vs_none: dict, bn_vs_ln: dict, unit: str) -> str:
    """The effect line: ``key`` (a BN cell) minus LN, LN and every BN cell minus the plain LSTM."""
    head = bn_vs_ln[key]
    return (
        f"{cell_label(key)} minus LN-LSTM: {_fmt(head, unit)}; LN-LSTM minus plain LSTM: "
        f"{_fmt(ln_vs_none, unit)}; "
        + "; ".join(
            f"{cell_label(b)} minus plain LSTM: {_fmt(d, unit)}" for b, d in bn_vs_none.items()
        )
        + f" (test {unit}, trained window length, {head['seeds']} paired seeds)"
    )


def verdict_from(df: pd.DataFrame) -> dict:
    """The C7 verdict from the collected rnn_norm table (see the module docstring's rule)."""
    runs, unit = scored(df)
    if runs.empty:
        return CLAIM.not_run_yet()
    scores = _scores(runs)
    bn_cells = [b for b in BN_CELLS if b in scores]
    if "layer" not in scores or "none" not in scores or not bn_cells:
        have = ", ".join(sorted(scores)) or "none"
        what = f"needs finished runs of none, layer and a BN cell; have: {have}"
        return CLAIM.not_run_yet(what)
    ln_vs_none, bn_vs_none, bn_vs_ln = _holm_tests(scores, bn_cells)
    useless_tests = {_minus_plain_name(b): d for b, d in bn_vs_none.items()}
    useless, by = conjunction(useless_tests)
    only_tests = _only_ln_tests(ln_vs_none, bn_vs_ln)
    only_ln, by_only = conjunction(only_tests)
    ln_best = only_ln == "supported"  # LN beats the plain LSTM and every BN cell
    bn_helps = {b: d["decision"] == "contradicted" for b, d in bn_vs_none.items()}
    only_ln, by_only = _unless_bn_helps(only_ln, by_only, bn_helps)
    key = "batch_per_step" if "batch_per_step" in bn_vs_ln else bn_cells[0]
    effect = _effect(key, ln_vs_none, bn_vs_none, bn_vs_ln, unit)
    if ln_best:
        effect += "; LN-LSTM beats the plain LSTM and every BN cell"
    if any(bn_helps.values()):
        effect += "; BN helps over the plain LSTM"
    return CLAIM.verdict(
        all_parts([useless, only_ln]),
        effect,
        bn_vs_ln[key],
        sub=_sub_verdicts((useless, by), (only_ln, by_only), {**useless_tests, **only_tests}, unit),
        notes=failures(df),
        details=json_safe(
            {
                **_details(runs, scores, unit),
                "ln_best": ln_best,
                "bn_helps": bn_helps,
                # LN's family, reported beside it, never its rival (C7b): each minus LN
                "ln_family": {
                    c: difference(scores[c], scores["layer"])
                    for c in in_family_of("layer")
                    if c in scores
                },
            }
        ),
    )


def _fmt(d: dict, unit: str) -> str:
    lo, hi = d["ci"]
    return f"{d['mean']:+.3f} {unit} [{lo:+.3f}, {hi:+.3f}]"


def _details(runs: pd.DataFrame, scores: dict, unit: str) -> dict:
    longs = _scores(runs, "bits_long")
    details = {
        "unit": unit,
        "level": _level(runs),
        "cells": cell_table(runs).to_dict("records"),
        "minus_none": {
            c: difference(scores[c], scores["none"]) for c in _ordered(scores) if c != "none"
        },
        "minus_layer": {
            c: difference(scores[c], scores["layer"]) for c in _ordered(scores) if c != "layer"
        },
        # Longer windows minus trained-length windows, per cell: > 0 means worse when longer.
        "long_minus_trained": {
            c: difference(longs[c], scores[c]) for c in _ordered(scores) if c in longs
        },
    }
    if "none" in longs and "layer" in longs:
        details["long_minus_layer"] = {
            c: difference(longs[c], longs["layer"]) for c in _ordered(longs) if c != "layer"
        }
    for key in (col.SEQ_LEN, col.LONG_EVAL_LEN, col.TOKENS_PER_S):
        if key in runs:
            details[key] = {
                c: float(runs.loc[runs[col.NORM] == c, key].mean()) for c in _ordered(scores)
            }
    return details


def batch_grid(df: pd.DataFrame) -> dict:
    """rnn_small_batch per batch size: each cell's test bpc (mean, 95% CI over seeds) at the
    trained and the longer length, and the paired differences of GRID_PAIRS (reported, not
    tested: unadjusted CIs). {} without runs."""
    runs, unit = scored(df)
    if runs.empty or unit != "bpc":
        return {}
    out = {}
    for batch in sorted(runs[col.BATCH].unique()):
        at = runs[runs[col.BATCH] == batch]
        scores = _scores(at)
        out[str(int(batch))] = {
            "cells": cell_table(at).to_dict("records"),
            "differences": {
                f"{a} - {b}": difference(scores[a], scores[b])
                for a, b in GRID_PAIRS
                if a in scores and b in scores
            },
        }
    return out


def word_level(df: pd.DataFrame) -> dict:
    """rnn_words: each cell's test perplexity (mean, 95% CI over seeds) at the trained and the
    longer length, paired differences from the plain LSTM and from LN (perplexity points,
    unadjusted), and Zaremba et al.'s numbers. {} without runs."""
    runs, unit = scored(df)
    if runs.empty or unit != "bits/word":
        return {}
    runs = runs.assign(ppl=runs[col.TEST_PPL], ppl_long=_optional(runs, col.TEST_PPL_LONG))
    ppl = _scores(runs, "ppl")
    refs = [r for r in ("none", "layer") if r in ppl]
    return {
        "unit": "test perplexity",
        "cells": cell_table(runs, ("ppl", "ppl_long")).to_dict("records"),
        **{
            f"minus_{ref}": {c: difference(ppl[c], ppl[ref]) for c in _ordered(ppl) if c != ref}
            for ref in refs
        },
        "anchor_zaremba_small": ZAREMBA_SMALL_PERPLEXITY,
        "profile": col.first(df, col.PROFILE),
    }


def verdict(tables: dict | pd.DataFrame) -> dict:
    """The C7 verdict from the collected rnn_norm table, or from the claim registry's tables
    (then with the batch grid and the word level in its details; they do not decide it)."""
    if isinstance(tables, pd.DataFrame):
        return verdict_from(tables)
    v = verdict_from(col.table(tables, EXPERIMENT))
    grid, words = batch_grid(col.table(tables, SMALL_BATCH)), word_level(col.table(tables, WORDS))
    extra = {"batch_grid": grid} if grid else {}
    extra |= {"words": words} if words else {}
    if extra:
        v["details"] = {**(v.get("details") or {}), **json_safe(extra)}
    return v


def deciding(tables: dict) -> dict:
    """The runs that decide C7: rnn_norm's (the batch grid and the words are reported only)."""
    return {EXPERIMENT: col.table(tables, EXPERIMENT)}


# --- figure ----------------------------------------------------------------------------------


def epoch_curves(df: pd.DataFrame, results_dir: Path | None, split: str = "valid") -> pd.DataFrame:
    """Per-epoch ``<split>_bpc`` (or bits per word) of finished runs, from the metrics of the
    store in ``results_dir`` (None: no store to read, no curves)."""
    if results_dir is None or df.empty or col.RUN_KEY not in df:
        return pd.DataFrame()
    rows = []
    for cell, seed, key in zip(df[col.NORM], df[col.SEED], df[col.RUN_KEY], strict=True):
        for m in RunRecord(results_dir, EXPERIMENT, key).metrics():
            value = m.get(f"{split}_bpc")
            if value is None and f"{split}_ppl" in m:
                value = math.log2(m[f"{split}_ppl"])
            if value is not None:
                rows.append({"cell": cell, "seed": seed, "epoch": m["epoch"], "bits": value})
    return pd.DataFrame(rows)


def _draw_curves(ax, curves: pd.DataFrame, unit: str) -> None:  # noqa: ANN001
    for cell in _ordered(curves["cell"].unique()):
        c = curves[curves["cell"] == cell]
        stats = [(e, *mean_ci(list(g["bits"]))) for e, g in c.groupby("epoch")]
        epochs, mean, lo, hi = (np.array(v, dtype=float) for v in zip(*stats, strict=True))
        color = cell_color(cell)
        marker = CELL_MARKERS.get(cell, "o")
        style = "--" if cell in ("rms", "batch_shared") else "-"
        ci_line(ax, epochs, mean, lo, hi, color=color, label=cell_label(cell), fmt=marker + style)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation {unit}")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.grid(alpha=0.3)


def _draw_final(ax, cells: pd.DataFrame, unit: str, lengths: tuple[int, int] | None) -> None:
    xs = np.arange(len(cells))
    trained = f"trained length ({lengths[0]})" if lengths else "trained length"
    longer = f"longer windows ({lengths[1]})" if lengths else "longer windows"
    for offset, value, marker, label in (
        (-0.14, "bits", "o", trained),
        (0.14, "bits_long", "s", longer),
    ):
        for x, (_, row) in zip(xs, cells.iterrows(), strict=True):
            if not math.isfinite(row[value]):
                continue
            color = cell_color(row["cell"])
            ax.errorbar(
                x + offset,
                row[value],
                yerr=[[row[value] - row[f"{value}_lo"]], [row[f"{value}_hi"] - row[value]]],
                fmt=marker,
                color=color,
                mfc=color if value == "bits" else "white",
                capsize=3,
                label=label if x == 0 else None,
            )
            if value == "bits":
                ax.annotate(
                    f"{row[value]:.3f}",
                    (x, row[f"{value}_hi"]),
                    textcoords="offset points",
                    xytext=(0, 4),
                    ha="center",
                )
    names = [
        SHORT.get(c, c).replace(" ", "\n") + (f"\n({n} failed)" if n else "")
        for c, n in zip(cells["cell"], cells["failed"], strict=True)
    ]
    ax.set_xticks(xs, names)
    ax.set_ylabel(f"test {unit} (mean, 95% CI)")
    ax.grid(alpha=0.3, axis="y")
    ax.margins(y=0.15)
    handles = [
        plt.Line2D([], [], marker="o", color=NEUTRAL, ls="", label=trained),
        plt.Line2D([], [], marker="s", color=NEUTRAL, mfc="white", ls="", label=longer),
    ]
    ax.legend(handles=handles, loc="best")


def _draw_anchor(ax) -> None:  # noqa: ANN001
    cells = list(COOIJMANS_TEST_BPC)
    anchor_bars(
        ax,
        COOIJMANS_TEST_BPC,
        [cell_color(c) for c in cells],
        ["LSTM", "BN-LSTM\n(per step)"],
        ylabel="test bpc",
        title="Anchor: Cooijmans et al. 2016, PTB\nchars, 1000 units (one run each)",
    )


def draw(tables: dict, out: Path, results_dir: Path | None = None) -> Path:
    """Top row: rnn_norm (what decides); then the batch grid; then the word level and the
    anchor."""
    df = col.table(tables, EXPERIMENT)
    runs, unit = scored(df)
    fig = figure(10.2)
    rows = fig.subfigures(3, 1, height_ratios=(1.1, 1, 1))
    ax_curve, ax_final = rows[0].subplots(1, 2)
    ax_grid, ax_gap = rows[1].subplots(1, 2)
    ax_words, ax_ref = rows[2].subplots(1, 2, width_ratios=(1.5, 1))
    _draw_batch_grid(ax_grid, ax_gap, col.table(tables, SMALL_BATCH))
    _draw_words(ax_words, col.table(tables, WORDS))
    if runs.empty:
        mark_not_run(ax_curve, EXPERIMENT)
        mark_not_run(ax_final, EXPERIMENT)
        subtitle = "not run yet"
    else:
        ok = runs[runs[col.STATUS] == "ok"]
        curves = epoch_curves(ok, results_dir)
        if curves.empty:
            mark_not_run(ax_curve, "per-epoch metrics")
        else:
            _draw_curves(ax_curve, curves, unit)
        cells = cell_table(runs)
        lengths = None
        if {col.SEQ_LEN, col.LONG_EVAL_LEN} <= set(ok.columns) and not ok.empty:
            lengths = (int(ok[col.SEQ_LEN].iloc[0]), int(ok[col.LONG_EVAL_LEN].iloc[0]))
        _draw_final(ax_final, cells, unit, lengths)
        seeds = int(cells["seeds"].max()) if not cells.empty else 0
        profile = col.first(df, col.PROFILE, "?")
        n_train = col.first(ok, col.N_TRAIN_TOKENS)
        level = "characters" if unit == "bpc" else "words"
        size = f", {int(n_train):,} training {level}" if n_train is not None else ""
        ax_curve.set_title(f"Ours: PTB {level}, {profile} profile\n{size.lstrip(', ')}")
        ax_final.set_title(f"Ours: test {unit}, {seeds} seeds")
        v = verdict_from(df)
        subtitle = f"verdict: {v['verdict']}" + _summary_line(v)
        _note_longer_windows(fig, v, unit)
    handles = {}
    for ax in (ax_curve, ax_grid):
        handles |= dict(zip(*reversed(ax.get_legend_handles_labels()), strict=True))
    if handles:
        rows[0].legend(handles.values(), handles.keys(), loc="outside upper center", ncols=3)
    _draw_anchor(ax_ref)
    return save_figure(
        fig,
        out,
        "C7: BN, LN and RMSNorm in an LSTM language model\n" + _wrap(subtitle, 88),
    )


def _draw_grid_cells(ax, grid: dict, batches: list[int]) -> None:  # noqa: ANN001
    """Each cell's test bpc (mean, 95% CI band) against the batch size."""
    for cell in _ordered({c["cell"] for g in grid.values() for c in g["cells"]}):
        rows = [next((c for c in g["cells"] if c["cell"] == cell), None) for g in grid.values()]
        pts = [(b, r) for b, r in zip(batches, rows, strict=True) if r and math.isfinite(r["bits"])]
        if not pts:
            continue
        xs = [b for b, _ in pts]
        ci_line(
            ax,
            xs,
            [r["bits"] for _, r in pts],
            [r["bits_lo"] for _, r in pts],
            [r["bits_hi"] for _, r in pts],
            color=cell_color(cell),
            label=cell_label(cell),
            fmt=CELL_MARKERS.get(cell, "o") + "-",
        )


def _draw_grid_gaps(ax_gap, grid: dict, batches: list[int]) -> None:  # noqa: ANN001
    """BN per step minus LN and minus the plain LSTM (the first two GRID_PAIRS) per batch size;
    a missing CI bound falls back to the mean."""
    for (a, b), style, color in zip(GRID_PAIRS[:2], ("^-", "v--"), ("black", NEUTRAL), strict=True):
        d = [
            (x, g["differences"].get(f"{a} - {b}"))
            for x, g in zip(batches, grid.values(), strict=True)
        ]
        d = [(x, t) for x, t in d if t and t["mean"] is not None]
        if d:
            xs = [x for x, _ in d]
            lo = [t["ci"][0] if t["ci"][0] is not None else t["mean"] for _, t in d]
            hi = [t["ci"][1] if t["ci"][1] is not None else t["mean"] for _, t in d]
            ci_line(ax_gap, xs, [t["mean"] for _, t in d], lo, hi, color=color, fmt=style,
                    label=f"{SHORT[a]} − {SHORT[b]}")  # fmt: skip
    ax_gap.axhline(0, color=REFERENCE, lw=1)


def _label_grid_axes(ax, ax_gap, df: pd.DataFrame, batches: list[int]) -> None:  # noqa: ANN001
    """Log-2 batch axes, legends, labels and titles of the batch grid's two panels."""
    for a in (ax, ax_gap):
        a.set_xscale("log", base=2)
        a.set_xticks(batches, [str(b) for b in batches])
        a.minorticks_off()
        a.set_xlabel("batch size (same steps at every size)")
        a.grid(alpha=0.3)
    ax_gap.legend()
    ax.set_ylabel("test bpc (mean, 95% CI)")
    ax_gap.set_ylabel("paired difference, test bpc\n(> 0: BN worse)")
    profile = col.first(df, col.PROFILE, "?")
    steps = col.first(df, "train.steps")
    budget = f", {int(steps)} steps" if steps is not None else ""
    ax.set_title(f"{SMALL_BATCH}: PTB characters,\n{profile} profile{budget}")
    ax_gap.set_title("BN per step minus LN, minus plain\n(unadjusted CIs; not in the verdict)")


def _draw_batch_grid(ax, ax_gap, df: pd.DataFrame) -> None:  # noqa: ANN001
    """Test bpc per cell against the batch size, and BN per step minus LN / the plain LSTM."""
    grid = batch_grid(df)
    if not grid:
        mark_not_run(ax, SMALL_BATCH)
        mark_not_run(ax_gap, SMALL_BATCH)
        return
    batches = [int(b) for b in grid]
    _draw_grid_cells(ax, grid, batches)
    _draw_grid_gaps(ax_gap, grid, batches)
    _label_grid_axes(ax, ax_gap, df, batches)


def _draw_words(ax, df: pd.DataFrame) -> None:  # noqa: ANN001
    """Test perplexity per cell at both lengths, and Zaremba et al.'s small model."""
    words = word_level(df)
    if not words:
        mark_not_run(ax, WORDS)
    else:
        cells = pd.DataFrame(words["cells"])
        xs = np.arange(len(cells))
        for offset, value, marker in ((-0.14, "ppl", "o"), (0.14, "ppl_long", "s")):
            for x, (_, row) in zip(xs, cells.iterrows(), strict=True):
                if not math.isfinite(row[value]):
                    continue
                color = cell_color(row["cell"])
                err = [[row[value] - row[f"{value}_lo"]], [row[f"{value}_hi"] - row[value]]]
                ax.errorbar(
                    x + offset,
                    row[value],
                    yerr=err,
                    fmt=marker,
                    color=color,
                    mfc=color if value == "ppl" else "white",
                    capsize=3,
                )
                if value == "ppl":
                    ax.annotate(
                        f"{row[value]:.0f}",
                        (x, row[f"{value}_hi"]),
                        textcoords="offset points",
                        xytext=(0, 4),
                        ha="center",
                    )
        ax.set_xticks(xs, [SHORT.get(c, c).replace(" ", "\n") for c in cells["cell"]])
        ax.set_title(
            f"{WORDS}: PTB words, {words['profile']} profile\n"
            "(filled: trained length, open: longer)"
        )
    ax.axhline(ZAREMBA_SMALL_PERPLEXITY["test"], color="black", ls=":", lw=1.2)
    ax.annotate(
        f"Zaremba et al. 2014, small LSTM: {ZAREMBA_SMALL_PERPLEXITY['test']}",
        (0.02, ZAREMBA_SMALL_PERPLEXITY["test"]),
        xycoords=("axes fraction", "data"),
        xytext=(0, 3),
        textcoords="offset points",
    )
    ax.set_ylim(0, None)
    ax.set_ylabel("test perplexity (mean, 95% CI)")
    ax.grid(alpha=0.3, axis="y")


def _summary_line(v: dict) -> str:
    """The verdict's paired differences in a few words, for the figure's title."""
    details = v.get("details") or {}
    unit = details.get("unit", "bpc")
    parts = []
    for cell, ref, what in (
        ("layer", "none", "LN − plain"),
        ("batch_per_step", "none", "BN per-step − plain"),
        ("batch_shared", "none", "BN shared − plain"),
        ("batch_per_step", "layer", "BN per-step − LN"),
    ):
        d = details.get(f"minus_{ref}", {}).get(cell)
        if d and d["mean"] is not None and None not in d["ci"]:
            parts.append(f"{what} {d['mean']:+.3f} [{d['ci'][0]:+.3f}, {d['ci'][1]:+.3f}]")
    if not parts:
        return f" — {v['effect']}"
    seeds = details.get("minus_none", {}).get("layer", {}).get("seeds", "?")
    plural = "" if seeds == 1 else "s"
    return f" — test {unit}, paired over {seeds} seed{plural}: " + "; ".join(parts)


SHORT = {
    "none": "plain",
    "layer": "LN",
    "batch_per_step": "BN per-step",
    "batch_shared": "BN shared",
    "rms": "RMS",
}


def _note_longer_windows(fig, v: dict, unit: str) -> None:  # noqa: ANN001
    """What the longer windows change per cell, as the figure's caption."""
    long = (v.get("details") or {}).get("long_minus_trained", {})
    parts = [
        f"{SHORT.get(c, c)} {d['mean']:+.4f}" for c, d in long.items() if d["mean"] is not None
    ]
    if parts:
        caption(
            fig,
            f"Longer minus trained windows ({unit}, mean over seeds): " + ", ".join(parts)
            + " (state carried across windows: only per-step statistics can make them differ). "
            "Zaremba et al. 2014: a 2×200 LSTM on all of PTB (words).",
        )


def _wrap(text: str, width: int = 150) -> str:
    """Lines of at most about ``width`` characters, broken after '; ' where possible."""
    pieces = text.split("; ")
    lines, line = [], ""
    for i, piece in enumerate(pieces):
        piece += ";" if i < len(pieces) - 1 else ""
        if line and len(line) + len(piece) + 1 > width:
            lines.append(line)
            line = piece
        else:
            line = f"{line} {piece}".strip()
    return "\n".join([*lines, line])


QUOTE = Quote(
    zh=(
        "从理论上讲，类似的BatchNorm操作也可以应用在RNN上，……但是各种实验证明其实这么做没什么用。"
        "……目前在RNN中貌似也只有LayerNorm相对有效。"
    ),
    en=(
        "In theory BatchNorm can be applied to RNNs too, … but experiments show it is of no "
        "use. … In RNNs only LayerNorm seems relatively effective."
    ),
)
DASHBOARD = (
    Grid(
        "Bits per character per norm",
        ("rnn_norm",),
        ("norm.name",),
        bars=("test/bpc", "test/bpc_long"),
        curves=("val/bpc", "train/bpc"),
    ),
)
# How C7 scores a cell (PTB characters), with its family rule: C11's RNN row reads it.
SCORE = Score(
    EXPERIMENT,
    col.TEST_BPC,
    higher_is_better=False,
    unit="bpc",
    what="LSTM LM, PTB characters",
    rows={col.LEVEL: "char"},
    family=FAMILY,
)
ANALYSIS = CLAIM.analysis(
    "BN is useless in RNNs; only LN helps there",
    (EXPERIMENT, SMALL_BATCH, WORDS),
    draw,
    verdict,
    deciding,
    quote=QUOTE,
    dashboard=DASHBOARD,
    score=SCORE,
)
