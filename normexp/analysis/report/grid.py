"""The report's grid section: norm × batch size per model family, and pre vs post per norm.

Not a claim: it decides nothing of record. It draws, from the same collected tables (runs of
record) the claims read,
- ``figures/grid_batch.png``: one panel per family (``FAMILIES``), the family's score (test
  error; an LSTM's bits per character) against the batch size per norm, mean and 95% CI over
  seeds, log2 batch axis;
- ``figures/grid_position.png``: one panel per family of ``norm_position``, post − pre test
  accuracy per norm (pp, paired by seed, 95% CI; > 0: after the activation is better);
and a table of which families support the claims that read these grids (below). A family whose
experiment is not in the store is drawn and tabled as "not run yet"; adding a family is one
entry in ``FAMILIES``.

Support per family. Each cell applies the claim's own statistic to that family's grid, paired
by seed (paired t-test over seeds, the claim's tests of one family Holm-adjusted together, as
the claim's module does; *supported* / *contradicted*: the adjusted test rejects 0 on / against
the claimed side; *inconclusive* otherwise or below 2 seeds). Scores are lower-is-better (error
in pp, bits); BN is the family's batch-statistics norm, the per-sample pick its GN (an LSTM: LN).
- C3 (per norm): post − pre test accuracy > 0; the norms of one family are one Holm family.
- C4a: [BN − pick](smallest batch) − [BN − pick](32, else the largest ≤ 32) > 0; C4b:
  [BN − pick](smallest batch) > 0 (as C4; C4 itself is decided on the CNN).
- C8: LN − BN > 0 and LN − GN > 0, each seed's score averaged over the batch sizes ≥ 32 that
  all three have (C8's own verdict also drops cells that fail the convergence check; this table
  does not).
- C11: the blog's pick vs the best other norm (lowest mean): at the smallest batch (tiny batch
  → GN; an RNN → LN) and averaged over batch ≥ 32 (otherwise → BN; an RNN → LN); rival − pick
  > 0.
- C7 (RNN families only): BN − LN > 0, averaged over every batch size both have.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from normexp.analysis import columns as col
from normexp.analysis import style
from normexp.analysis.verdict import by_seed, conjunction, holm_family
from normexp.analysis.verdict.paired import (
    against_zero,
    batch_cells,
    difference,
    gap,
    pooled_by_seed,
)
from normexp.analysis.verdict.record import select
from normexp.analysis.verdict.spec import ReportSection

Tables = dict[str, pd.DataFrame]
NAME = "grid"
TITLE = "The grid: every family × norm × batch size, and every norm pre vs post"
POSITION_EXPERIMENT = "norm_position"
REFERENCE_BATCH = 32  # C4's reference batch and C8's / C11's "large batch" threshold
NORM_ORDER = (
    "none", "batch", "batch_per_step", "batch_shared", "group", "layer", "instance", "rms"
)
NA = "—"  # a claim that does not apply to a family
LABELS = {"rms": "RMS", "batch_per_step": "BN per step", "batch_shared": "BN shared"}
# Each norm's call (C3's words), above its difference
POSITION_CALLS = {
    "supported": "after\nbetter", "contradicted": "before\nbetter", "inconclusive": "unclear"
}
# Dashed, another marker: the norms whose curves often lie on another's (BN shared on BN per
# step, RMS on LN) stay visible.
FORMATS = {"batch_shared": "v--", "rms": "D--"}


def label(norm: str) -> str:
    return LABELS.get(norm, style.norm_label(norm))


@dataclass(frozen=True)
class Family:
    """One model family's batch grid: where its runs are and how they are scored."""

    name: str  # "CNN"
    experiment: str  # the batch-size grid's experiment
    model: str  # model.name of its runs in that experiment
    metric: str  # summary column, lower is better
    label: str  # the score's axis label
    scale: float  # metric × scale is shown (fractions as %)
    bn: str  # its batch-statistics norm
    pick: str  # the blog's pick at tiny batch (GN; for an RNN, LN)
    rnn: bool = False  # C7 applies; C8 does not (no GN in an LSTM cell)


