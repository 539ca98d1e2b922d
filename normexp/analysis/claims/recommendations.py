"""C11 recommendations: the blog's summary — RNN → LN; generation → IN; tiny batch → GN;
otherwise BN — checked against the winners of our own experiments. No runs of its own.

Scenarios and where they are read from (finished runs only, seeds paired):
- tiny batch: bn_small_batch at its smallest batch size, test error (lower is better);
- otherwise: bn_small_batch at batch ≥ 32, each seed's test error averaged over the batch sizes
  ≥ 32 that every norm has (as C8 does);
  both on the architecture of record of C4 (normexp/analysis/verdict/architecture.py: the
  ResNet's cells,
  bn_small_batch_resnet, when they have run and its baseline shows the gap, else the CNN's), so
  that C11 and C4b read the same runs. The ResNet runs fewer norms (BN and GN at batch 2; BN,
  GN, LN and none at 32, no IN): the table names the candidates of each scenario;
- image generation: bn_generation, test PSNR (higher is better), averaged per seed over the
  batch sizes every norm has;
- RNN: rnn_norm, character level, test bits per character (lower is better), one value per
  seed and cell (``norm.name``; LN-LSTM is ``layer``; rows sharing a seed are averaged).
Candidates are every norm with finished runs in the scenario. The winner is the best mean.

Verdict rule. One sub-claim per scenario (C11 tiny batch, otherwise, image generation, RNN).
Per scenario, the blog's pick is compared with the best other candidate (the best mean), paired
by seed, a paired t-test oriented so that > 0 favours the blog's pick; the four scenarios' tests
are one family, Holm-adjusted. A scenario *matches* (sub-claim supported) if the adjusted test
rejects 0 with the blog's pick ahead, *differs* (contradicted) if it rejects with the rival
ahead, *tie* (inconclusive) otherwise; a scenario without runs of the blog's pick and one rival
is *not run yet*. The claim is *supported* if every scenario matches, *contradicted* if any
differs, *inconclusive* otherwise (ties, or scenarios not run yet); "not run yet" when no
scenario has runs.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from normexp.analysis import columns as col
from normexp.analysis.claims import analysis_named
from normexp.analysis.stats import mean_ci
from normexp.analysis.style import norm_label, save_figure
from normexp.analysis.verdict import architecture, holm_family, sub_verdict
from normexp.analysis.verdict.paired import difference, json_safe, pooled_by_seed
from normexp.analysis.verdict.spec import Claim, Quote

NAME = "recommendations"
LARGE_BATCH = 32
ANCHOR = "the blog's own summary: RNN → LN; generation → IN; tiny batch → GN; otherwise BN"
CLAIM = Claim.from_doc("C11", NAME, ANCHOR, __doc__)
CALLS = {
    "supported": "matches",
    "contradicted": "differs",
    "inconclusive": "tie",
    "not run yet": "not run yet",
}


@dataclass(frozen=True)
class Scenario:
    name: str
    experiment: str
    blog_pick: str
    metric: str  # summary column
    unit: str
    scale: float  # metric × scale is shown (fractions as %)
    higher_is_better: bool
    scores: Callable[[pd.DataFrame], dict[str, dict[int, float]]]  # {norm: {seed: value}}
    where: str  # what part of the experiment is read, for the table


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


def tiny_batch_scores(df: pd.DataFrame) -> dict[str, dict[int, float]]:
    df = _finished(df, col.TEST_ERR, col.BATCH)
    if df.empty:
        return {}
    smallest = df[col.BATCH].min()
    return _pooled(df[df[col.BATCH] == smallest], col.TEST_ERR, None)


def large_batch_scores(df: pd.DataFrame) -> dict[str, dict[int, float]]:
    df = _finished(df, col.TEST_ERR, col.BATCH)
    if df.empty:
        return {}
    return _pooled(df[df[col.BATCH] >= LARGE_BATCH], col.TEST_ERR, col.BATCH)


def generation_scores(df: pd.DataFrame) -> dict[str, dict[int, float]]:
    return _pooled(_finished(df, col.TEST_PSNR, col.BATCH), col.TEST_PSNR, col.BATCH)


def rnn_scores(df: pd.DataFrame) -> dict[str, dict[int, float]]:
    df = _finished(df, col.TEST_BPC)
    if col.LEVEL in df:  # bits per character: the character-level runs
        df = df[df[col.LEVEL] == "char"]
    return _pooled(df, col.TEST_BPC, None)


C4 = "bn_small_batch"  # C4's analysis and its experiment: its scenarios read C4's runs of record
C4_RESNET = "bn_small_batch_resnet"  # C4's ResNet cells (their own store folder)
SCENARIOS = (
    Scenario(
        "tiny batch",
        "bn_small_batch",
        "group",
        col.TEST_ERR,
        "pp of error",
        100,
        False,
        tiny_batch_scores,
        "smallest batch",
    ),
    Scenario(
        "otherwise (batch ≥ 32)",
        "bn_small_batch",
        "batch",
        col.TEST_ERR,
        "pp of error",
        100,
        False,
        large_batch_scores,
        f"batch ≥ {LARGE_BATCH}",
    ),
    Scenario(
        "image generation",
        "bn_generation",
        "instance",
        col.TEST_PSNR,
        "dB of PSNR",
        1,
        True,
        generation_scores,
        "image-to-image, CIFAR-10",
    ),
    Scenario(
        "RNN",
        "rnn_norm",
        "layer",
        col.TEST_BPC,
        "bpc",
        1,
        False,
        rnn_scores,
        "LSTM LM, PTB chars",
    ),
)


def judge(scenario: Scenario, df: pd.DataFrame) -> dict:
    """Winner, margin over the runner-up and the blog's pick vs its best rival, for one scenario."""
    scores = {n: s for n, s in scenario.scores(df).items() if s}
    row = {
        "scenario": scenario.name,
        "experiment": scenario.experiment,
        "where": scenario.where,
        "blog_pick": scenario.blog_pick,
        "unit": scenario.unit,
        "call": "not run yet",
    }
    if not scores:
        return row
    sign = 1 if scenario.higher_is_better else -1
    means = {n: mean_ci(list(s.values()))[0] for n, s in scores.items()}
    ranked = sorted(means, key=lambda n: -sign * means[n])
    row["means"] = {n: scenario.scale * means[n] for n in ranked}
    row["winner"] = ranked[0]

    def better(a: str, b: str) -> dict:  # > 0: a better than b, in the shown unit
        good = {n: {s: sign * v for s, v in scores[n].items()} for n in (a, b)}
        return difference(good[a], good[b], scenario.scale)

    if len(ranked) > 1:
        row["runner_up"] = ranked[1]
        row["margin"] = better(ranked[0], ranked[1])
    rivals = [n for n in ranked if n != scenario.blog_pick]
    if scenario.blog_pick in scores and rivals:
        row["rival"] = rivals[0]
        row["blog_vs_rival"] = better(scenario.blog_pick, rivals[0])
    return row


