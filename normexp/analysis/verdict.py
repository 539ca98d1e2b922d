"""Verdicts: one dict per claim, the same keys for every claim.

``claim``, ``experiment``, ``verdict`` (one of VERDICTS), ``effect`` (a sentence with units),
``estimate`` and ``ci`` (the effect size and its 95% CI over seeds, or None with ``ci_note``),
``rule`` (the decision rule as written in the analysis module), ``anchor`` (published numbers
to compare with), ``notes`` (failures, scale caveats), ``details`` (anything else).
"""

import math
from collections.abc import Mapping

import pandas as pd

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

    def finite(v: float | None) -> float | None:  # JSON has no NaN: no estimate is None
        return None if v is None or not math.isfinite(v) else float(v)

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


def not_run_yet(claim: str, experiment: str, *, rule: str, anchor: str, what: str = "") -> dict:
    return make_verdict(
        claim,
        experiment,
        "not run yet",
        what or f"no finished runs of {experiment} in the store",
        rule=rule,
        anchor=anchor,
    )


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


def by_seed(df: pd.DataFrame, value: str, **where: object) -> dict[int, float]:
    """{seed: value} for finished (status ok) runs matching ``where`` (dotted column names)."""
    if df.empty or value not in df:
        return {}
    mask = df["status"] == "ok"
    for column, wanted in where.items():
        column = column.replace("__", ".")
        if column not in df:
            return {}
        mask &= df[column] == wanted
    rows = df[mask]
    return {int(s): float(v) for s, v in zip(rows["seed"], rows[value], strict=True)}


def failures(df: pd.DataFrame) -> str:
    """A sentence on diverged/failed runs, which count as failed configurations."""
    if df.empty:
        return ""
    bad = df[df["status"].isin(["diverged", "failed"])]
    unfinished = int((df["status"] == "running").sum())
    text = "no diverged or failed runs"
    if not bad.empty:
        counts = bad["status"].value_counts().to_dict()
        text = "; ".join(f"{n} {s}" for s, n in counts.items()) + " (counted as failures)"
    if unfinished:
        text += f"; {unfinished} unfinished (interrupted, not counted)"
    return text
