"""C4 bn_small_batch: test error vs batch size per norm (plain protocol: SGD batch = BN batch)."""

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from normexp.analysis.stats import mean_ci
from normexp.analysis.style import norm_color, norm_label, not_run_yet

EXPERIMENT = "bn_small_batch"
# Wu & He 2018 (Group Normalization), ResNet-50 on ImageNet, top-1 error (%) by images per GPU.
ANCHOR_GN_PAPER = {
    "batch": {32: 23.6, 16: 23.7, 8: 24.8, 4: 27.3, 2: 34.7},
    "group": {32: 24.1, 16: 24.2, 8: 24.0, 4: 24.2, 2: 24.1},
}
NORM_ORDER = ("batch", "group", "layer", "instance", "none")


def error_by_batch(df: pd.DataFrame) -> pd.DataFrame:
    """Mean test error (%) with 95% CI over seeds per (norm, batch size), from finished runs;
    ``failed`` counts diverged/failed runs of the cell, which count as failures."""
    rows = []
    for (norm, batch), cell in df.groupby(["norm.name", "train.batch_size"]):
        ok = cell[cell["status"] == "ok"]
        mean, lo, hi = mean_ci(list(100 * ok["test_err"]))
        rows.append(
            {
                "norm": norm,
                "batch_size": int(batch),
                "err": mean,
                "lo": lo,
                "hi": hi,
                "seeds": len(ok),
                "failed": int((cell["status"] != "ok").sum()),
            }
        )
    return pd.DataFrame(rows)


def draw(df: pd.DataFrame, out: Path) -> Path:
    fig, (ax, ax_ref) = plt.subplots(
        1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [1.6, 1]}, constrained_layout=True
    )
    if df.empty or "test_err" not in df:
        not_run_yet(ax, EXPERIMENT)
    else:
        cells = error_by_batch(df)
        norms = [n for n in NORM_ORDER if n in set(cells["norm"])]
        norms += sorted(set(cells["norm"]) - set(norms))
        for norm in norms:
            c = cells[cells["norm"] == norm].sort_values("batch_size")
            color = norm_color(norm)
            ax.plot(c["batch_size"], c["err"], "o-", color=color, label=norm_label(norm), lw=1.8)
            ax.fill_between(c["batch_size"], c["lo"], c["hi"], color=color, alpha=0.18, lw=0)
            bad = c[c["failed"] > 0]
            ax.plot(bad["batch_size"], bad["err"], "x", color="black", ms=9)
        ax.set_xscale("log", base=2)
        sizes = sorted(cells["batch_size"].unique())
        ax.set_xticks(sizes, [str(s) for s in sizes])
        seeds = int(cells["seeds"].max())
        profile = df["profile"].iloc[0] if "profile" in df else "?"
        n_train = df["n_train"].dropna().iloc[0] if "n_train" in df else "?"
        ax.set_title(
            f"Ours: CIFAR-10 CNN, {profile} profile ({int(n_train)} train images), "
            f"mean and 95% CI over {seeds} seed(s)",
            fontsize=10,
        )
        ax.set_xlabel("batch size (= BN batch)")
        ax.set_ylabel("test error (%)")
        ax.grid(alpha=0.3)
        ax.legend(frameon=False)
    for norm, errs in ANCHOR_GN_PAPER.items():
        sizes = sorted(errs)
        ax_ref.plot(
            sizes, [errs[s] for s in sizes], "s--", color=norm_color(norm), label=norm_label(norm)
        )
    ax_ref.set_xscale("log", base=2)
    ax_ref.set_xticks(sorted(ANCHOR_GN_PAPER["batch"]), ["32", "16", "8", "4", "2"][::-1])
    ax_ref.set_title("Anchor: GN paper, ResNet-50 ImageNet (one run each)", fontsize=10)
    ax_ref.set_xlabel("images per GPU")
    ax_ref.set_ylabel("top-1 error (%)")
    ax_ref.grid(alpha=0.3)
    ax_ref.legend(frameon=False)
    fig.suptitle("C4: does BN degrade at small batch sizes, and does GN not?", fontsize=12)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130)
    plt.close(fig)
    return out
