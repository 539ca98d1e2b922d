"""C6 bn_generation: test PSNR per norm of a generator on two image-to-image tasks of CIFAR-10
images with per-image contrast / colour changes, at a small and a normal batch size, with sample
grids. The two tasks are the two kinds of pixel-level generation, decided separately:

- C6a restoration (experiment ``bn_generation``): recover the clean image. Each image's own
  statistics are signal the output must reproduce.
- C6b stylization (``bn_generation_style``): map the (also noisy) input to a fixed stylization of
  the per-image standardized clean image (normexp.data.corruptions.stylize). The input's
  statistics are nuisance the output must not depend on: the setting of the IN paper and of the
  blog's advice (GAN / image generation / image rewriting).

Verdict rule. Per task, with D(b) = PSNR_IN(b) − PSNR_BN(b), the test PSNR in dB against the
task's target (BN as deployed, with its running averages), paired by seed, at the largest batch
size of the grid (the normal one, BN's best case) and at the smallest: *supported* if the 95% CI
over seeds of D at the normal batch lies above 0 and that of D at the small batch does not lie
below 0; *contradicted* if the CI of D lies below 0 at either batch size (BN beats IN);
*inconclusive* otherwise. The normal batch decides: the claim is about generation, and at the
small batch IN beating BN would also follow from BN's small-batch weakness (claim C4). The
estimate is D at the normal batch, in dB. This gives sub-verdicts C6a (restoration) and C6b
(stylization). C6 overall is C6b's verdict: stylization, where per-image statistics are
nuisance, is the kind of generation the blog's advice and its anchor are about; C6a says whether
the advice extends to restoration, and the overall effect names the kinds it holds for. The
deciding task's runs are C6's deciding runs (its seeds of record and regime), and what C11's
generation row reads (``DECIDING_TASK``, through the registry's ``score``).

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
from normexp.analysis.style import mark_not_run, norm_color, norm_label, save_figure
from normexp.analysis.verdict import by_seed, decide, failures, make_verdict, paired_difference
from normexp.analysis.verdict.paired import batch_cells
from normexp.analysis.verdict.spec import Claim, Grid, Quote, Score
from normexp.tracking.store import RunRecord
from normexp.tracking.wandb_mirror import MEDIA_FILES

ANCHOR = (
    "Ulyanov, Vedaldi & Lempitsky 2016 (Instance Normalization: The Missing Ingredient for Fast "
    "Stylization): replacing BN by IN in feed-forward stylization generators visibly improves "
    "the stylized images; the evidence is qualitative (image comparisons), so no PSNR or other "
    "number comparable with these tasks exists"
)
EXPERIMENT = "bn_generation"  # C6a, restoration: the claim's name, its verdict and figure file
STYLE_EXPERIMENT = "bn_generation_style"  # C6b, stylization
METRIC = col.TEST_PSNR
CLAIM = Claim.from_doc("C6", EXPERIMENT, ANCHOR, __doc__, end="Sample grids:")
NORM_ORDER = ("batch", "instance", "layer", "group", "none")
GRID_IMAGES = 4  # images of each run's sample grid shown in the figure
GRID_GAP, GRID_SIDE = 2, 32  # the layout of samples.png (see normexp.train.image_to_image)


@dataclass(frozen=True)
class Task:
    """One kind of pixel-level generation, decided on its own (a sub-verdict of C6)."""

    claim: str  # "C6a"
    experiment: str
    kind: str  # the kind of generation, as the overall effect names it
    title: str  # the figure panel's
    reference: str  # what the dashed line (input_psnr) is
    scope: str  # stated with the sub-verdict
    metric: str = METRIC  # the summary column it is scored by (higher is better)
    unit: str = "dB of PSNR"


TASKS = (
    Task(
        "C6a",
        EXPERIMENT,
        "restoration (per-image statistics are signal)",
        "C6a restoration: undo per-image contrast/colour",
        "corrupted input (no restoration)",
        "this task restores each image's own contrast and colour, so the output depends on "
        "per-image statistics of the input, which IN removes at every layer",
    ),
    Task(
        "C6b",
        STYLE_EXPERIMENT,
        "stylization (per-image statistics are nuisance)",
        "C6b stylization: fixed style of the standardized image",
        "style applied to the noisy input (no denoising)",
        "this task's target is a fixed stylization of the per-image standardized clean image, "
        "so the input's contrast and colour carry no information about the output, as the "
        "content image's do not in the anchor's stylization",
    ),
)


DECIDING_TASK = TASKS[1]  # stylization decides C6 (the rule above); C11 reads it too


def psnr_cells(df: pd.DataFrame, metric: str = METRIC) -> pd.DataFrame:
    """Mean ``metric`` (``psnr``) with 95% CI over seeds per (norm, batch size), from finished
    runs; ``failed`` counts diverged/failed runs of the cell."""
    return batch_cells(df, metric, "psnr")


def _ordered(norms: set) -> list[str]:
    return [n for n in NORM_ORDER if n in norms] + sorted(norms - set(NORM_ORDER))


def sample_grid_paths(
    df: pd.DataFrame, results_dir: Path | None, experiment: str = EXPERIMENT
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


def _draw_psnr(ax, df: pd.DataFrame, task: Task) -> None:  # noqa: ANN001 - a matplotlib Axes
    cells = psnr_cells(df)
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
                row["psnr"],
                yerr=[[row["psnr"] - row["lo"]], [row["hi"] - row["psnr"]]],
                fmt=markers[k % len(markers)],
                color=norm_color(norm),
                ms=7,
                capsize=3,
                mfc="white" if k == 0 and len(sizes) > 1 else norm_color(norm),
            )
            if row["failed"]:
                ax.plot(i + offset, row["psnr"], "x", color="black", ms=9)
    for k, batch in enumerate(sizes):  # legend entries for the batch sizes
        ax.plot(
            [],
            [],
            markers[k % len(markers)],
            color="#444444",
            mfc="white" if k == 0 and len(sizes) > 1 else "#444444",
            label=f"batch {batch}",
        )
    if col.first(df, col.INPUT_PSNR) is not None:
        ax.axhline(
            col.first(df, col.INPUT_PSNR),
            color="#888888",
            ls="--",
            lw=1,
            label=task.reference,
        )
    ax.set_xticks(range(len(norms)), [norm_label(n) for n in norms])
    ax.set_xlim(-0.6, len(norms) - 0.4)
    ax.set_ylabel("test PSNR (dB, higher is better)")
    seeds = int(cells["seeds"].max()) if not cells.empty else 0
    profile, n_train = col.first(df, col.PROFILE, "?"), col.first(df, col.N_TRAIN, 0)
    ax.set_title(
        f"{task.title}\nCIFAR-10, {profile} profile ({int(n_train)} train images), "
        f"mean and 95% CI over {seeds} seed(s)",
        fontsize=10,
    )
    ax.grid(alpha=0.3, axis="y")
    ax.legend(frameon=False, fontsize=9)


def _draw_grids(fig, spec, df: pd.DataFrame, grids: dict) -> None:  # noqa: ANN001
    cells = psnr_cells(df)
    norms = _ordered(set(cells["norm"]))
    sizes = sorted(cells["batch_size"].unique())
    sub = spec.subgridspec(len(sizes), len(norms), wspace=0.05, hspace=0.05)
    crop = GRID_GAP + GRID_IMAGES * (GRID_SIDE + GRID_GAP)
    for r, batch in enumerate(sizes):
        for c, norm in enumerate(norms):
            ax = fig.add_subplot(sub[r, c])
            ax.set_xticks([])
            ax.set_yticks([])
            path = grids.get((norm, int(batch)))
            if path is None:
                ax.text(0.5, 0.5, "no grid", ha="center", va="center", color="#888888")
            else:
                ax.imshow(plt.imread(path)[:, :crop], interpolation="nearest")
            if r == 0:
                ax.set_title(norm_label(norm), fontsize=9, color=norm_color(norm))
            if c == 0:
                ax.set_ylabel(f"batch {batch}\ninput / output / target", fontsize=8)


def draw(tables: dict, out: Path, results_dir: Path | None = None) -> Path:
    """Per task: test PSNR by norm and batch size (top), the sample grids of its runs (below)."""
    dfs = [col.table(tables, t.experiment) for t in TASKS]
    ran = [_ran(df) for df in dfs]
    grids = [
        sample_grid_paths(df, results_dir, t.experiment) if r else {}
        for df, t, r in zip(dfs, TASKS, ran, strict=True)
    ]
    any_grids = any(grids)
    fig = plt.figure(figsize=(17, 8.4 if any_grids else 4.8), constrained_layout=True)
    spec = fig.add_gridspec(
        2 if any_grids else 1, len(TASKS), height_ratios=[1.3, 1] if any_grids else [1]
    )
    for k, (task, df) in enumerate(zip(TASKS, dfs, strict=True)):
        ax = fig.add_subplot(spec[0, k])
        if not ran[k]:
            mark_not_run(ax, f"{task.claim} {task.experiment}")
            continue
        _draw_psnr(ax, df, task)
        if grids[k]:
            _draw_grids(fig, spec[1, k], df, grids[k])
    if any(r and not g for r, g in zip(ran, grids, strict=True)):
        fig.text(
            0.01,
            0.005,
            "sample grids not found next to the results (see normexp.analysis.claims.bn_generation)",  # noqa: E501
            fontsize=8,
            color="#888888",
        )
    return save_figure(
        fig,
        out,
        "C6: does BN do poorly in pixel-level generation, and IN better? Restoration (C6a) and "
        "stylization (C6b) (anchor: Ulyanov et al. 2016, qualitative only)",
    )


def _ran(df: pd.DataFrame, metric: str = METRIC) -> bool:
    return col.has_rows(df, col.NORM, col.BATCH) and metric in df


def _gap(
    df: pd.DataFrame, batch: int, a: str = "instance", b: str = "batch", metric: str = METRIC
) -> tuple[float, float, float, int]:
    """Paired difference of ``a`` minus ``b`` ``metric`` (test PSNR) over seeds at ``batch``:
    (mean, lo, hi, n)."""
    first = by_seed(df, metric, {col.NORM: a, col.BATCH: batch})
    second = by_seed(df, metric, {col.NORM: b, col.BATCH: batch})
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
    """The rule's call from D at each batch size: BN beating IN at either contradicts, and the
    normal batch decides (at the small batch IN's lead could be BN's small-batch weakness)."""
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
    winners = {}
    for batch, c in cells.groupby("batch_size"):
        winners[int(batch)] = str(c.sort_values("psnr", ascending=False).iloc[0]["norm"])
    return winners


def _bn_batch_stats_psnr(df: pd.DataFrame, sizes: list[int]) -> dict[int, float]:
    """Per batch size, BN's mean test PSNR when test batches are normalized by their own
    statistics (instead of the running averages)."""
    stats = {}
    for b in sizes:
        per_seed = by_seed(df, col.TEST_PSNR_BATCH_STATS, {col.NORM: "batch", col.BATCH: b})
        if per_seed:
            stats[b] = sum(per_seed.values()) / len(per_seed)
    return stats


def _task_details(df: pd.DataFrame, sizes: list[int], parts: dict, small_gap: tuple) -> dict:
    """The task verdict's details: the calls per batch size, D at the small batch, BN against no
    norm, the per-cell PSNRs and their winners (C11 reads these), and the optional extras."""
    normal, small = sizes[-1], sizes[0]
    d_small, s_lo, s_hi, _ = small_gap
    cells = psnr_cells(df).dropna(subset=["psnr"])
    details = {
        "normal_batch": normal,
        "small_batch": small,
        "parts": parts,
        "in_minus_bn_at_small_db": _finite_or_none((d_small, s_lo, s_hi)),
        # BN against no normalization: does BN hurt, or only trail IN?
        "bn_minus_none_db": {
            b: _difference(df, b, "batch", "none") for b in sorted({small, normal})
        },
        "winner_by_batch": _winners(cells),  # norm with the highest mean test PSNR (C11 reads this)
        "mean_test_psnr_db": {
            f"{row.norm}@{row.batch_size}": round(float(row.psnr), 3) for row in cells.itertuples()
        },
    }
    if col.TEST_PSNR_BATCH_STATS in df:  # BN normalizing test batches by their own statistics
        details["bn_batch_stats_psnr_db"] = _bn_batch_stats_psnr(df, sizes)
    if col.first(df, col.INPUT_PSNR) is not None:
        details["input_psnr_db"] = float(col.first(df, col.INPUT_PSNR))
    return details


def task_verdict(df: pd.DataFrame, task: Task) -> dict:
    """The sub-verdict of one task (C6a or C6b) by the module's rule, as a complete verdict."""

    def verdict_of(result: str, effect: str, **fields: object) -> dict:
        return make_verdict(
            task.claim, task.experiment, result, effect, rule=CLAIM.rule, anchor=ANCHOR, **fields
        )

    if not _ran(df, task.metric):
        return verdict_of("not run yet", f"no finished runs of {task.experiment} in the store")
    both = df[df[col.NORM].isin(["batch", "instance"]) & (df[col.STATUS] == "ok")]
    sizes = sorted(int(b) for b in both[col.BATCH].unique())
    if not sizes:
        return verdict_of("not run yet", f"no finished BN or IN runs of {task.experiment}")
    normal, small = sizes[-1], sizes[0]
    normal_gap, small_gap = (_gap(df, b, metric=task.metric) for b in (normal, small))
    d_normal, n_lo, n_hi, n = normal_gap
    _, s_lo, s_hi, n_small = small_gap
    at_normal = decide(n_lo, n_hi, n)
    at_small = decide(s_lo, s_hi, n_small) if small != normal else at_normal
    parts = {"normal": at_normal, "small": at_small}
    return verdict_of(
        _task_call(at_normal, at_small),
        _task_effect(task.kind, sizes, normal_gap, small_gap),
        estimate=d_normal,
        ci=(n_lo, n_hi),
        notes=f"{failures(df)}; scope: {task.scope}",
        details=_task_details(df, sizes, parts, small_gap),
    )