FAMILIES = (
    Family("CNN", "bn_small_batch", "cnn", col.TEST_ERR, "test error (%)", 100, "batch", "group"),
    Family("MLP", "mlp_small_batch", "mlp", col.TEST_ERR, "test error (%)", 100, "batch", "group"),
    Family(
        "LSTM",
        "rnn_small_batch",  # PTB characters, the same step budget at every batch size
        "lstm",
        col.TEST_BPC,
        "test bits per character",
        1,
        "batch_per_step",
        "layer",
        rnn=True,
    ),
)
POSITION_FAMILIES = ("CNN", "MLP")  # the families norm_position trains (its model.name)
READS = (*dict.fromkeys(f.experiment for f in FAMILIES), POSITION_EXPERIMENT)


def family_runs(tables: Tables, family: Family, experiment: str | None = None) -> pd.DataFrame:
    """The family's runs of record in ``experiment`` (default: its batch grid); empty if none."""
    df = col.table(tables, experiment or family.experiment)
    if not col.has_rows(df, col.MODEL, col.NORM):
        return pd.DataFrame()
    return select(df, {col.MODEL: family.model}).reset_index(drop=True)


def _has_scores(df: pd.DataFrame, metric: str) -> bool:
    return not df.empty and metric in df and col.BATCH in df


# --- statistics ------------------------------------------------------------------------------


def scores(df: pd.DataFrame, family: Family, batches: list[int]) -> dict[str, dict[int, float]]:
    """{norm: {seed: scale × score averaged over ``batches``}}; a seed counts where it has
    every batch size."""
    return {
        str(norm): {
            s: family.scale * v
            for s, v in pooled_by_seed(df, family.metric, col.BATCH, batches, {col.NORM: norm})
            .items()
        }
        for norm in df[col.NORM].unique()
    }


def common_batches(df: pd.DataFrame, norms: list[str], at_least: int = 0) -> list[int]:
    """Batch sizes ≥ ``at_least`` that every one of ``norms`` has finished runs at."""
    ok = df[(df[col.STATUS] == "ok") & (df[col.BATCH] >= at_least)]
    sets = [set(ok.loc[ok[col.NORM] == n, col.BATCH].astype(int)) for n in norms]
    return sorted(set.intersection(*sets)) if sets and all(sets) else []


def _reference(sizes: list[int]) -> int:
    """C4's reference batch: 32, else the largest ≤ 32 above the smallest."""
    small = sizes[0]
    return max([b for b in sizes if small < b <= REFERENCE_BATCH] or sizes[-1:])


def c4_tests(df: pd.DataFrame, family: Family) -> dict[str, dict]:
    """C4a and C4b (one Holm family), BN against the family's pick."""
    sizes = common_batches(df, [family.bn, family.pick])
    if len(sizes) < 2:
        return {}
    small, ref = sizes[0], _reference(sizes)

    def bn_gap(b: int) -> dict[int, float]:
        bn, pick = (scores(df, family, [b]).get(n, {}) for n in (family.bn, family.pick))
        return gap(bn, pick, scale=1)

    tests = {
        "C4a": difference(bn_gap(small), bn_gap(ref)),
        "C4b": against_zero(bn_gap(small)),
    }
    holm_family(tests.values())
    tests["C4a"]["where"] = f"batch {ref} → {small}"
    tests["C4b"]["where"] = f"batch {small}"
    return tests


def c8_tests(df: pd.DataFrame, family: Family) -> dict[str, dict]:
    """LN − BN and LN − GN averaged over the batch sizes ≥ 32 all three have (one Holm family)."""
    norms = ["layer", family.bn, "group"]
    batches = common_batches(df, norms, REFERENCE_BATCH)
    if family.rnn or not batches:
        return {}
    s = scores(df, family, batches)
    tests = {f"LN − {label(n)}": difference(s["layer"], s[n]) for n in norms[1:]}
    holm_family(tests.values())
    return tests


