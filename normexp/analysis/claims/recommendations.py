"""C11 recommendations: the blog's summary — RNN → LN; generation → IN; tiny batch → GN;
otherwise BN — checked against the winners of our own experiments. No runs of its own.

Each scenario reads exactly what decides the claim it rests on (its *source*), through the claim
registry (normexp/analysis/verdict/spec.py: never the source's module), so that it follows its
source when that changes (finished runs only, seeds paired):
- tiny batch (source C4, bn_small_batch): C4's architecture of record (the ResNet's cells,
  bn_small_batch_resnet, when they have run and its baseline shows the gap, else the CNN's:
  normexp/analysis/verdict/architecture.py), at its smallest batch size, test error (lower is
  better). The ResNet runs fewer norms (BN and GN at batch 2): the table names the candidates;
- otherwise (batch ≥ 32; source C8, ln_in_cnn): C8's architecture of record, at the batch sizes
  of C8's deciding cells (≥ 32 where LN, BN and GN all pass the convergence check; without one,
  every batch size ≥ 32), each seed's test error averaged over those every candidate has;
- image generation (source C6, bn_generation): C6's deciding task and how C6 scores it (its
  ``score``: today the Gram-loss stylization, bn_generation_gram, held-out test loss, lower is
  better, shown ×100), averaged per seed over the batch sizes every norm has;
- RNN (source C7, rnn_norm): how C7 scores a cell (PTB characters, test bits per character,
  lower is better; rows sharing a seed averaged) and C7's family rule: RMSNorm is counted in
  LN's family, reported beside LN, never its rival, as C7b counts it.
Candidates are every norm with finished runs in the scenario. The winner is the best mean. Each
scenario's regime and LR check are those of its source's deciding runs (``sub_deciding``): a row
reads "inconclusive (under-trained)" when its source's deciding cells are not all trained.

Verdict rule. One sub-claim per scenario (C11 tiny batch, otherwise, image generation, RNN).
Per scenario, the blog's pick is compared with the best other candidate outside the pick's
family (the best mean), paired by seed, a paired t-test oriented so that > 0 favours the blog's
pick; the four scenarios' tests are one family, Holm-adjusted. A scenario *matches* (sub-claim
supported) if the adjusted test rejects 0 with the blog's pick ahead, *differs* (contradicted)
if it rejects with the rival ahead, *tie* (inconclusive) otherwise; a scenario without runs of
the blog's pick and one rival is *not run yet*. The claim is *supported* if every scenario
matches, *contradicted* if any differs, *inconclusive* otherwise (ties, or scenarios not run
yet); "not run yet" when no scenario has runs.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from normexp.analysis import columns as col
from normexp.analysis.claims import analysis_named
from normexp.analysis.columns import Tables
from normexp.analysis.stats import mean_ci
from normexp.analysis.style import REFERENCE, figure, norm_color, norm_label, save_figure
from normexp.analysis.verdict import architecture, holm_family, sub_verdict
from normexp.analysis.verdict.paired import difference, json_safe, pooled_by_seed
from normexp.analysis.verdict.record import select
from normexp.analysis.verdict.regime import CONVERGED, regime_of_runs, regime_short
from normexp.analysis.verdict.spec import Claim, Quote

NAME = "recommendations"
ANCHOR = "the blog's own summary: RNN → LN; generation → IN; tiny batch → GN; otherwise BN"
CLAIM = Claim.from_doc("C11", NAME, ANCHOR, __doc__)
CALLS = {
    "supported": "matches",
    "contradicted": "differs",
    "inconclusive": "tie",
    "not run yet": "not run yet",
}
# The sources, by their names in the registry.
C4, C6, C7, C8 = "bn_small_batch", "bn_generation", "rnn_norm", "ln_in_cnn"


@dataclass(frozen=True)
class Reading:
    """What one scenario reads from its source claim."""

    runs: pd.DataFrame  # the candidates' finished runs it scores
    metric: str  # a summary column
    higher_is_better: bool
    unit: str
    scale: float  # metric × scale is shown (fractions as %)
    over: str | None  # per seed, averaged over this column's levels that every candidate has
    folder: str  # the store folder the runs come from
    where: str  # what is read, in words
    deciding: Tables  # the runs of record that decide the source (its regime and LR check)
    architecture: str | None = None  # the architecture's name where the source runs two
    family: Mapping[str, str] = field(default_factory=dict)  # norm -> the norm whose family


@dataclass(frozen=True)
class Scenario:
    name: str
    source: str  # the claim it rests on (its name in the registry)
    blog_pick: str
    read: Callable[[Tables], Reading]


def _finished(df: pd.DataFrame, metric: str, *columns: str) -> pd.DataFrame:
    """Finished runs with these config columns; none when ``metric`` was not recorded."""
    if not col.has_rows(df, col.NORM, *columns) or metric not in df:
        return pd.DataFrame()
    return df[df[col.STATUS] == "ok"]


def _common_levels(df: pd.DataFrame, column: str) -> list:
    """Levels of ``column`` that every norm of ``df`` has."""
    common = None
    for _, rows in df.groupby(col.NORM):
        have = set(rows[column])
        common = have if common is None else common & have
    return sorted(common or [])


def _pooled(df: pd.DataFrame, value: str, over: str | None) -> dict[str, dict[int, float]]:
    """{norm: {seed: value averaged over the levels of ``over`` that every norm has}}."""
    if df.empty:
        return {}
    if over is None or over not in df:
        return {
            str(norm): {int(s): float(v) for s, v in rows.groupby(col.SEED)[value].mean().items()}
            for norm, rows in df.groupby(col.NORM)
        }
    levels = _common_levels(df, over)
    return {
        str(norm): pooled_by_seed(df, value, over, levels, {col.NORM: norm})
        for norm in df[col.NORM].unique()
    }


def _of_record(deciding: Tables) -> Tables:
    """Deciding tables as a verdict of record reads them: runs of record, the baseline's cells
    left out (they choose the architecture, not the comparison)."""
    return {k: col.table(deciding, k) for k in deciding if not architecture.is_baseline(k)}


def source_deciding(name: str, tables: Tables) -> Tables:
    """The runs of record that decide the claim ``name``, as its verdict of record reads them."""
    source = analysis_named(name)
    return _of_record(source.deciding(tables) if source.deciding else tables)


def _test_error(name: str, tables: Tables) -> tuple[pd.DataFrame, dict, Tables]:
    """Claim ``name``'s finished runs on its architecture of record (architecture.py), the
    Reading fields they share (test error, pp, lower is better; the claim's deciding cells
    there) and the deciding tables themselves."""
    per = analysis_named(name).per_architecture
    per_arch = per.architectures(tables)
    model, _ = architecture.of_record(per_arch, per.experiment, per.verdict_of, per.deciding_of)
    df = col.table(per_arch[model], per.experiment)
    cells = architecture.deciding_on(model, per_arch[model], per.deciding_of)
    shared = {
        "metric": col.TEST_ERR,
        "higher_is_better": False,
        "unit": "pp of error",
        "scale": 100,
        "folder": per.resnet if model == "resnet" else per.experiment,
        "deciding": _of_record(cells),
        "architecture": architecture.name(model, df),
    }
    return _finished(df, col.TEST_ERR, col.BATCH), shared, cells


def tiny_batch(tables: Tables) -> Reading:
    """C4's architecture of record at its smallest batch size."""
    df, shared, _ = _test_error(C4, tables)
    smallest = int(df[col.BATCH].min()) if not df.empty else None
    runs = df[df[col.BATCH] == smallest] if smallest is not None else df
    return Reading(runs, over=None, where=f"its smallest batch, {smallest}", **shared)