def holds_for(subs: list[dict]) -> str:
    """In words, for which kinds of generation the advice holds, from the sub-verdicts."""
    kinds = {t.claim: t.kind for t in TASKS}
    phrases = {
        "supported": "the advice (IN over BN) holds for ",
        "contradicted": "BN beats IN in ",
        "inconclusive": "no clear IN-BN difference in ",
        "not run yet": "not run yet: ",
    }
    parts = []
    for verdict_value, phrase in phrases.items():
        kinds_here = [kinds[s["claim"]] for s in subs if s["verdict"] == verdict_value]
        if kinds_here:
            parts.append(phrase + " and ".join(kinds_here))
    return "; ".join(parts)


def verdict(tables: dict) -> dict:
    """C6 overall, which is its deciding task's verdict (C6b), with the complete sub-verdicts
    C6a and C6b in ``details["sub"]``."""
    subs = [task_verdict(col.table(tables, t.experiment), t) for t in TASKS]
    restoration, style = subs[0], subs[TASKS.index(DECIDING_TASK)]
    if all(s["verdict"] == "not run yet" for s in subs):
        return CLAIM.not_run_yet(f"no finished runs of {EXPERIMENT} or {STYLE_EXPERIMENT}")
    decided = [s["effect"] for s in subs if s["estimate"] is not None]
    effect = holds_for(subs) + (". " + "; ".join(decided) if decided else "")
    notes = "; ".join(f"{s['claim']}: {s['notes']}" for s in subs if s["notes"])
    # The headline keeps C6a's details at the top level, where other claims (C11) read them.
    details = {**restoration["details"], "sub": subs, "decided_by": DECIDING_TASK.claim}
    return CLAIM.verdict(
        style["verdict"],
        effect,
        estimate=style["estimate"],
        ci=tuple(style["ci"]) if style["ci"] is not None else None,
        notes=notes,
        details=details,
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
        "PSNR per norm and batch size; sample grids",
        ("bn_generation",),
        ("norm.name", "train.batch_size"),
        bars=("test/psnr",),
        curves=("val/psnr", "train/loss"),
        media=(next(iter(MEDIA_FILES)),),  # the sample grid each run logs
    ),
)
def deciding(tables: dict) -> dict:
    """The runs that decide C6: its deciding task's (the other task is reported beside it)."""
    return {DECIDING_TASK.experiment: col.table(tables, DECIDING_TASK.experiment)}


# How C6 scores a norm, read by C11's generation row through the registry.
SCORE = Score(
    DECIDING_TASK.experiment,
    DECIDING_TASK.metric,
    higher_is_better=True,
    unit=DECIDING_TASK.unit,
    what=f"{DECIDING_TASK.kind.split(' (')[0]}, CIFAR-10 image-to-image",
)
ANALYSIS = CLAIM.analysis(
    "BN does poorly in pixel-level generation; prefer IN",
    (EXPERIMENT, STYLE_EXPERIMENT),
    draw,
    verdict,
    deciding,
    quote=QUOTE,
    dashboard=DASHBOARD,
    score=SCORE,
)
