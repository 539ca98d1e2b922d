"""C6 bn_generation: test PSNR per norm of a generator that undoes per-image contrast / colour
changes of CIFAR-10 images, at a small and a normal batch size, with sample grids.

Verdict rule. With D(b) = PSNR_IN(b) − PSNR_BN(b), the test PSNR in dB (BN as deployed, with its
running averages), paired by seed, at the largest batch size of the grid (the normal one, BN's
best case) and at the smallest: *supported* if the 95% CI over seeds of D at the normal batch
lies above 0 and that of D at the small batch does not lie below 0; *contradicted* if the CI of
D lies below 0 at either batch size (BN beats IN); *inconclusive* otherwise. The normal batch
decides: the claim is about generation, and at the small batch IN beating BN would also follow
from BN's small-batch weakness (claim C4). The estimate is D at the normal batch, in dB.

Sample grids: each run writes ``samples.png`` into its run folder and names it in the summary
(``sample_grid``); the collected table holds only ``run_key``. The figure looks for
``<results>/<profile>/runs/bn_generation/<run_key>/samples.png`` in the profile's folder its
caller passes (``draw(..., results_dir=...)``); without one, or for a grid that is not found,
the grids are left out of the figure with a note (the verdict never needs them).
"""

import math
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from normexp.analysis import columns as col
from normexp.analysis.claims import Claim
from normexp.analysis.paired import batch_cells
from normexp.analysis.style import mark_not_run, norm_color, norm_label, save_figure
from normexp.analysis.verdict import by_seed, decide, failures, paired_difference
from normexp.tracking.store import RunRecord

# What differs from the anchor's setting, stated with every verdict.
SCOPE = (
    "scope: this task restores each image's own contrast and colour, so the output depends on "
    "per-image statistics of the input, which IN removes at every layer; in the anchor's "
    "stylization the output statistics come from the style, not from the content image, which "
    "is where discarding them helps. The verdict is about restoration-type pixel generation"
)
EXPERIMENT = "bn_generation"
METRIC = col.TEST_PSNR
ANCHOR = (
    "Ulyanov, Vedaldi & Lempitsky 2016 (Instance Normalization: The Missing Ingredient for Fast "
    "Stylization): replacing BN by IN in feed-forward stylization generators visibly improves "
    "the stylized images; the evidence is qualitative (image comparisons), so no PSNR or other "
    "number comparable with this task exists"
)
CLAIM = Claim.from_doc("C6", EXPERIMENT, ANCHOR, __doc__, end="Sample grids:")
NORM_ORDER = ("batch", "instance", "layer", "group", "none")
GRID_IMAGES = 4  # images of each run's sample grid shown in the figure
GRID_GAP, GRID_SIDE = 2, 32  # the layout of samples.png (see normexp.train.image_to_image)


def psnr_cells(df: pd.DataFrame, metric: str = METRIC) -> pd.DataFrame:
    """Mean ``metric`` (``psnr``) with 95% CI over seeds per (norm, batch size), from finished
    runs; ``failed`` counts diverged/failed runs of the cell."""
    return batch_cells(df, metric, "psnr")


def _ordered(norms: set) -> list[str]:
    return [n for n in NORM_ORDER if n in norms] + sorted(norms - set(NORM_ORDER))


def sample_grid_paths(df: pd.DataFrame, results_dir: Path | None) -> dict[tuple[str, int], Path]:
    """{(norm, batch size): samples.png of its lowest-seed finished run}, where the file exists."""
    if results_dir is None or df.empty or col.SAMPLE_GRID not in df:
        return {}
    ok = df[(df[col.STATUS] == "ok") & df[col.SAMPLE_GRID].notna()].sort_values(col.SEED)
    found = {}
    for (norm, batch), cell in ok.groupby([col.NORM, col.BATCH]):
        row = cell.iloc[0]
        run = RunRecord(results_dir, EXPERIMENT, str(row[col.RUN_KEY]))
        path = run.path / str(row[col.SAMPLE_GRID])
        if path.is_file():
            found[(norm, int(batch))] = path
    return found


