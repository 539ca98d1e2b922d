"""The report's account of damaged runs: runs whose files failed the store's check, left out of
the tables (so out of every figure and verdict) until a sweep retrains them. Nothing is added to
the report when there are none, so a clean store's report is unchanged."""

import html
from collections.abc import Sequence

from normexp.analysis.verdict.spec import ClaimAnalysis
from normexp.tracking.collect import DamagedRun

TITLE = "Damaged runs (left out)"
ANCHOR = "damaged"  # its id in report.html (the table of contents links it)


def _claims_reading(experiment: str, analyses: Sequence[ClaimAnalysis]) -> str:
    claims = sorted({a.claim for a in analyses if experiment in a.reads})
    return ", ".join(claims) or "no claim"


def _lead(damaged: Sequence[DamagedRun]) -> str:
    n = len(damaged)
    return (
        f"{n} run{'s' if n != 1 else ''} of the store failed its check and "
        f"{'are' if n != 1 else 'is'} left out of the tables, figures and verdicts below; the "
        "verdicts of the claims named here are computed without them. Rerun the experiment's "
        "sweep to retrain them (a damaged run is not skipped as finished)."
    )


def _rows(damaged: Sequence[DamagedRun], analyses: Sequence[ClaimAnalysis]) -> list[tuple]:
    return [
        (d.experiment, _claims_reading(d.experiment, analyses), d.run_key, "; ".join(d.problems))
        for d in sorted(damaged, key=lambda d: (d.experiment, d.run_key))
    ]


def damaged_runs_markdown(
    damaged: Sequence[DamagedRun], analyses: Sequence[ClaimAnalysis]
) -> str:
    """A closing REPORT.md section naming each damaged run; empty when there is none."""
    if not damaged:
        return ""
    lines = [f"## {TITLE}", "", _lead(damaged), ""]
    lines += ["| experiment | claims | run | problem |", "|---|---|---|---|"]
    for experiment, claims, key, problems in _rows(damaged, analyses):
        lines.append(f"| `{experiment}` | {claims} | `{key}` | {problems.replace('|', '/')} |")
    return "\n" + "\n".join(lines) + "\n"  # after the report's last line, one blank line


def damaged_runs_html(damaged: Sequence[DamagedRun], analyses: Sequence[ClaimAnalysis]) -> str:
    """The same section for report.html; empty when there is none."""
    if not damaged:
        return ""
    e = html.escape
    rows = "".join(
        f"<tr><td><code>{e(x)}</code></td><td>{e(c)}</td><td><code>{e(k)}</code></td>"
        f"<td>{e(p)}</td></tr>"
        for x, c, k, p in _rows(damaged, analyses)
    )
    return (
        f'<h2 id="{ANCHOR}">{e(TITLE)}</h2><p>{e(_lead(damaged))}</p><table><tr>'
        "<th>experiment</th>"
        f"<th>claims</th><th>run</th><th>problem</th></tr>{rows}</table>"
    )


def damaged_in(damaged: Sequence[DamagedRun], experiments: Sequence[str]) -> list[str]:
    """``<experiment>/<run_key>`` of the damaged runs of these experiments (for a verdict)."""
    return sorted(f"{d.experiment}/{d.run_key}" for d in damaged if d.experiment in experiments)
