"""A claim's decision rule as data: its sub-claims, the side each claims, the test that decides
them, how the tests are adjusted together and how the parts combine. ``Rule.decide`` applies it
to the measured tests and ``Rule.text`` writes the rule the report prints, from the same fields,
so the prose and the code cannot drift (pycls keeps its metrics as a table the same way).

What stays prose is what a claim's own code computes: the statistics' definitions
(``preamble``, each part's ``defined``) and what the details report (``postscript``).
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass

from normexp.analysis.verdict import ALPHA, all_parts, holm_family, sub_verdict

SIDES = {"> 0": 1, "< 0": -1, "≠ 0": 0}  # the claimed side of the statistic (≠: either)
COUNT_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five"}  # else the digits


@dataclass(frozen=True)
class Part:
    """One sub-claim: the blog's statement, decided by one paired test of ``statistic``."""

    id: str  # "C4a"
    statement: str  # the blog's words
    statistic: str  # in words with its unit, for the verdict table ({…}: filled per verdict)
    defined: str  # the statistic in the rule's symbols, e.g. "D(b_s) − D(b_r)"
    claimed: str  # one of SIDES
    why: str = ""  # what the claimed side means, for the rule's text
    margin: float | None = None  # "≠ 0" only: contradicted when the CI lies inside ±margin

    def __post_init__(self) -> None:
        if self.claimed not in SIDES:
            raise ValueError(f"{self.id}: claimed must be one of {tuple(SIDES)}")
        if (self.margin is None) != (self.claimed != "≠ 0"):
            raise ValueError(f"{self.id}: an equivalence margin goes with '≠ 0' only")


@dataclass(frozen=True)
class Rule:
    preamble: str  # what the statistics are (symbols, cells, pairing)
    parts: tuple[Part, ...]
    unit: str  # the tests' unit, e.g. "pp of test error"
    estimate: str  # what the claim's estimate is ("C4a's", "Δ")
    postscript: str = ""  # what else the verdict reports (not decided on)

    def __post_init__(self) -> None:
        if len({p.margin is None for p in self.parts}) > 1:
            raise ValueError("a rule's parts are all one-sided or all equivalence tests")

    def text(self) -> str:
        """The rule as the report prints it."""
        n = len(self.parts)
        claims = "; ".join(_part_text(p) for p in self.parts)
        many = f", {_count(n)} sub-claims, each with its own test" if n > 1 else ""
        sentences = (
            f"{self.preamble}{many}: {claims}.",
            self._tests_text(),
            self._combine_text(),
            f"The estimate is {self.estimate}.",
            self.postscript,
        )
        return " ".join(s for s in sentences if s)

    def _tests_text(self) -> str:
        n = len(self.parts)
        tested = (
            f"It is a paired t-test over seeds ({self.unit}; one test, so nothing to adjust)"
            if n == 1
            else f"Each is a paired t-test over seeds ({self.unit}), the {_count(n)} "
            "Holm-adjusted as one family"
        )
        adjusted = "the test" if n == 1 else "the adjusted test"
        calls = (
            f"*supported* if {adjusted} rejects 0 at {ALPHA:g} with the effect on the claimed "
            f"side, *contradicted* if it rejects with the effect on the other side, "
            "*inconclusive* otherwise"
        )
        if any(p.margin is not None for p in self.parts):
            calls = (
                f"*supported* if {adjusted} rejects 0 at {ALPHA:g} (either sign: the claim is "
                "that the two differ, not which is better; a rejection decides even inside the "
                "margin); else *contradicted* if the 95% CI lies inside the equivalence margin "
                "(no practical difference); *inconclusive* otherwise"
            )
        return f"{tested}: {calls}."

    def _combine_text(self) -> str:
        if len(self.parts) == 1:
            return ""
        return (
            "The claim is *supported* iff every sub-claim is, *contradicted* if any is, "
            "*inconclusive* otherwise."
        )

    def decide(self, tests: Mapping[str, dict]) -> tuple[str, dict[str, dict]]:
        """The claim's call and each part's test (``difference`` dicts by part id), decided by
        this rule: each test's claimed side set from its part, the parts' tests Holm-adjusted
        as one family, each called, the calls combined. Tests are changed in place."""
        ordered = [tests[p.id] for p in self.parts]
        for part, test in zip(self.parts, ordered, strict=True):
            test["sign"] = SIDES[part.claimed] or 1
        holm_family(ordered)
        for part, test in zip(self.parts, ordered, strict=True):
            if part.margin is not None:
                test["decision"] = _equivalence_call(test, part.margin)
        return all_parts(t["decision"] for t in ordered), {p.id: tests[p.id] for p in self.parts}

    def sub_verdicts(self, tests: Mapping[str, dict], **fill: object) -> list[dict]:
        """Each part's sub-verdict from its decided test (``fill``: the statistic's fields)."""
        return [
            sub_verdict(
                p.id, p.statement, tests[p.id]["decision"], p.statistic.format(**fill), tests[p.id]
            )
            for p in self.parts
        ]


def _count(n: int) -> str:
    return COUNT_WORDS.get(n, str(n))


def _part_text(part: Part) -> str:
    side = f"{part.defined} {part.claimed}"
    if part.margin is not None:
        side = f"{part.defined} ≠ 0 (equivalence margin ±{part.margin:g})"
    why = f", i.e. {part.why}" if part.why else ""
    return f'{part.id} "{part.statement}": {side}{why}'


def _equivalence_call(test: Mapping, margin: float) -> str:
    """Two-sided: supported if the test rejects 0 (either sign), contradicted if the 95% CI
    lies inside ±margin, inconclusive otherwise (and below 2 seeds)."""
    p, (lo, hi) = test.get("p_holm", test.get("p")), test["ci"]
    if test.get("seeds", 0) < 2 or p is None or any(map(math.isnan, (p, lo, hi))):
        return "inconclusive"
    if p <= ALPHA:
        return "supported"
    return "contradicted" if -margin < lo and hi < margin else "inconclusive"