def otherwise(tables: Tables) -> Reading:
    """C8's architecture of record at the batch sizes of C8's deciding cells."""
    df, shared, cells = _test_error(C8, tables)
    batches = sorted({int(b) for d in cells.values() if col.BATCH in d for b in d[col.BATCH]})
    runs = df[df[col.BATCH].isin(batches)] if not df.empty else df
    sizes = ", ".join(map(str, batches)) or "none"
    return Reading(runs, over=col.BATCH, where=f"C8's batch sizes, {sizes}", **shared)


def scored_by(name: str) -> Callable[[Tables], Reading]:
    """A reader of the runs that decide claim ``name``, scored as that claim scores them (its
    registry ``score``: experiment, rows, metric, family rule)."""

    def read(tables: Tables) -> Reading:
        score = analysis_named(name).score
        df = col.table(tables, score.experiment)
        rows = {c: v for c, v in score.rows.items() if c in df}  # older runs lack a column
        df = _finished(select(df, rows) if rows else df, score.metric)
        over = col.BATCH if col.BATCH in df else None
        return Reading(
            df,
            score.metric,
            score.higher_is_better,
            score.unit,
            score.scale,
            over,
            folder=score.experiment,
            where=score.what,
            deciding=source_deciding(name, tables),
            family=dict(score.family),
        )

    return read


