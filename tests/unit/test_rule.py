"""A rule as data decides and writes itself from the same fields."""

import dataclasses
import importlib

import pytest

from normexp.analysis.claims import load_analyses
from normexp.analysis.verdict.paired import against_zero
from normexp.analysis.verdict.rule import Part, Rule

UP = Part("T1a", "A helps", "A − B, pp", "D", "> 0")
DOWN = Part("T1b", "B helps", "B − A, pp", "E", "< 0")
RULE = Rule("With D = A − B and E = B − A, paired by seed", (UP, DOWN), "pp", "T1a's")


def seeds(*values: float) -> dict[int, float]:
    return dict(enumerate(values))


def test_each_part_is_decided_on_its_claimed_side_and_the_parts_combine():
    clear_up, clear_down = seeds(2.0, 2.1, 1.9, 2.2, 2.0), seeds(-2.0, -2.1, -1.9, -2.2, -2.0)
    call, tests = RULE.decide({"T1a": against_zero(clear_up), "T1b": against_zero(clear_down)})
    assert [tests[p]["decision"] for p in ("T1a", "T1b")] == ["supported", "supported"]
    assert call == "supported" and all("p_holm" in t for t in tests.values())
    call, tests = RULE.decide({"T1a": against_zero(clear_down), "T1b": against_zero(clear_down)})
    assert tests["T1a"]["decision"] == "contradicted" and call == "contradicted"
    noise = seeds(1.0, -1.0, 0.5, -0.5, 0.1)
    call, _ = RULE.decide({"T1a": against_zero(clear_up), "T1b": against_zero(noise)})
    assert call == "inconclusive"


def test_an_equivalence_part_is_supported_by_a_difference_of_either_sign():
    part = Part("T2", "they differ", "A − B, pp", "Δ", "≠ 0", margin=0.5)
    rule = Rule("With Δ = A − B", (part,), "pp", "Δ")
    for values, expected in (
        (seeds(-2.0, -2.1, -1.9, -2.2), "supported"),
        (seeds(0.01, -0.02, 0.0, 0.02, -0.01), "contradicted"),  # inside ±0.5: no difference
        (seeds(1.0, -1.0, 0.9, -0.8), "inconclusive"),
    ):
        assert rule.decide({"T2": against_zero(values)})[0] == expected
    assert "Δ ≠ 0 (equivalence margin ±0.5)" in rule.text()


def test_the_text_says_what_the_code_decides():
    text = RULE.text()
    assert 'T1a "A helps": D > 0' in text and 'T1b "B helps": E < 0' in text
    assert "the two Holm-adjusted as one family" in text and "The estimate is T1a's." in text
    flipped = dataclasses.replace(RULE, parts=(dataclasses.replace(UP, claimed="< 0"), DOWN))
    assert 'T1a "A helps": D < 0' in flipped.text()
    _, tests = flipped.decide({"T1a": against_zero(seeds(2, 2.1, 1.9)), "T1b": against_zero({})})
    assert tests["T1a"]["decision"] == "contradicted"


def test_a_part_refuses_a_side_it_cannot_test():
    with pytest.raises(ValueError, match="claimed must be one of"):
        Part("X", "x", "x", "x", ">= 0")
    with pytest.raises(ValueError, match="margin goes with"):
        Part("X", "x", "x", "x", "> 0", margin=1.0)


@pytest.mark.parametrize("name", ["bn_small_batch", "bn_train_test"])
def test_a_claim_with_a_rule_prints_the_rule_it_decides_by(name):
    module = importlib.import_module(f"normexp.analysis.claims.{name}")
    analysis = next(a for a in load_analyses() if a.name == name)
    verdict = analysis.verdict({})  # not run yet: still states its rule
    assert verdict["rule"].startswith(" ".join(module.RULE.text().split()))