def _pick_vs_best(s: Mapping[str, dict[int, float]], pick: str) -> dict | None:
    """The best other norm's score − the pick's (> 0: the pick is ahead)."""
    rivals = {n: v for n, v in s.items() if n != pick and v}
    if pick not in s or not rivals:
        return None
    best = min(rivals, key=lambda n: np.mean(list(rivals[n].values())))
    return {**difference(rivals[best], s[pick]), "where": f"vs {label(best)}"}


def c11_tests(df: pd.DataFrame, family: Family) -> dict[str, dict]:
    """The blog's pick vs the best other norm, at tiny batch and at batch ≥ 32 (one Holm
    family)."""
    ok = df[df[col.STATUS] == "ok"]
    if ok.empty:
        return {}
    norms = sorted(ok[col.NORM].unique())
    tests = {}
    small = int(ok[col.BATCH].min())
    tiny = _pick_vs_best(scores(ok[ok[col.BATCH] == small], family, [small]), family.pick)
    large_pick = family.pick if family.rnn else family.bn
    large = common_batches(ok, norms, REFERENCE_BATCH)
    otherwise = _pick_vs_best(scores(ok, family, large), large_pick) if large else None
    for key, test in (("tiny", tiny), ("large", otherwise)):
        if test is not None:
            tests[key] = test
    holm_family(tests.values())
    return tests


def c7_test(df: pd.DataFrame, family: Family) -> dict[str, dict]:
    """BN − LN over every batch size both have (> 0: LN better), RNN families only."""
    batches = common_batches(df, [family.bn, "layer"])
    if not family.rnn or not batches:
        return {}
    s = scores(df, family, batches)
    return {"C7": difference(s[family.bn], s["layer"])}


def position_tests(tables: Tables, family: Family) -> dict[str, dict]:
    """{norm: post − pre test accuracy (pp), paired by seed}, Holm over the family's norms."""
    df = family_runs(tables, family, POSITION_EXPERIMENT)
    if df.empty or col.POSITION not in df or col.TEST_ACC not in df:
        return {}
    tests = {}
    for norm in [n for n in NORM_ORDER if n in set(df[col.NORM])]:
        pre, post = (
            by_seed(df, col.TEST_ACC, {col.NORM: norm, col.POSITION: p}) for p in ("pre", "post")
        )
        if set(pre) & set(post):
            tests[norm] = difference(post, pre, scale=100)
    holm_family(tests.values())
    return tests


# --- the support table -----------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    claim: str  # the claim id it belongs to
    tag: str  # the row among its claim's, in a word ("" for a claim's only row)
    label: str  # what the row asks, in words
    cell: Callable[[Tables, Family], str]  # the family's call, or NA / "not run yet"


def _fmt(test: Mapping, unit: str) -> str:
    lo, hi = test["ci"]
    where = f", {test['where']}" if test.get("where") else ""
    return (
        f"{test['decision']} ({test['mean']:+.2g} {unit} [{lo:+.2g}, {hi:+.2g}], "
        f"{test['seeds']} seeds{where})"
    )


def _unit(family: Family) -> str:
    return "pp" if family.scale == 100 else "bits"


def _batch_cell(tests_of: Callable[[pd.DataFrame, Family], dict], key: str | None = None):  # noqa: ANN202
    """A row's cell from one of the batch-grid tests (``key``: one test, else all of them)."""

    def cell(tables: Tables, family: Family) -> str:
        df = family_runs(tables, family)
        if not _has_scores(df, family.metric):
            return "not run yet"
        tests = tests_of(df, family)
        if key is not None:
            tests = {key: tests[key]} if key in tests else {}
        if not tests:
            return "not run yet (cells missing)"
        if len(tests) == 1:
            return _fmt(next(iter(tests.values())), _unit(family))
        decision, by = conjunction(tests)
        return f"{decision} (decided by {by}: {_fmt(tests[by], _unit(family))})"

    return cell


