"""The claims, one file each: every module in this package declares ``ANALYSIS`` (a
``normexp.analysis.verdict.spec.ClaimAnalysis``), and the report, the verdicts and the W&B
dashboards read them from here, in claim order (C1, C2, …, C11). Adding a claim is adding a
file here (and its experiment file): nothing else lists the claims. A claim module never
imports another; one claim reads another's outcome through ``analysis_named``."""

import importlib
import pkgutil
from dataclasses import replace

from normexp.analysis.verdict.spec import ClaimAnalysis


def _modules() -> list:
    """The claim modules of this package (its ``__path__``: a test may add a folder), in claim
    order."""
    found = [
        importlib.import_module(f"{__name__}.{info.name}")
        for info in pkgutil.iter_modules(__path__)
        if not info.name.startswith("_")
    ]
    return sorted(found, key=lambda m: int(m.ANALYSIS.claim.lstrip("C")))


def load_analyses() -> list[ClaimAnalysis]:
    """Every claim's declaration, in claim order; a claim that reads others (``reads_from``)
    also reads the experiments that decide them."""
    found = [m.ANALYSIS for m in _modules()]
    by_name = {a.name: a for a in found}

    def with_sources(a: ClaimAnalysis) -> ClaimAnalysis:
        theirs = [e for name in a.reads_from for e in by_name[name].decided_from()]
        return replace(a, reads=tuple(dict.fromkeys((*a.reads, *theirs)))) if theirs else a

    return [with_sources(a) for a in found]


def claim_modules() -> list[str]:
    """The claims' module names, in claim order."""
    return [m.__name__.rsplit(".", 1)[-1] for m in _modules()]


def analysis_named(name: str) -> ClaimAnalysis:
    """The registered analysis ``name``: how one claim reads another's outcome without
    importing its module."""
    return next(a for a in load_analyses() if a.name == name)
