"""Helpers the claim analyses share: per-seed values pooled over cells, CIs of paired
differences, and details made safe for JSON."""

import math
from collections.abc import Iterable, Mapping

import pandas as pd

from normexp.analysis import columns as col
from normexp.analysis.stats import mean_ci, t_test_p
from normexp.analysis.verdict import by_seed, call


def pooled_by_seed(
    df: pd.DataFrame,
    value: str,
    over: str,
    levels: Iterable,
    where: Mapping[str, object] | None = None,
) -> dict[int, float]:
    """{seed: mean of ``value`` over the ``levels`` of column ``over``} for finished runs matching
    ``where``; a seed counts only if it has every level, so each seed's mean is over the same
    cells (what a paired difference needs)."""
    per_level = [by_seed(df, value, {over: lv, **(where or {})}) for lv in levels]
    if not per_level:
        return {}
    seeds = set.intersection(*(set(p) for p in per_level))
    return {s: sum(p[s] for p in per_level) / len(per_level) for s in sorted(seeds)}


def batch_cells(
    df: pd.DataFrame, metric: str, name: str, key: str = col.NORM, scale: float = 1.0
) -> pd.DataFrame:
    """One row per (``key``, batch size): ``name`` = mean of scale × ``metric`` over finished
    runs, with its 95% CI (``lo``, ``hi``), ``seeds`` (finished runs) and ``failed`` (runs not
    ok: diverged, failed or unfinished)."""
    rows = []
    for (level, batch), cell in df.groupby([key, col.BATCH]):
        ok = cell[cell[col.STATUS] == "ok"]
        mean, lo, hi = mean_ci(list(scale * ok[metric].dropna()))
        rows.append(
            {
                "norm": level,
                "batch_size": int(batch),
                name: mean,
                "lo": lo,
                "hi": hi,
                "seeds": len(ok),
                "failed": int((cell[col.STATUS] != "ok").sum()),
            }
        )
    return pd.DataFrame(rows)


def gap(a: Mapping[int, float], b: Mapping[int, float], scale: float = 100) -> dict[int, float]:
    """{seed: scale × (a − b)} over the seeds both have (fractions to percentage points)."""
    return {s: scale * (a[s] - b[s]) for s in set(a) & set(b)}


def against_zero(d: Mapping[int, float]) -> dict:
    """``difference`` of per-seed values from 0: their mean and 95% CI, decided for > 0."""
    return difference(d, dict.fromkeys(d, 0.0))


def difference(
    a: Mapping[int, float],
    b: Mapping[int, float],
    scale: float = 1.0,
    claimed_sign: int = 1,
    null: float = 0.0,
) -> dict:
    """a − b (times a positive ``scale``) paired by seed, as a test (see the verdict package's
    doc): mean, 95% CI, seeds, the paired t-test's two-sided p of mean = ``null`` (in scaled
    units), the claimed ``sign`` of mean − null, and the unadjusted call (``holm_family``
    redecides it in a family)."""
    seeds = sorted(set(a) & set(b))
    diffs = [scale * (a[s] - b[s]) for s in seeds]
    mean, lo, hi = mean_ci(diffs)
    test = {
        "mean": mean,
        "ci": [lo, hi],
        "seeds": len(diffs),
        "p": t_test_p(diffs, null),
        "sign": claimed_sign,
        "null": null,
    }
    test["decision"] = call(test, test["p"])
    return test


def cell_stats(values: Iterable[float], scale: float = 1.0) -> tuple[float, float, float, int]:
    """(mean, lo, hi, n) of ``values`` times ``scale``."""
    vals = [scale * v for v in values]
    mean, lo, hi = mean_ci(vals)
    return mean, lo, hi, len(vals)


def fmt_ci(d: Mapping, unit: str = "pp") -> str:
    """'+1.2 pp [+0.3, +2.1]' from a ``difference`` dict."""
    lo, hi = d["ci"]
    return f"{d['mean']:+.1f} {unit} [{lo:+.1f}, {hi:+.1f}]"


def json_safe(obj: object) -> object:
    """Details as JSON allows them: NaN/inf become None, tuples lists, numpy scalars Python."""
    if isinstance(obj, Mapping):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, str):  # numpy scalar
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
