"""C6 bn_generation: BN does poorly in pixel-level image generation; prefer IN for GAN / image
generation / style tasks. Decided on one task, ``DECIDING_TASK``; two more reported beside it:

- the Gram-loss stylization (experiment ``bn_generation_gram``, deciding): a feed-forward
  generator stylizes CIFAR-10 content images toward one fixed style image, trained with a content
  loss on feature maps plus a Gram-matrix style loss (Johnson et al. 2016), the features from a
  fixed random-filter loss network: the setting of Ulyanov et al. 2016, the anchor. Its test
  statistic is that loss on held-out content images (lower is better).
- restoration (``bn_generation``, reported): undo per-image contrast / colour changes. Each
  image's own statistics are signal the output must reproduce, which IN removes.
- fixed-map stylization (``bn_generation_style``, reported): map the noisy, recoloured input to a
  fixed function of the per-image standardized image, which IN computes for free.
The two reported tasks decide IN's fate by their construction, so neither decides C6. The
deciding task's runs are C6's deciding runs (its seeds of record and regime), and what C11's
generation row reads (``DECIDING_TASK``, through the registry's ``score``: that test loss, lower
is better).

Verdict rule. On the Gram-loss stylization: with L_X(b) the mean test loss (content + weighted
style loss, the training objective, outputs clipped to [0, 1]; the same fixed test images for
every run; BN as deployed, with its running averages) of norm X at batch size b, and D_X(b) =
100 × (L_X(b) − L_IN(b)) / L_IN(b), % of IN's loss, paired by seed (> 0: IN better), for X = BN,
LN, GN and no norm at the grid's largest batch size (the normal one, 32: BN's best case) and its
smallest (4): eight paired t-tests over seeds, Holm-adjusted as one family. C6a "BN does poorly
in pixel-level generation": *supported* if the adjusted test of D_BN at the normal batch rejects
0 with D > 0, *contradicted* if it, or that of D_BN at the small batch, rejects with D < 0 (BN
beats IN), *inconclusive* otherwise; the normal batch decides, because at the small batch IN's
lead would also follow from BN's small-batch weakness (claim C4). C6b "prefer IN for image
generation and style": IN beats every other norm at both batch sizes: *supported* if all eight
adjusted tests reject 0 with D > 0, *contradicted* if any rejects with D < 0, *inconclusive*
otherwise or when a norm has no runs; its statistic is the test that contradicted it, else the
first that did not reject, else the weakest. The claim is *supported* iff both are,
*contradicted* if either is, *inconclusive* otherwise. The estimate is D_BN at the normal batch.
Reported, not decided on: per image-to-image task, D(b) = PSNR_IN(b) − PSNR_BN(b) in dB, paired
by seed, called by its 95% CI as before (IN ahead at the normal batch and not behind at the small
one, or BN ahead at either), each with its own row in the effect and its own figure panel.

Sample grids: each run writes ``samples.png`` into its run folder and names it in the summary
(``sample_grid``); the collected table holds only ``run_key``. The figure looks for
``<results>/<profile>/runs/<experiment>/<run_key>/samples.png`` in the profile's folder its
caller passes (``draw(..., results_dir=...)``); without one, or for a grid that is not found,
the grids are left out of the figure with a note (the verdict never needs them).
"""

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from normexp.analysis import columns as col
from normexp.analysis.style import (
    MIN_FONT_PT,
    NEUTRAL,
    REFERENCE,
    caption,
    figure,
    mark_not_run,
    norm_color,
    norm_label,
    save_figure,
    wrap,
)
from normexp.analysis.verdict import (
    all_parts,
    by_seed,
    conjunction,
    decide,
    failures,
    holm_family,
    make_verdict,
    paired_difference,
    sub_verdict,
)
from normexp.analysis.verdict.paired import against_zero, batch_cells, json_safe
from normexp.analysis.verdict.spec import Claim, Grid, Quote, Score
from normexp.tracking.store import RunRecord
from normexp.tracking.wandb_mirror import MEDIA_FILES

