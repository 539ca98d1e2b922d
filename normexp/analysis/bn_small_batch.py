"""C4 bn_small_batch: test error vs batch size per norm (plain protocol: SGD batch = BN batch).

Verdict rule. With D(b) = err_BN(b) − err_GN(b), paired by seed, at the smallest batch size
b_s of the grid and at the reference batch b_r = 32 (the GN paper's; else the largest ≤ 32):
(a) "BN degrades at very small batches": D(b_s) − D(b_r) > 0, i.e. BN loses more than GN when
the batch shrinks (measured against GN, because with a fixed number of epochs a smaller batch
also means more steps, which moves every norm); (b) "GN is the choice for tiny batches":
D(b_s) > 0. *supported* if the 95% CIs over seeds of both lie above 0; *contradicted* if either
lies below 0; *inconclusive* otherwise. The estimate is (a), in percentage points of test error.
"""

from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from normexp.analysis.claims import ClaimAnalysis
from normexp.analysis.stats import mean_ci
from normexp.analysis.style import norm_color, norm_label, not_run_yet
from normexp.analysis.verdict import by_seed, decide, failures, make_verdict, paired_difference
from normexp.analysis.verdict import not_run_yet as no_runs

CLAIM = "C4"
EXPERIMENT = "bn_small_batch"
REFERENCE_BATCH = 32
ANCHOR = (
    "GN paper, ResNet-50 ImageNet top-1 error at 32/16/8/4/2 images per GPU: "
    "BN 23.6/23.7/24.8/27.3/34.7, GN 24.1/24.2/24.0/24.2/24.1 (one run each)"
)
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


def draw(tables: dict, out: Path) -> Path:
    df = tables.get(EXPERIMENT, pd.DataFrame())
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


def _plain(df: pd.DataFrame) -> pd.DataFrame:
    """Runs of the plain protocol (BN statistics over the whole SGD batch)."""
    return df[df["norm.name"].isin(["batch", "group"])]


def verdict(tables: dict) -> dict:
    rule = __doc__.split("Verdict rule.")[1]
    df = tables.get(EXPERIMENT, pd.DataFrame())
    if df.empty or "test_err" not in df:
        return no_runs(CLAIM, EXPERIMENT, rule=rule, anchor=ANCHOR)
    plain = _plain(df)
    sizes = sorted(int(b) for b in plain["train.batch_size"].unique())
    if len(sizes) < 2:
        return no_runs(
            CLAIM,
            EXPERIMENT,
            rule=rule,
            anchor=ANCHOR,
            what="BN and GN need at least two batch sizes",
        )
    small = sizes[0]
    ref = max([b for b in sizes if b <= REFERENCE_BATCH and b > small] or sizes[-1:])

    def gap(batch: int) -> dict[int, float]:
        bn = by_seed(plain, "test_err", norm__name="batch", train__batch_size=batch)
        gn = by_seed(plain, "test_err", norm__name="group", train__batch_size=batch)
        return {s: 100 * (bn[s] - gn[s]) for s in set(bn) & set(gn)}

    d_small, d_ref = gap(small), gap(ref)
    inter, i_lo, i_hi, n = paired_difference(d_small, d_ref)
    tiny, t_lo, t_hi, n_tiny = paired_difference(d_small, dict.fromkeys(d_small, 0.0))
    parts = [decide(i_lo, i_hi, n), decide(t_lo, t_hi, n_tiny)]
    if "contradicted" in parts:
        result = "contradicted"
    elif parts == ["supported", "supported"]:
        result = "supported"
    else:
        result = "inconclusive"
    effect = (
        f"BN minus GN test error grows by {inter:+.1f} pp [{i_lo:+.1f}, {i_hi:+.1f}] from batch "
        f"{ref} to batch {small}; at batch {small} BN trails GN by {tiny:+.1f} pp "
        f"[{t_lo:+.1f}, {t_hi:+.1f}] ({n} seeds)"
    )
    return make_verdict(
        CLAIM,
        EXPERIMENT,
        result,
        effect,
        rule=rule,
        anchor=ANCHOR,
        estimate=inter,
        ci=(i_lo, i_hi),
        notes=failures(df),
        details={
            "small_batch": small,
            "reference_batch": ref,
            "parts": parts,
            "bn_minus_gn_at_small_pp": [tiny, t_lo, t_hi],
        },
    )


ANALYSIS = ClaimAnalysis(
    claim=CLAIM,
    name=EXPERIMENT,
    title="BN degrades at tiny batches; GN is the choice there",
    reads=(EXPERIMENT,),
    draw=draw,
    verdict=verdict,
)
