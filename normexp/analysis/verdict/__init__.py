"""Verdicts: one dict per claim, the same keys for every claim.

``claim``, ``experiment``, ``verdict`` (one of VERDICTS), ``effect`` (a sentence with units),
``estimate`` and ``ci`` (the effect size and its 95% CI over seeds, or None with ``ci_note``),
``rule`` (the decision rule as written in the analysis module), ``anchor`` (published numbers
to compare with), ``notes`` (failures, scale caveats), ``details`` (anything else).

Sub-claims. Where the blog makes several statements in one sentence, the verdict has ``sub``: a
list of sub-verdicts (``sub_verdict``), one per statement, each with its own call and the
statistic that decided it: ``id`` ("C4a"), ``statement`` (the blog's words), ``verdict``,
``statistic`` (what was tested, in words, with its unit), ``estimate``, ``ci`` (95%, over
seeds, not adjusted), ``p_holm`` (the Holm-adjusted p of the deciding test, None without one),
``seeds`` and ``note``. The claim's own ``verdict`` is then the summary ``all_parts`` gives:
supported iff every sub-claim is, contradicted if any is, inconclusive otherwise. The report's
top table has one row per sub-claim (one row for a claim without ``sub``). Any claim module can
produce this format: build each sub-verdict with ``sub_verdict`` and pass ``sub=[...]`` to
``make_verdict`` / ``Claim.verdict``.

Tests and Holm. A test is a dict (``paired.difference``): ``mean``, ``ci``, ``seeds``, ``p``
(two-sided paired t-test over seeds of mean = ``null``), ``sign`` (the claimed side: +1 or −1),
``null`` and ``decision``. ``holm_family`` applies Holm's step-down procedure to all the tests
of one claim (its family), adds ``p_holm`` to each and redecides it with ``call``: supported if
the adjusted test rejects the null with the estimate on the claimed side, contradicted if it
rejects with the estimate on the other side, inconclusive otherwise (and below 2 seeds).
"""

import math
import numbers
from collections.abc import Iterable, Mapping

import pandas as pd

from normexp.analysis import columns as col
from normexp.analysis.columns import require
from normexp.analysis.stats import holm_adjusted, mean_ci
from normexp.analysis.verdict.convergence import short
from normexp.metrics import CHANCE_MARGIN, did_not_train

VERDICTS = ("supported", "contradicted", "inconclusive", "not run yet")
ALPHA = 0.05  # family-wise error rate of each claim's tests (Holm)


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
    sub: list[dict] | None = None,
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
        **({"sub": list(sub)} if sub else {}),
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


def ok_mask(df: pd.DataFrame, where: Mapping[str, object] | None = None) -> pd.Series:
    """The rows of finished (status ok) runs whose columns equal ``where`` ({column: wanted});
    MissingColumnError for a table without a named column."""
    where = dict(where or {})
    require(df, (col.STATUS, *where))
    mask = df[col.STATUS] == "ok"
    for column, wanted in where.items():
        mask &= df[column] == wanted
    return mask


def by_seed(
    df: pd.DataFrame, value: str, where: Mapping[str, object] | None = None
) -> dict[int, float]:
    """{seed: value} for finished (status ok) runs whose columns equal ``where`` ({column:
    wanted}); {} for a table without rows, MissingColumnError for one without a named column."""
    if df.empty:
        return {}
    require(df, (col.SEED, value))
    rows = df.loc[ok_mask(df, where), [col.SEED, value]]  # two columns, not a copy of every one
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


NAMED_BY = (col.MODEL, col.NORM, col.POSITION, col.ACTIVATION, col.BATCH, col.LR, col.SEED)


def chance_note(df: pd.DataFrame) -> str:
    """The finished runs of record of one classification table that ended at chance
    (``did_not_train``; derived from the final val_acc for runs from before the flag), by cell:
    the report names them where it says what was run (they stay in the statistics as the runs
    they are)."""
    df = col.table({"x": df}, "x")
    if "val_acc" not in df:
        return ""
    ok = df[df[col.STATUS] == "ok"]
    stuck = ok["val_acc"].map(lambda v: v == v and did_not_train(float(v))).astype(bool)
    if "did_not_train" in ok:
        stuck |= ok["did_not_train"].fillna(False).astype(bool)
    stuck = ok[stuck]
    if stuck.empty:
        return ""
    named = [c for c in NAMED_BY if c in df and (df[c].nunique() > 1 or c == col.SEED)]
    cells = "; ".join(
        ", ".join(f"{short(c)}={r[c]}" for c in named) for _, r in stuck.iterrows()
    )
    return (
        f"{len(stuck)} run(s) did not train (final validation accuracy within "
        f"{100 * CHANCE_MARGIN:g} pp of chance; kept in the statistics): {cells}"
    )


def call(test: Mapping, p: float, alpha: float = ALPHA) -> str:
    """The call of one test at (adjusted) p-value ``p``: supported if ``p`` <= ``alpha`` and the
    estimate lies on the test's claimed side of its null, contradicted if on the other side,
    inconclusive otherwise (no p: fewer than 2 seeds)."""
    mean = test.get("mean")
    if p is None or mean is None or math.isnan(p) or math.isnan(mean) or p > alpha:
        return "inconclusive"
    side = test.get("sign", 1) * (mean - test.get("null", 0.0))
    if side > 0:
        return "supported"
    return "contradicted" if side < 0 else "inconclusive"


def holm_family(tests: Iterable[dict], alpha: float = ALPHA) -> list[dict]:
    """Holm over one claim's tests (in place): each gets ``p_holm`` and its ``decision`` from it."""
    tests = list(tests)
    for test, p in zip(tests, holm_adjusted([t["p"] for t in tests]), strict=True):
        test["p_holm"] = p
        test["decision"] = call(test, p, alpha)
    return tests


def conjunction(tests: Mapping[str, dict]) -> tuple[str, str | None]:
    """A statement that needs every test: (call, the name of the test that decided it).
    Contradicted by the first contradicted test; supported if all are, decided by the weakest
    (largest Holm p); inconclusive otherwise, decided by the first test not supported."""
    if not tests:
        return "not run yet", None
    for name, t in tests.items():
        if t["decision"] == "contradicted":
            return "contradicted", name
    open_ = [n for n, t in tests.items() if t["decision"] != "supported"]
    if open_:
        return "inconclusive", open_[0]
    return "supported", max(tests, key=lambda n: tests[n].get("p_holm", tests[n]["p"]))


def sub_verdict(
    id: str,  # noqa: A002
    statement: str,
    verdict: str,
    statistic: str,
    test: Mapping | None = None,
    note: str = "",
) -> dict:
    """One sub-claim's verdict (see the module doc), decided by ``test`` (a ``difference``)."""
    assert verdict in VERDICTS, verdict
    ci = None if test is None else test.get("ci")
    ci = None if ci is None or any(finite(v) is None for v in ci) else [float(v) for v in ci]
    return {
        "id": id,
        "statement": statement,
        "verdict": verdict,
        "statistic": statistic,
        "estimate": None if test is None else finite(test.get("mean")),
        "ci": ci,
        "p_holm": None if test is None else finite(test.get("p_holm", test.get("p"))),
        "seeds": 0 if test is None else int(test.get("seeds", 0)),
        "note": note,
    }