SCENARIOS = (
    Scenario("tiny batch", C4, "group", tiny_batch),
    Scenario("otherwise (batch ≥ 32)", C8, "batch", otherwise),
    Scenario("image generation", C6, "instance", scored_by(C6)),
    Scenario("RNN", C7, "layer", scored_by(C7)),
)


def family_text(family: Mapping[str, str], pick: str) -> str:
    """'RMS in LN's family' for the pick's family (its source's rule), '' without one."""
    members = [n for n, head in family.items() if head == pick]
    if not members:
        return ""
    return f"{', '.join(norm_label(n) for n in members)} in {norm_label(pick)}'s family"


def judge(scenario: Scenario, reading: Reading) -> dict:
    """Winner, margin over the runner-up and the blog's pick vs its best rival (outside its
    family), for one scenario."""
    scores = {n: s for n, s in _pooled(reading.runs, reading.metric, reading.over).items() if s}
    row = {
        "scenario": scenario.name,
        "source": scenario.source,
        "experiment": reading.folder,
        "where": reading.where,
        "blog_pick": scenario.blog_pick,
        "unit": reading.unit,
        "call": "not run yet",
    }
    if not scores:
        return row
    sign = 1 if reading.higher_is_better else -1
    means = {n: mean_ci(list(s.values()))[0] for n, s in scores.items()}
    ranked = sorted(means, key=lambda n: -sign * means[n])
    row["means"] = {n: reading.scale * means[n] for n in ranked}
    row["winner"] = ranked[0]

    def better(a: str, b: str) -> dict:  # > 0: a better than b, in the shown unit
        good = {n: {s: sign * v for s, v in scores[n].items()} for n in (a, b)}
        return difference(good[a], good[b], reading.scale)

    if len(ranked) > 1:
        row["runner_up"] = ranked[1]
        row["margin"] = better(ranked[0], ranked[1])
    pick = scenario.blog_pick
    rivals = [n for n in ranked if n != pick and reading.family.get(n) != pick]
    if pick in scores and rivals:
        row["rival"] = rivals[0]
        row["blog_vs_rival"] = better(pick, rivals[0])
    return row


def readings(tables: Tables) -> list[Reading]:
    """What each scenario reads from its source, in SCENARIOS' order."""
    return [s.read(tables) for s in SCENARIOS]


def judge_all(tables: Tables) -> list[dict]:
    """Every scenario judged, the blog-vs-rival tests Holm-adjusted as one family; each with
    its source's regime (from the source's deciding runs)."""
    rows = []
    for s, reading in zip(SCENARIOS, readings(tables), strict=True):
        row = judge(s, reading)
        arch = reading.architecture
        where = f"{arch}, {reading.where}" if arch else reading.where
        if "means" in row:  # the candidates compared
            where += f" ({', '.join(norm_label(n) for n in sorted(row['means']))}"
            family = family_text(reading.family, s.blog_pick)
            where += f"; {family}, not a rival)" if family else ")"
        regime = regime_of_runs(tables, reading.deciding)
        rows.append({**row, "where": where, "architecture": arch, "regime": regime})
    tested = [r for r in rows if r.get("blog_vs_rival", {}).get("seeds")]
    holm_family(r["blog_vs_rival"] for r in tested)
    for r in tested:
        r["call"] = CALLS[r["blog_vs_rival"]["decision"]]
    return rows