def _draw_psnr(ax, df: pd.DataFrame) -> None:  # noqa: ANN001 - a matplotlib Axes
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
            label="corrupted input (no restoration)",
        )
    ax.set_xticks(range(len(norms)), [norm_label(n) for n in norms])
    ax.set_xlim(-0.6, len(norms) - 0.4)
    ax.set_ylabel("test PSNR (dB, higher is better)")
    seeds = int(cells["seeds"].max()) if not cells.empty else 0
    profile, n_train = col.first(df, col.PROFILE, "?"), col.first(df, col.N_TRAIN, 0)
    ax.set_title(
        f"Ours: undo per-image contrast/colour on CIFAR-10, {profile} profile "
        f"({int(n_train)} train images), mean and 95% CI over {seeds} seed(s)",
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
    df = col.table(tables, EXPERIMENT)
    ran = _ran(df)
    grids = sample_grid_paths(df, results_dir) if ran else {}
    fig = plt.figure(figsize=(11, 7.8 if grids else 4.6), constrained_layout=True)
    spec = fig.add_gridspec(2 if grids else 1, 1, height_ratios=[1.3, 1] if grids else [1])
    ax = fig.add_subplot(spec[0])
    if not ran:
        mark_not_run(ax, EXPERIMENT)
    else:
        _draw_psnr(ax, df)
        if grids:
            _draw_grids(fig, spec[1], df, grids)
        else:
            fig.text(
                0.01,
                0.01,
                "sample grids not found next to the results (see normexp.analysis.bn_generation)",
                fontsize=8,
                color="#888888",
            )
    return save_figure(
        fig,
        out,
        "C6: does BN do poorly in pixel-level generation, and IN better? "
        "(anchor: Ulyanov et al. 2016, qualitative only)",
    )


def _ran(df: pd.DataFrame) -> bool:
    return col.has_rows(df, col.NORM, col.BATCH) and METRIC in df


def _gap(df: pd.DataFrame, batch: int) -> tuple[float, float, float, int]:
    inorm = by_seed(df, METRIC, {col.NORM: "instance", col.BATCH: batch})
    bn = by_seed(df, METRIC, {col.NORM: "batch", col.BATCH: batch})
    return paired_difference(inorm, bn)


def verdict(tables: dict) -> dict:
    df = col.table(tables, EXPERIMENT)
    if not _ran(df):
        return CLAIM.not_run_yet()
    both = df[df[col.NORM].isin(["batch", "instance"]) & (df[col.STATUS] == "ok")]
    sizes = sorted(int(b) for b in both[col.BATCH].unique())
    if not sizes:
        return CLAIM.not_run_yet("no finished BN or IN runs")
    normal, small = sizes[-1], sizes[0]
    d_normal, n_lo, n_hi, n = _gap(df, normal)
    d_small, s_lo, s_hi, n_small = _gap(df, small)
    at_normal = decide(n_lo, n_hi, n)
    at_small = decide(s_lo, s_hi, n_small) if small != normal else at_normal
    if "contradicted" in (at_normal, at_small):
        result = "contradicted"
    elif at_normal == "supported":
        result = "supported"
    else:
        result = "inconclusive"
    effect = (
        f"IN minus BN test PSNR: {d_normal:+.2f} dB [{n_lo:+.2f}, {n_hi:+.2f}] at batch {normal}"
    )
    if small != normal:
        effect += f", {d_small:+.2f} dB [{s_lo:+.2f}, {s_hi:+.2f}] at batch {small}"
    effect += f" ({n} seeds)"
    cells = psnr_cells(df)
    winners = {}
    for batch, c in cells.dropna(subset=["psnr"]).groupby("batch_size"):
        winners[int(batch)] = str(c.sort_values("psnr", ascending=False).iloc[0]["norm"])
    means = {
        f"{row.norm}@{row.batch_size}": round(float(row.psnr), 3)
        for row in cells.dropna(subset=["psnr"]).itertuples()
    }
    details = {
        "normal_batch": normal,
        "small_batch": small,
        "parts": {"normal": at_normal, "small": at_small},
        "in_minus_bn_at_small_db": [None if math.isnan(v) else v for v in (d_small, s_lo, s_hi)],
        "winner_by_batch": winners,  # norm with the highest mean test PSNR (C11 reads this)
        "mean_test_psnr_db": means,
    }
    if col.TEST_PSNR_BATCH_STATS in df:  # BN normalizing test batches by their own statistics
        stats = {}
        for b in sizes:
            where = {col.NORM: "batch", col.BATCH: b}
            per_seed = by_seed(df, col.TEST_PSNR_BATCH_STATS, where)
            if per_seed:
                stats[b] = sum(per_seed.values()) / len(per_seed)
        details["bn_batch_stats_psnr_db"] = stats
    if col.first(df, col.INPUT_PSNR) is not None:
        details["input_psnr_db"] = float(col.first(df, col.INPUT_PSNR))
    return CLAIM.verdict(
        result,
        effect,
        estimate=d_normal,
        ci=(n_lo, n_hi),
        notes=f"{failures(df)}; {SCOPE}",
        details=details,
    )


ANALYSIS = CLAIM.analysis(
    "BN does poorly in pixel-level generation; prefer IN", (EXPERIMENT,), draw, verdict
)