ANCHOR = (
    "Ulyanov, Vedaldi & Lempitsky 2016 (Instance Normalization: The Missing Ingredient for Fast "
    "Stylization): replacing BN by IN in feed-forward stylization generators trained with "
    "Johnson et al.'s content and Gram-matrix style losses visibly improves the stylized "
    "images; the evidence is qualitative (image comparisons), so no loss value comparable with "
    "this task's exists"
)
EXPERIMENT = "bn_generation"  # the claim's name (its verdict and figure files); restoration
STYLE_EXPERIMENT = "bn_generation_style"  # the fixed-map stylization (reported)
GRAM_EXPERIMENT = "bn_generation_gram"  # the Gram-loss stylization (deciding)
CLAIM = Claim.from_doc("C6", EXPERIMENT, ANCHOR, __doc__, end="Sample grids:")
NORM_ORDER = ("batch", "instance", "layer", "group", "none")
RIVALS = ("batch", "layer", "group", "none")  # C6b: IN against each of them
GRID_IMAGES = 4  # images of each run's sample grid shown in the figure
GRID_GAP, GRID_SIDE = 2, 32  # the layout of samples.png (see normexp.train.image_to_image)


@dataclass(frozen=True)
class Task:
    """One C6 task: its runs, the test metric its statistic compares and how it is shown."""

    name: str  # the task in a few words, as the verdict names it
    experiment: str
    metric: str  # the test metric (a collected column)
    higher_is_better: bool
    unit: str  # the metric's, for text ("" for a loss)
    title: str  # the figure panel's
    reference_metric: str  # the no-network reference, the panel's dashed line
    reference: str  # what that reference is
    rows: str  # the sample grid's rows, top to bottom
    scope: str = ""  # stated with a reported task's verdict


# The task that decides C6 (C11's generation scenario reads the same runs): its experiment, its
# test metric and the direction that is better.
DECIDING_TASK = Task(
    "Gram-loss stylization",
    GRAM_EXPERIMENT,
    col.TEST_STYLIZATION_LOSS,
    False,
    "",
    "C6 decided: Gram-loss stylization (content + style loss)",
    col.INPUT_STYLIZATION_LOSS,
    "content image unchanged",
    "content / stylized / style",
)
REPORTED_TASKS = (
    Task(
        "restoration (per-image statistics are signal)",
        EXPERIMENT,
        col.TEST_PSNR,
        True,
        "dB",
        "reported: restoration, undo per-image contrast/colour",
        col.INPUT_PSNR,
        "corrupted input (no restoration)",
        "input / output / target",
        "this task restores each image's own contrast and colour, so the output depends on "
        "per-image statistics of the input, which IN removes at every layer",
    ),
    Task(
        "fixed-map stylization (per-image statistics are nuisance)",
        STYLE_EXPERIMENT,
        col.TEST_PSNR,
        True,
        "dB",
        "reported: fixed-map style of the standardized image",
        col.INPUT_PSNR,
        "style applied to the noisy input (no denoising)",
        "input / output / target",
        "this task's target is a fixed map of the per-image standardized clean image, which IN "
        "computes for free, so the input's contrast and colour carry no information about it",
    ),
)
TASKS = (DECIDING_TASK, *REPORTED_TASKS)


def metric_cells(df: pd.DataFrame, task: Task) -> pd.DataFrame:
    """Mean ``task.metric`` (column ``value``) with 95% CI over seeds per (norm, batch size), from
    finished runs; ``failed`` counts diverged/failed runs of the cell."""
    return batch_cells(df, task.metric, "value")


def _ordered(norms: set) -> list[str]:
    return [n for n in NORM_ORDER if n in norms] + sorted(norms - set(NORM_ORDER))


def sample_grid_paths(
    df: pd.DataFrame, results_dir: Path | None, experiment: str = GRAM_EXPERIMENT
) -> dict[tuple[str, int], Path]:
    """{(norm, batch size): samples.png of its lowest-seed finished run}, where the file exists."""
    if results_dir is None or df.empty or col.SAMPLE_GRID not in df:
        return {}
    ok = df[(df[col.STATUS] == "ok") & df[col.SAMPLE_GRID].notna()].sort_values(col.SEED)
    found = {}
    for (norm, batch), cell in ok.groupby([col.NORM, col.BATCH]):
        row = cell.iloc[0]
        run = RunRecord(results_dir, experiment, str(row[col.RUN_KEY]))
        path = run.path / str(row[col.SAMPLE_GRID])
        if path.is_file():
            found[(norm, int(batch))] = path
    return found