Source = tuple[pd.DataFrame, str, str | None]  # runs, their store folder, architecture or None


def sources(tables: dict) -> list[Source]:
    """Each scenario's runs, the store folder they come from and the architecture's name (None
    where one architecture runs): bn_small_batch's scenarios on C4's architecture of record,
    chosen once for both."""
    c4 = c4_runs(tables)
    return [
        c4 if s.experiment == C4
        else (col.table(tables, s.experiment), s.experiment, None)
        for s in SCENARIOS
    ]


def c4_runs(tables: dict) -> Source:
    """bn_small_batch's runs on C4's architecture of record (architecture.py)."""
    c4 = analysis_named(C4).per_architecture
    per_arch = c4.architectures(tables)
    model, _ = architecture.of_record(per_arch, C4, c4.verdict_of, c4.deciding_of)
    df = col.table(per_arch[model], C4)
    folder = c4.resnet if model == "resnet" else C4
    return df, folder, architecture.name(model, df)


def judge_all(tables: dict) -> list[dict]:
    """Every scenario judged, the blog-vs-rival tests Holm-adjusted as one family."""
    rows = []
    for s, (df, folder, arch) in zip(SCENARIOS, sources(tables), strict=True):
        row = judge(s, df)
        where = f"{arch}, {s.where}" if arch else s.where
        if "means" in row:  # the candidates compared
            where += f" ({', '.join(norm_label(n) for n in sorted(row['means']))})"
        rows.append({**row, "experiment": folder, "where": where, "architecture": arch})
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


HEADER = (
    "scenario",
    "read from",
    "blog says",
    "our winner",
    "margin over runner-up",
    "blog's pick vs best rival",
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
                r["call"],
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
    rows = judge_all(tables)
    header = list(HEADER)
    cells = table_cells(rows)
    fig, ax = plt.subplots(figsize=(15, 0.8 + 0.45 * len(rows)), layout="constrained")
    ax.axis("off")
    table = ax.table(cellText=cells, colLabels=header, loc="center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(9)
    table.scale(1, 1.6)
    colors = {"matches": "#d9f2d9", "differs": "#f8d7d7", "tie": "#fff3cd"}
    for i, r in enumerate(rows, start=1):
        table[i, len(header) - 1].set_facecolor(colors.get(r["call"], "#eeeeee"))
    for j in range(len(header)):
        table[0, j].set_text_props(weight="bold")
    table.auto_set_column_width(list(range(len(header))))
    ax.set_title(
        "C11: the blog's recommendations vs our winners (margins: mean and 95% CI over seeds, "
        "> 0 favours the first)",
        fontsize=11,
    )
    return save_figure(fig, out)


def verdict(tables: dict) -> dict:
    rows = judge_all(tables)
    calls = [r["call"] for r in rows]
    if all(c == "not run yet" for c in calls):
        return CLAIM.not_run_yet(
            "no scenario has runs yet (bn_small_batch, bn_generation, rnn_norm)"
        )
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
        notes="scenarios not run yet: "
        + (", ".join(r["scenario"] for r in rows if r["call"] == "not run yet") or "none"),
        details=json_safe({"scenarios": rows}),
    )


def deciding(tables: dict) -> dict:
    """The runs the scenarios read: bn_small_batch's on C4's architecture of record (the other
    architecture's seeds do not hold C11 back), the other experiments as they are."""
    return {folder: df for df, folder, _ in sources(tables)}


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
    (*dict.fromkeys(s.experiment for s in SCENARIOS), C4_RESNET),
    draw,
    verdict,
    deciding,
    quote=QUOTE,
    table=markdown_table,
)