def _ci_text(d: dict | None, unit: str) -> str:
    if not d or not d["seeds"]:
        return "–"
    lo, hi = d["ci"]
    return f"{d['mean']:+.2f} [{lo:+.2f}, {hi:+.2f}] {unit}"


def _call_text(row: dict) -> str:
    """The call, and at a fixed budget that it is its call at that budget (the verdict of
    record withholds it: under-trained)."""
    if row["call"] == "not run yet" or row["regime"]["kind"] == CONVERGED:
        return row["call"]
    return f"{row['call']} at this budget (under-trained)"


HEADER = (
    "scenario",
    "read from",
    "blog says",
    "our winner",
    "margin over runner-up",
    "blog's pick vs best rival",
    "regime (its source's)",
    "call",
)


def table_cells(rows: list[dict]) -> list[list[str]]:
    """One row of text per scenario, columns as in ``HEADER``: the figure's and the report's."""
    cells = []
    for r in rows:
        winner = norm_label(r["winner"]) if "winner" in r else "not run yet"
        runner = f" (vs {norm_label(r['runner_up'])})" if "runner_up" in r else ""
        rival = f" (vs {norm_label(r['rival'])})" if "rival" in r else ""
        cells.append(
            [
                r["scenario"],
                f"{r['experiment']}: {r['where']}",
                norm_label(r["blog_pick"]),
                winner,
                _ci_text(r.get("margin"), r["unit"]) + runner,
                _ci_text(r.get("blog_vs_rival"), r["unit"]) + rival,
                regime_short(r["regime"]),
                _call_text(r),
            ]
        )
    return cells


def markdown_table(tables: dict) -> list[str]:
    """The scenario table in markdown, for the report (the figure draws the same cells)."""
    lines = [
        "Margins: mean and 95% CI over seeds, > 0 favours the first named.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "---|" * len(HEADER),
    ]
    for row in table_cells(judge_all(tables)):
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    return lines


def draw(tables: dict, out: Path, results_dir: Path | None = None) -> Path:
    """Per scenario, the blog's pick against its best rival (> 0: the pick better; mean and 95%
    CI over seeds, in the scenario's unit: a panel per unit), the pick's colour; the table is
    the report's."""
    rows = judge_all(tables)
    units = list(dict.fromkeys(r["unit"] for r in rows if r.get("blog_vs_rival")))
    units = units or [""]
    by_unit = {u: [r for r in rows if r["unit"] == u] for u in units}
    left = [r for r in rows if r["unit"] not in units]  # not run: shown in the first panel
    by_unit[units[0]] = by_unit[units[0]] + left
    heights = [0.6 + 0.45 * len(by_unit[u]) for u in units]
    fig = figure(sum(heights) + 0.8)
    axes = fig.subplots(len(units), 1, height_ratios=heights, squeeze=False)[:, 0]
    for ax, unit in zip(axes, units, strict=True):
        shown = by_unit[unit]
        for y, r in enumerate(shown):
            d = r.get("blog_vs_rival")
            if d and d["seeds"]:
                lo, hi = d["ci"]
                ax.errorbar(d["mean"], y, xerr=[[d["mean"] - lo], [hi - d["mean"]]], fmt="o",
                            color=norm_color(r["blog_pick"]), capsize=3)  # fmt: skip
                ax.annotate(r["call"], (hi, y), xytext=(5, 0), textcoords="offset points",
                            va="center")  # fmt: skip
            else:
                ax.annotate(r["call"], (0, y), xytext=(5, 0), textcoords="offset points",
                            va="center", color=REFERENCE)  # fmt: skip
        labels = [
            f"{r['scenario']}: {norm_label(r['blog_pick'])}"
            + (f" vs {norm_label(r['rival'])}" if "rival" in r else "")
            for r in shown
        ]
        ax.set_yticks(range(len(shown)), labels)
        ax.set_ylim(len(shown) - 0.5, -0.5)
        ax.axvline(0, color=REFERENCE, lw=1)
        ax.margins(x=0.25)
        ax.set_xlabel(f"the blog's pick − its best rival, {unit or 'score'} (> 0: the pick better)")
        ax.grid(alpha=0.3, axis="x")
    return save_figure(
        fig, out, "C11: the blog's recommendations against our winners (mean, 95% CI over seeds)"
    )