# --- the figure ----------------------------------------------------------------------------


def _draw_metric(ax, df: pd.DataFrame, task: Task) -> None:  # noqa: ANN001 - a matplotlib Axes
    cells = metric_cells(df, task)
    norms = _ordered(set(cells["norm"]))
    sizes = sorted(cells["batch_size"].unique())
    markers = ["o", "s", "D", "^", "v"]
    width = 0.6
    for k, batch in enumerate(sizes):
        offset = (k - (len(sizes) - 1) / 2) * width / max(1, len(sizes))
        for i, norm in enumerate(norms):
            c = cells[(cells["norm"] == norm) & (cells["batch_size"] == batch)]
            if c.empty:
                continue
            row = c.iloc[0]
            ax.errorbar(
                i + offset,
                row["value"],
                yerr=[[row["value"] - row["lo"]], [row["hi"] - row["value"]]],
                fmt=markers[k % len(markers)],
                color=norm_color(norm),
                capsize=3,
                mfc="white" if k == 0 and len(sizes) > 1 else norm_color(norm),
            )
            if row["failed"]:
                ax.plot(i + offset, row["value"], "x", color="black", ms=8)
    for k, batch in enumerate(sizes):  # legend entries for the batch sizes
        ax.plot(
            [],
            [],
            markers[k % len(markers)],
            color=NEUTRAL,
            mfc="white" if k == 0 and len(sizes) > 1 else NEUTRAL,
            label=f"batch {batch}",
        )
    if col.first(df, task.reference_metric) is not None:
        reference = float(col.first(df, task.reference_metric))
        ax.axhline(reference, color=REFERENCE, ls="--", lw=1, label=wrap(task.reference, 24))
    ax.set_xticks(range(len(norms)), [norm_label(n) for n in norms])
    ax.set_xlim(-0.6, len(norms) - 0.4)
    better = "higher" if task.higher_is_better else "lower"
    what = "test PSNR (dB" if task.unit == "dB" else "test loss (content + style"
    ax.set_ylabel(f"{what}),\n{better} is better")
    seeds = int(cells["seeds"].max()) if not cells.empty else 0
    ax.set_title(f"{task.title} (mean, 95% CI, {seeds} seeds)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))


def _draw_grids(fig, df: pd.DataFrame, grids: dict, task: Task) -> None:  # noqa: ANN001
    cells = metric_cells(df, task)
    norms = _ordered(set(cells["norm"]))
    sizes = sorted(cells["batch_size"].unique())
    crop = GRID_GAP + GRID_IMAGES * (GRID_SIDE + GRID_GAP)
    axes = fig.subplots(len(sizes), len(norms), squeeze=False)
    for r, batch in enumerate(sizes):
        for c, norm in enumerate(norms):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            path = grids.get((norm, int(batch)))
            if path is None:
                ax.text(0.5, 0.5, "no grid", ha="center", va="center", color=REFERENCE)
            else:
                ax.imshow(plt.imread(path)[:, :crop], interpolation="nearest")
            if r == 0:
                ax.set_title(norm_label(norm), color=norm_color(norm), loc="center")
            if c == 0:
                ax.set_ylabel(f"batch {batch}")
    fig.supxlabel(f"samples of the first seed; rows of each: {task.rows}", fontsize=MIN_FONT_PT)


def draw(tables: dict, out: Path, results_dir: Path | None = None) -> Path:
    """Per task (the deciding one first), one row: its test metric by norm and batch size, and
    beside it the sample grids of its runs."""
    dfs = [col.table(tables, t.experiment) for t in TASKS]
    ran = [_ran(df, t) for df, t in zip(dfs, TASKS, strict=True)]
    grids = [
        sample_grid_paths(df, results_dir, t.experiment) if r else {}
        for df, t, r in zip(dfs, TASKS, ran, strict=True)
    ]
    sizes = [df[col.BATCH].nunique() if r else 0 for df, r in zip(dfs, ran, strict=True)]
    heights = [
        (2.4 + (0.4 + 1.05 * n if g else 0)) if r else 0.8
        for r, g, n in zip(ran, grids, sizes, strict=True)
    ]
    fig = figure(sum(heights) + 0.5)
    rows = fig.subfigures(len(TASKS), 1, height_ratios=heights)
    for row, task, df, did, grid, n in zip(rows, TASKS, dfs, ran, grids, sizes, strict=True):
        if not did:
            mark_not_run(row.subplots(), task.experiment)
            continue
        if not grid:
            _draw_metric(row.subplots(), df, task)
            continue
        top, bottom = row.subfigures(2, 1, height_ratios=(2.4, 0.4 + 1.05 * n))
        _draw_metric(top.subplots(), df, task)
        _draw_grids(bottom, df, grid, task)
    if any(r and not g for r, g in zip(ran, grids, strict=True)):
        caption(fig, "sample grids not found next to the results "
                "(see normexp.analysis.claims.bn_generation)")  # fmt: skip
    return save_figure(
        fig,
        out,
        "C6: BN, IN and the others in pixel-level generation; decided on the Gram-loss "
        "stylization (anchor: Ulyanov et al. 2016, qualitative), two tasks reported",
    )


def _ran(df: pd.DataFrame, task: Task) -> bool:
    return col.has_rows(df, col.NORM, col.BATCH) and task.metric in df


# --- the deciding task: the Gram-loss stylization --------------------------------------------


def loss_excess(df: pd.DataFrame, rival: str, batch: int) -> dict:
    """D_rival(batch): 100 × (L_rival − L_IN) / L_IN paired by seed, as a test of D > 0."""
    where = {col.BATCH: batch}
    ours = by_seed(df, DECIDING_TASK.metric, {col.NORM: "instance", **where})
    theirs = by_seed(df, DECIDING_TASK.metric, {col.NORM: rival, **where})
    seeds = sorted(set(ours) & set(theirs))
    return against_zero({s: 100 * (theirs[s] - ours[s]) / ours[s] for s in seeds})


def _label(rival: str, batch: int) -> str:
    return f"{norm_label(rival)} − IN test loss at batch {batch}"


def _pct(test: dict) -> str:
    """'+5.0% [+4.7, +5.3]' (no interval below 2 seeds)."""
    lo, hi = test["ci"]
    if test["seeds"] < 2:
        return f"{test['mean']:+.1f}%"
    return f"{test['mean']:+.1f}% [{lo:+.1f}, {hi:+.1f}]"


def _tests(df: pd.DataFrame, sizes: list[int]) -> dict[tuple[str, int], dict]:
    """Every rival's D at the normal and the small batch, Holm-adjusted as one family: the
    family planned, a test without paired seeds included (its p is NaN: never a rejection)."""
    tests = {
        (rival, batch): loss_excess(df, rival, batch)
        for batch in dict.fromkeys((sizes[-1], sizes[0]))
        for rival in RIVALS
    }
    holm_family(list(tests.values()))
    return tests


def _c6a(tests: dict, normal: int, small: int) -> dict:
    """C6a from D_BN: the normal batch decides; BN ahead at the small batch contradicts too."""
    statement = "BN does poorly in pixel-level generation"
    at_normal, at_small = tests[("batch", normal)], tests[("batch", small)]
    if not at_normal["seeds"]:
        return sub_verdict("C6a", statement, "not run yet", "–", note="no paired BN runs")
    by, batch, call = at_normal, normal, at_normal["decision"]
    if call != "contradicted" and at_small["decision"] == "contradicted":
        by, batch, call = at_small, small, "contradicted"
    statistic = f"{_label('batch', batch)}, % of IN's (> 0: IN better)"
    return sub_verdict("C6a", statement, call, statistic, by)


def _c6b(tests: dict) -> dict:
    """C6b: IN ahead of every rival at both batch sizes (a conjunction of the eight tests; one
    without paired runs is not a rejection, so it leaves C6b inconclusive)."""
    statement = "for image generation and style, prefer IN"
    named = {_label(r, b): t for (r, b), t in tests.items()}
    call, by = conjunction(named)
    missing = [name for name, t in named.items() if not t["seeds"]]
    note = f"no paired runs: {', '.join(missing)}" if missing else ""
    statistic = f"{by}, % of IN's (> 0: IN better)"
    return sub_verdict("C6b", statement, call, statistic, named[by], note=note)


def _loss_details(df: pd.DataFrame, tests: dict, sizes: list[int]) -> dict:
    """What the Gram task's verdict reports beside the calls: every test, the cells' mean test
    loss and their winners (the lowest loss), BN with batch statistics, the references."""
    cells = metric_cells(df, DECIDING_TASK).dropna(subset=["value"])
    winners = {
        int(b): str(c.sort_values("value").iloc[0]["norm"]) for b, c in cells.groupby("batch_size")
    }
    details = {
        "normal_batch": sizes[-1],
        "small_batch": sizes[0],
        "tests_pct_of_in": {_label(r, b): t for (r, b), t in tests.items() if t["seeds"]},
        "winner_by_batch": winners,  # the norm with the lowest mean test loss
        "mean_test_loss": {
            f"{r.norm}@{r.batch_size}": round(float(r.value), 5) for r in cells.itertuples()
        },
    }
    if col.TEST_STYLIZATION_LOSS_BATCH_STATS in df:  # BN normalizing test batches itself
        details["bn_batch_stats_loss"] = {
            b: sum(v.values()) / len(v)
            for b in sizes
            if (v := by_seed(df, col.TEST_STYLIZATION_LOSS_BATCH_STATS,
                             {col.NORM: "batch", col.BATCH: b}))  # fmt: skip
        }
    for key, column in (("input_loss", col.INPUT_STYLIZATION_LOSS), ("style_weight",
                                                                      col.STYLE_WEIGHT)):
        if col.first(df, column) is not None:
            details[key] = float(col.first(df, column))
    return details


def gram_verdict(df: pd.DataFrame) -> tuple[str, str, dict | None, list[dict], str, dict]:
    """The deciding task: (call, effect, C6a's test, [C6a, C6b], notes, details)."""
    if not _ran(df, DECIDING_TASK):
        return "not run yet", f"no finished runs of {GRAM_EXPERIMENT}", None, [], "", {}
    ok = df[(df[col.NORM] == "instance") & (df[col.STATUS] == "ok")]
    sizes = sorted(int(b) for b in ok[col.BATCH].unique())
    if not sizes:
        return "not run yet", f"no finished IN runs of {GRAM_EXPERIMENT}", None, [], "", {}
    normal, small = sizes[-1], sizes[0]
    tests = _tests(df, sizes)
    subs = [_c6a(tests, normal, small), _c6b(tests)]
    call = all_parts(s["verdict"] for s in subs)
    if all(s["verdict"] == "not run yet" for s in subs):
        call = "not run yet"
    parts = [f"{norm_label(r)} {_pct(t)} at batch {b}" for (r, b), t in tests.items() if t["seeds"]]
    seeds = max((t["seeds"] for t in tests.values()), default=0)
    effect = (
        f"{DECIDING_TASK.name}: test loss of each norm over IN's, % of IN's (> 0: IN better): "
        + "; ".join(parts)
        + f" ({seeds} seeds)"
    )
    notes = f"{DECIDING_TASK.name}: {failures(df)}"
    return call, effect, tests[("batch", normal)], subs, notes, json_safe(
        _loss_details(df, tests, sizes)
    )


# --- the reported tasks: test PSNR, IN against BN --------------------------------------------


def _gap(
    df: pd.DataFrame, batch: int, a: str = "instance", b: str = "batch"
) -> tuple[float, float, float, int]:
    """Paired difference of ``a`` minus ``b`` test PSNR over seeds at ``batch``: (mean, lo, hi,
    n)."""
    first = by_seed(df, col.TEST_PSNR, {col.NORM: a, col.BATCH: batch})
    second = by_seed(df, col.TEST_PSNR, {col.NORM: b, col.BATCH: batch})
    return paired_difference(first, second)


def _finite_or_none(values: tuple) -> list:
    return [None if math.isnan(v) else v for v in values]


def _difference(df: pd.DataFrame, batch: int, a: str, b: str) -> dict:
    """``_gap`` for the details: mean, 95% CI (None below 2 seeds: no spread measured), seeds."""
    mean, lo, hi, n = _gap(df, batch, a, b)
    return {
        "mean": None if math.isnan(mean) else mean,
        "ci": _finite_or_none((lo, hi)) if n >= 2 else None,
        "seeds": n,
    }


def _task_call(at_normal: str, at_small: str) -> str:
    """A reported task's call from D at each batch size: BN beating IN at either contradicts,
    and the normal batch decides (at the small batch IN's lead could be BN's weakness)."""
    if "contradicted" in (at_normal, at_small):
        return "contradicted"
    if at_normal == "supported":
        return "supported"
    return "inconclusive"


def _task_effect(kind: str, sizes: list[int], normal_gap: tuple, small_gap: tuple) -> str:
    """IN minus BN at the normal batch, then at the small one when the grid has two sizes."""
    normal, small = sizes[-1], sizes[0]
    d_normal, n_lo, n_hi, n = normal_gap
    d_small, s_lo, s_hi, _ = small_gap
    effect = (
        f"{kind}: IN minus BN test PSNR {d_normal:+.2f} dB [{n_lo:+.2f}, {n_hi:+.2f}] at "
        f"batch {normal}"
    )
    if small != normal:
        effect += f", {d_small:+.2f} dB [{s_lo:+.2f}, {s_hi:+.2f}] at batch {small}"
    return effect + f" ({n} seeds)"


def _winners(cells: pd.DataFrame) -> dict[int, str]:
    """Per batch size, the norm with the highest mean test PSNR."""
    return {
        int(b): str(c.sort_values("value", ascending=False).iloc[0]["norm"])
        for b, c in cells.groupby("batch_size")
    }


def _task_details(df: pd.DataFrame, sizes: list[int], parts: dict, small_gap: tuple) -> dict:
    """A reported task's details: the calls per batch size, D at the small batch, BN against no
    norm, the per-cell PSNRs and their winners, and the optional extras."""
    normal, small = sizes[-1], sizes[0]
    d_small, s_lo, s_hi, _ = small_gap
    cells = batch_cells(df, col.TEST_PSNR, "value").dropna(subset=["value"])
    details = {
        "normal_batch": normal,
        "small_batch": small,
        "parts": parts,
        "in_minus_bn_at_small_db": _finite_or_none((d_small, s_lo, s_hi)),
        # BN against no normalization: does BN hurt, or only trail IN?
        "bn_minus_none_db": {
            b: _difference(df, b, "batch", "none") for b in sorted({small, normal})
        },
        "winner_by_batch": _winners(cells),
        "mean_test_psnr_db": {
            f"{row.norm}@{row.batch_size}": round(float(row.value), 3)
            for row in cells.itertuples()
        },
    }
    if col.TEST_PSNR_BATCH_STATS in df:  # BN normalizing test batches by their own statistics
        details["bn_batch_stats_psnr_db"] = {
            b: sum(v.values()) / len(v)
            for b in sizes
            if (v := by_seed(df, col.TEST_PSNR_BATCH_STATS, {col.NORM: "batch", col.BATCH: b}))
        }
    if col.first(df, col.INPUT_PSNR) is not None:
        details["input_psnr_db"] = float(col.first(df, col.INPUT_PSNR))
    return details


def task_verdict(df: pd.DataFrame, task: Task) -> dict:
    """A reported task's verdict by the PSNR rule (reported, never the claim's)."""

    def verdict_of(result: str, effect: str, **fields: object) -> dict:
        v = make_verdict("C6", task.experiment, result, effect, rule="", anchor="", **fields)
        return {"task": task.name, **{k: x for k, x in v.items() if k not in ("rule", "anchor")}}

    if not _ran(df, task):
        return verdict_of("not run yet", f"no finished runs of {task.experiment} in the store")
    both = df[df[col.NORM].isin(["batch", "instance"]) & (df[col.STATUS] == "ok")]
    sizes = sorted(int(b) for b in both[col.BATCH].unique())
    if not sizes:
        return verdict_of("not run yet", f"no finished BN or IN runs of {task.experiment}")
    normal, small = sizes[-1], sizes[0]
    normal_gap, small_gap = _gap(df, normal), _gap(df, small)
    d_normal, n_lo, n_hi, n = normal_gap
    _, s_lo, s_hi, n_small = small_gap
    at_normal = decide(n_lo, n_hi, n)
    at_small = decide(s_lo, s_hi, n_small) if small != normal else at_normal
    parts = {"normal": at_normal, "small": at_small}
    return verdict_of(
        _task_call(at_normal, at_small),
        _task_effect(task.name, sizes, normal_gap, small_gap),
        estimate=d_normal,
        ci=(n_lo, n_hi),
        notes=f"{failures(df)}; scope: {task.scope}",
        details=_task_details(df, sizes, parts, small_gap),
    )


REPORTED_PHRASES = {
    "supported": "IN ahead of BN",
    "contradicted": "BN ahead of IN",
    "inconclusive": "no clear IN-BN difference",
    "not run yet": "not run yet",
}


def verdict(tables: dict) -> dict:
    """C6 from the Gram-loss stylization (sub-claims C6a, C6b); the reported tasks' verdicts in
    ``details["reported"]``, each named in the effect."""
    call, effect, measured, subs, notes, details = gram_verdict(
        col.table(tables, GRAM_EXPERIMENT)
    )
    reported = [task_verdict(col.table(tables, t.experiment), t) for t in REPORTED_TASKS]
    ran = [r for r in reported if r["verdict"] != "not run yet"]
    if call == "not run yet" and not ran:
        return CLAIM.not_run_yet(
            f"no finished runs of {GRAM_EXPERIMENT}, {EXPERIMENT} or {STYLE_EXPERIMENT}"
        )
    if ran:
        effect += ". Reported (not deciding): " + "; ".join(
            f"{r['effect']}, {REPORTED_PHRASES[r['verdict']]}" for r in ran
        )
    reported_notes = "; ".join(f"{r['task']}: {r['notes']}" for r in ran if r["notes"])
    all_notes = "; ".join(p for p in (notes, reported_notes) if p)
    fields = {}
    if measured is not None and measured["seeds"]:
        fields = {"estimate": measured["mean"], "ci": tuple(measured["ci"])}
    return CLAIM.verdict(
        call,
        effect,
        sub=subs or None,
        notes=f"{all_notes}." if all_notes else "",  # a sentence: others append theirs
        details={**details, "decided_by": GRAM_EXPERIMENT, "reported": reported},
        ci_note="" if fields else "no paired BN and IN runs at the normal batch",
        **fields,
    )


def deciding(tables: dict) -> dict:
    """The runs that decide C6: the Gram-loss stylization's (the reported tasks' seeds, budget
    and LR never hold its verdict back)."""
    return {GRAM_EXPERIMENT: col.table(tables, GRAM_EXPERIMENT)}


# How C6 scores a norm, read by C11's generation row through the registry: the deciding task's
# test loss, lower is better (shown ×100: the losses are about 0.1-0.4, their gaps hundredths).
SCORE = Score(
    DECIDING_TASK.experiment,
    DECIDING_TASK.metric,
    higher_is_better=DECIDING_TASK.higher_is_better,
    unit="test loss ×100",
    what=f"{DECIDING_TASK.name}, CIFAR-10, held-out loss",
    scale=100,
)


QUOTE = Quote(
    zh=(
        "对于有些像素级图片生成任务来说，BN效果不佳。……如果是GAN等图片生成或图片内容改写类型的任务，"
        "可以优先尝试InstanceNorm。"
    ),
    en=(
        "For some pixel-level image generation tasks BN does poorly. … For GANs and other "
        "image generation or image rewriting tasks, try InstanceNorm first."
    ),
)
DASHBOARD = (
    Grid(
        "Gram-loss stylization: held-out loss per norm and batch size; sample grids",
        (GRAM_EXPERIMENT,),
        ("norm.name", "train.batch_size"),
        bars=("test/stylization_loss",),
        curves=("val/stylization_loss", "train/loss"),
        media=(next(iter(MEDIA_FILES)),),  # the sample grid each run logs
    ),
    Grid(
        "Reported: restoration, PSNR per norm and batch size; sample grids",
        (EXPERIMENT,),
        ("norm.name", "train.batch_size"),
        bars=("test/psnr",),
        curves=("val/psnr", "train/loss"),
        media=(next(iter(MEDIA_FILES)),),
    ),
)
ANALYSIS = CLAIM.analysis(
    "BN does poorly in pixel-level generation; prefer IN",
    (GRAM_EXPERIMENT, EXPERIMENT, STYLE_EXPERIMENT),
    draw,
    verdict,
    deciding,
    quote=QUOTE,
    dashboard=DASHBOARD,
    score=SCORE,
)
