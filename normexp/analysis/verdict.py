"""Verdicts: one dict per claim, the same keys for every claim.

``claim``, ``experiment``, ``verdict`` (one of VERDICTS), ``effect`` (a sentence with units),
``estimate`` and ``ci`` (the effect size and its 95% CI over seeds, or None with ``ci_note``),
``rule`` (the decision rule as written in the analysis module), ``anchor`` (published numbers
to compare with), ``notes`` (failures, scale caveats), ``details`` (anything else).
"""

import math
import numbers
from collections.abc import Iterable, Mapping

import pandas as pd

from normexp.analysis import columns as col
from normexp.analysis.columns import require
from normexp.analysis.stats import mean_ci

VERDICTS = ("supported", "contradicted", "inconclusive", "not run yet")


def make_verdict(
    claim: str,
    experiment: str,
    verdict: str,
    effect: str,
    *,
    rule: str,
    anchor: str,
    estimate: float | None = None,
    ci: tuple[float, float] | None = None,
    notes: str = "",
    details: Mapping | None = None,
    ci_note: str = "",
) -> dict:
    assert verdict in VERDICTS, verdict
    estimate = finite(estimate)
    ci = None if ci is None or any(finite(v) is None for v in ci) else ci
    return {
        "claim": claim,
        "experiment": experiment,
        "verdict": verdict,
        "effect": effect,
        "estimate": estimate,
        "ci": list(ci) if ci is not None else None,
        "ci_note": ci_note,
        "rule": " ".join(rule.split()),
        "anchor": anchor,
        "notes": notes,
        "details": dict(details or {}),
    }


def finite(v: object) -> float | None:
    """``v`` as a float; None when missing, NaN or infinite (JSON has no NaN)."""
    return float(v) if isinstance(v, numbers.Real) and math.isfinite(v) else None


def join_notes(*parts: str) -> str:
    """The non-empty notes, joined by '; '."""
    return "; ".join(p for p in parts if p)


def paired_difference(
    a: Mapping[int, float], b: Mapping[int, float]
) -> tuple[float, float, float, int]:
    """Mean of a[s] − b[s] over the seeds s both have, with its 95% CI: (mean, lo, hi, n)."""
    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    mean, lo, hi = mean_ci(diffs)
    return mean, lo, hi, len(diffs)


def decide(lo: float, hi: float, n: int, claimed_sign: int = 1) -> str:
    """supported if the CI lies on the claimed side of zero, contradicted if on the other side,
    inconclusive if it straddles zero or fewer than 2 seeds give no spread to judge."""
    if n < 2 or math.isnan(lo) or math.isnan(hi):
        return "inconclusive"
    lo, hi = sorted((claimed_sign * lo, claimed_sign * hi))
    if lo > 0:
        return "supported"
    if hi < 0:
        return "contradicted"
    return "inconclusive"


def by_seed(
    df: pd.DataFrame, value: str, where: Mapping[str, object] | None = None
) -> dict[int, float]:
    """{seed: value} for finished (status ok) runs whose columns equal ``where`` ({column:
    wanted}); {} for a table without rows, MissingColumnError for one without a named column."""
    where = dict(where or {})
    if df.empty:
        return {}
    require(df, (col.STATUS, col.SEED, value, *where))
    mask = df[col.STATUS] == "ok"
    for column, wanted in where.items():
        mask &= df[column] == wanted
    rows = df[mask]
    return {int(s): float(v) for s, v in zip(rows[col.SEED], rows[value], strict=True)}


def all_parts(parts: Iterable[str]) -> str:
    """A claim that needs every part: contradicted if any part is, supported if all are,
    inconclusive otherwise (a part not run yet included)."""
    parts = list(parts)
    if "contradicted" in parts:
        return "contradicted"
    if all(p == "supported" for p in parts):
        return "supported"
    return "inconclusive"


def failures(df: pd.DataFrame) -> str:
    """A sentence on diverged/failed runs, which count as failed configurations."""
    if df.empty:
        return ""
    bad = df[df[col.STATUS].isin(["diverged", "failed"])]
    unfinished = int((df[col.STATUS] == "running").sum())
    text = "no diverged or failed runs"
    if not bad.empty:
        counts = bad[col.STATUS].value_counts().to_dict()
        text = "; ".join(f"{n} {s}" for s, n in counts.items()) + " (counted as failures)"
    if unfinished:
        text += f"; {unfinished} unfinished (interrupted, not counted)"
    return text