def _applies(applies: Callable[[Family], bool], cell: Callable[[Tables, Family], str]):  # noqa: ANN202
    return lambda tables, family: cell(tables, family) if applies(family) else NA


def _position_cell(norm: str) -> Callable[[Tables, Family], str]:
    def cell(tables: Tables, family: Family) -> str:
        if family.name not in POSITION_FAMILIES:
            return NA
        tests = position_tests(tables, family)
        if not tests:
            return "not run yet"
        return _fmt(tests[norm], "pp") if norm in tests else "not run yet (cells missing)"

    return cell


ROWS = (
    *(
        Row("C3", label(n), f"{label(n)} after the activation beats before it", _position_cell(n))
        for n in ("batch", "layer", "group", "rms")
    ),
    Row(
        "C4",
        "C4a",
        "C4a: BN degrades at very small batches (against the per-sample pick)",
        _batch_cell(c4_tests, "C4a"),
    ),
    Row(
        "C4",
        "C4b",
        "C4b: the per-sample pick (GN; LSTM: LN) wins at the smallest batch",
        _batch_cell(c4_tests, "C4b"),
    ),
    Row("C7", "", "in an RNN, LN beats BN", _applies(lambda f: f.rnn, _batch_cell(c7_test))),
    Row(
        "C8",
        "",
        "LN is worse than BN and GN at batch ≥ 32",
        _applies(lambda f: not f.rnn, _batch_cell(c8_tests)),
    ),
    Row("C11", "tiny batch:", "tiny batch → GN (RNN → LN)", _batch_cell(c11_tests, "tiny")),
    Row("C11", "otherwise:", "otherwise → BN (RNN → LN)", _batch_cell(c11_tests, "large")),
)


def support_table(tables: Tables, rows: tuple[Row, ...] = ROWS) -> list[dict]:
    """One dict per row (default: every row): claim, label, and the call in each family (by
    name)."""
    return [
        {"claim": r.claim, "label": r.label, **{f.name: r.cell(tables, f) for f in FAMILIES}}
        for r in rows
    ]


def families_line(tables: Tables, claim: str) -> str:
    """'CNN: C4a supported, C4b contradicted; MLP: not run yet' for one claim's rows ('' for a
    claim without rows), for the claim's own verdict."""
    own = tuple(t for t in ROWS if t.claim == claim)  # only these: each cell is paired tests
    rows = list(zip(support_table(tables, own), own, strict=True))
    parts = []
    for f in FAMILIES:
        calls = [(t.tag, r[f.name].split(" (")[0]) for r, t in rows if r[f.name] != NA]
        if not calls:
            continue
        if all(c == "not run yet" for _, c in calls):
            parts.append(f"{f.name}: not run yet")
        else:
            parts.append(f"{f.name}: " + ", ".join(f"{tag} {c}".strip() for tag, c in calls))
    if not parts:
        return ""
    return f"{'; '.join(parts)} (the report's grid section: the claim's statistic per family)"


def markdown(tables: Tables) -> list[str]:
    """The section's text: what each family's grid holds, and the support table."""
    lines = [
        "| family | batch grid | runs of record | pre vs post (`norm_position`) |",
        "|---|---|---|---|",
    ]
    for f in FAMILIES:
        runs = family_runs(tables, f)
        pos = family_runs(tables, f, POSITION_EXPERIMENT) if f.name in POSITION_FAMILIES else None
        lines.append(
            f"| {f.name} | `{f.experiment}` | {len(runs) if not runs.empty else 'not run yet'} | "
            + (NA if pos is None else (f"{len(pos)} runs" if not pos.empty else "not run yet"))
            + " |"
        )
    lines += [
        "",
        "Which families support the claims that read these grids: each cell applies the claim's "
        "statistic to that family's grid (paired by seed; Holm within the claim's tests of one "
        "family; estimate and 95% CI; normexp/analysis/report/grid.py says how each is computed). "
        "Not of record: each claim is decided in its own section.",
        "",
        "| claim | statement | " + " | ".join(f.name for f in FAMILIES) + " |",
        "|---|---|" + "---|" * len(FAMILIES),
    ]
    for r in support_table(tables):
        cells = [r["claim"], r["label"], *(r[f.name] for f in FAMILIES)]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return lines