def verdict(tables: dict) -> dict:
    rows = judge_all(tables)
    calls = [r["call"] for r in rows]
    if all(c == "not run yet" for c in calls):
        sources = ", ".join(dict.fromkeys(r["experiment"] for r in rows))
        return CLAIM.not_run_yet(f"no scenario has runs yet ({sources})")
    if "differs" in calls:
        result = "contradicted"
    elif all(c == "matches" for c in calls):
        result = "supported"
    else:
        result = "inconclusive"
    effect = "; ".join(
        f"{r['scenario']}: blog {norm_label(r['blog_pick'])}, ours "
        f"{norm_label(r['winner']) if 'winner' in r else '–'} ({r['call']})"
        for r in rows
    )
    matches = sum(c == "matches" for c in calls)
    verdicts = {v: k for k, v in CALLS.items()}
    sub = [
        sub_verdict(
            f"C11 {r['scenario']}",
            f"{r['scenario']} → {norm_label(r['blog_pick'])}",
            verdicts[r["call"]],
            (f"{r['architecture']}: " if r.get("architecture") else "")
            + f"{norm_label(r['blog_pick'])} vs {norm_label(r['rival'])}, {r['unit']} "
            "(> 0: the blog's pick better)"
            if "rival" in r
            else "–",
            r.get("blog_vs_rival"),
        )
        for r in rows
    ]
    return CLAIM.verdict(
        result,
        effect,
        sub=sub,
        estimate=float(matches),
        ci_note=f"the estimate counts scenarios that match, of {len(rows)}; "
        "each scenario's CI is in the details",
        notes="scenarios not run yet: "  # a sentence: the report appends its sources' notes
        + (", ".join(r["scenario"] for r in rows if r["call"] == "not run yet") or "none")
        + ".",
        details=json_safe({"scenarios": rows}),
    )


def sub_deciding(tables: Tables) -> dict[str, Tables]:
    """Per scenario's sub-claim, the runs that decide its source: its regime and LR check are
    theirs (normexp/analysis/figures.py)."""
    return {f"C11 {s.name}": r.deciding for s, r in zip(SCENARIOS, readings(tables), strict=True)}


def deciding(tables: Tables) -> Tables:
    """Every scenario's source's deciding runs (their seeds of record hold C11 back; the other
    architecture's do not), one table per name."""
    merged: dict[str, list[pd.DataFrame]] = {}
    for runs in sub_deciding(tables).values():
        for name, df in runs.items():
            merged.setdefault(name, []).append(df)
    out = {}
    for name, frames in merged.items():
        df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        out[name] = df.drop_duplicates(col.RUN_KEY) if col.RUN_KEY in df else df
    return out


QUOTE = Quote(
    zh=(
        "对于RNN的神经网络结构来说，目前只有LayerNorm是相对有效的；如果是GAN等图片生成或图片内容改写类型"
        "的任务，可以优先尝试InstanceNorm；如果使用场景约束BatchSize必须设置很小，无疑此时考虑使用"
        "GroupNorm；而其它任务情形应该优先考虑使用BatchNorm。"
    ),
    en=(
        "For RNNs only LayerNorm is relatively effective; for GANs and image generation or "
        "rewriting, try InstanceNorm first; when the batch must be very small, use GroupNorm; "
        "otherwise prefer BatchNorm."
    ),
)
ANALYSIS = CLAIM.analysis(
    "RNN → LN; generation → IN; tiny batch → GN; otherwise BN",
    (),  # the registry adds its sources' deciding experiments (reads_from)
    draw,
    verdict,
    deciding,
    quote=QUOTE,
    table=markdown_table,
    reads_from=tuple(dict.fromkeys(s.source for s in SCENARIOS)),
    sub_deciding=sub_deciding,
)
