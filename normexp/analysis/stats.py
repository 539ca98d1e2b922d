"""Statistics over seeds: means with 95% confidence intervals (Student t)."""

import math
from collections.abc import Sequence

from scipy import stats


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high); one value gives an interval of zero width (no spread measured)."""
    n = len(values)
    if n == 0:
        return (math.nan, math.nan, math.nan)
    mean = sum(values) / n
    if n == 1:
        return (mean, mean, mean)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = stats.t.ppf(0.5 + level / 2, n - 1) * sd / math.sqrt(n)
    return (mean, mean - half, mean + half)


def t_test_p(values: Sequence[float], null: float = 0.0) -> float:
    """Two-sided p-value of the one-sample t-test of mean(values) = ``null`` (for paired
    differences over seeds: the paired t-test); NaN below 2 values. Values without spread give
    0 when they all differ from ``null`` and 1 when they equal it (the t statistic is ±inf or
    undefined there, which scipy reports as NaN)."""
    n = len(values)
    if n < 2:
        return math.nan
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    if sd == 0:
        return 0.0 if mean != null else 1.0
    t = (mean - null) / (sd / math.sqrt(n))
    return float(2 * stats.t.sf(abs(t), n - 1))


def holm_adjusted(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the input order. A NaN p (a test that could not be
    computed) stays NaN but still counts in the family size m: the family is what was planned,
    not what happened to be measurable."""
    m = len(p_values)
    order = sorted((i for i in range(m) if not math.isnan(p_values[i])), key=lambda i: p_values[i])
    adjusted = [math.nan] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def holm(p_values: Sequence[float], alpha: float = 0.05) -> list[bool]:
    """Which hypotheses Holm's procedure rejects at family-wise error ``alpha``, in input order."""
    return [not math.isnan(p) and p <= alpha for p in holm_adjusted(p_values)]