# --- figures ---------------------------------------------------------------------------------


def _norms_in(names: object) -> list[str]:
    names = set(names)
    return [n for n in NORM_ORDER if n in names] + sorted(names - set(NORM_ORDER))


def draw_batch(tables: Tables, out: Path) -> Path:
    fig = style.figure(3.9)
    head, body = fig.subfigures(2, 1, height_ratios=(0.55, 3.3))
    axes = body.subplots(1, len(FAMILIES), squeeze=False)[0]
    legend: dict[str, object] = {}
    for ax, f in zip(axes, FAMILIES, strict=True):
        df = family_runs(tables, f)
        if not _has_scores(df, f.metric):
            style.mark_not_run(ax, f"{f.name} ({f.experiment})")
            ax.set_title(f.name)
            continue
        cells = batch_cells(df, f.metric, "v", scale=f.scale)
        for norm in _norms_in(cells["norm"]):
            c = cells[cells["norm"] == norm].sort_values("batch_size")
            style.ci_line(ax, c["batch_size"], c["v"], c["lo"], c["hi"],
                          color=style.norm_color(norm), label=label(norm),
                          fmt=FORMATS.get(norm, "o-"))  # fmt: skip
        seeds = int(cells["seeds"].max())
        ax.set_title(f"{f.name} ({f.experiment}),\n{seeds} seeds", loc="center")
        ax.set_ylabel(f.label)
        style.log2_axis(ax, sorted(int(b) for b in cells["batch_size"].unique()), "batch size",
                        legend=False)  # fmt: skip
        legend |= dict(zip(*reversed(ax.get_legend_handles_labels()), strict=True))
    head.legend(legend.values(), legend.keys(), loc="center", ncols=min(len(legend), 4))
    return style.save_figure(fig, out, "Score against batch size per norm and model family "
                             "(mean, 95% CI over seeds)")  # fmt: skip


def draw_position(tables: Tables, out: Path) -> Path:
    families = [f for f in FAMILIES if f.name in POSITION_FAMILIES]
    fig, axes = style.panels(len(families), 3.4)
    for ax, f in zip(np.atleast_1d(axes), families, strict=True):
        tests = position_tests(tables, f)
        if not tests:
            style.mark_not_run(ax, f"{f.name} ({POSITION_EXPERIMENT})")
            ax.set_title(f.name)
            continue
        for x, (norm, t) in enumerate(tests.items()):
            lo, hi = t["ci"]
            ax.errorbar(
                x,
                t["mean"],
                yerr=[[t["mean"] - lo], [hi - t["mean"]]],
                fmt="s",
                color=style.norm_color(norm),
                capsize=3,
            )
            ax.annotate(POSITION_CALLS.get(t["decision"], t["decision"]), (x, hi), ha="center",
                        textcoords="offset points", xytext=(0, 4))  # fmt: skip
        ax.axhline(0, color=style.REFERENCE, lw=1)
        ax.set_xticks(range(len(tests)), [label(n) for n in tests])
        ax.set_xlim(-0.6, len(tests) - 0.4)
        ax.margins(y=0.15)
        ax.set_ylabel("post − pre test accuracy (pp)")
        ax.set_title(f"{f.name}: paired by seed, 95% CI")
        ax.grid(alpha=0.3, axis="y")
    return style.save_figure(
        fig, out, "Before vs after the activation, per norm and family (> 0: after is better)"
    )


def draw(tables: Tables, figures_dir: Path) -> list[Path]:
    """The section's figures, into ``figures_dir``."""
    return [
        draw_batch(tables, figures_dir / "grid_batch.png"),
        draw_position(tables, figures_dir / "grid_position.png"),
    ]


SECTION = ReportSection(NAME, TITLE, READS, draw, markdown, families_line)
