"""How verdicts are decided: Holm within a claim, sub-claim verdicts with their deciding
statistic, seeds of record, and the commits a report rests on, on synthetic tables whose right
answer is known both ways."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from normexp.analysis import report
from normexp.analysis.claims import bn_small_batch, load_analyses, rnn_norm
from normexp.analysis.report import _what_was_run, run_summary
from normexp.analysis.stats import holm, holm_adjusted, t_test_p
from normexp.analysis.verdict import chance_note, failures, holm_family, record
from normexp.analysis.verdict.paired import difference
from normexp.metrics import did_not_train

SEEDS = (0, 1, 2, 3, 4)


def runs(cells: list[tuple[dict, float]], sd: float, seeds=SEEDS, rng_seed: int = 0):
    """One collected row per (cell, seed): config columns, ``value`` = mean + N(0, sd) noise."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for config, mean in cells:
        for seed in seeds:
            value = mean + sd * rng.standard_normal()
            rows.append({"status": "ok", "seed": seed, "profile": "standard", **config, "v": value})
    return pd.DataFrame(rows)


# --- the test and Holm ------------------------------------------------------------------------


def test_t_test_p_is_the_one_sample_t_test():
    values = [0.3, 1.1, -0.2, 0.8, 0.5]
    assert t_test_p(values) == pytest.approx(sps.ttest_1samp(values, 0.0).pvalue)
    assert t_test_p(values, 1.0) == pytest.approx(sps.ttest_1samp(values, 1.0).pvalue)
    assert math.isnan(t_test_p([1.0]))
    assert t_test_p([2.0, 2.0, 2.0]) == 0.0 and t_test_p([0.0, 0.0]) == 1.0


def test_holm_known_values():
    # sorted p 0.01, 0.03, 0.04 -> 3 x 0.01, 2 x 0.03, max(0.06, 1 x 0.04)
    assert holm_adjusted([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.01, 0.04, 0.03]) == [True, False, False]
    assert holm([0.001, 0.02]) == [True, True]  # the second is tested at alpha / 1
    adjusted = holm_adjusted([0.01, math.nan])  # an unmeasurable test still counts in m
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1])


def test_holm_makes_a_borderline_second_test_inconclusive():
    tests = [
        {"mean": 1.0, "p": 0.03, "sign": 1, "null": 0.0},
        {"mean": 1.0, "p": 0.04, "sign": 1, "null": 0.0},
    ]
    alone = [holm_family([dict(t)])[0]["decision"] for t in tests]
    together = [t["decision"] for t in holm_family(tests)]
    assert alone == ["supported", "supported"]  # each would be called on its own
    assert together == ["inconclusive", "inconclusive"]  # p_holm 0.06 for both
    assert tests[0]["p_holm"] == pytest.approx(0.06)


@pytest.mark.parametrize(("mean", "expected"), [(2.0, "supported"), (-2.0, "contradicted")])
def test_a_clear_effect_is_called_both_ways_and_noise_is_not(mean, expected):
    rng = np.random.default_rng(1)
    a = {s: mean + 0.1 * rng.standard_normal() for s in SEEDS}
    assert difference(a, dict.fromkeys(SEEDS, 0.0))["decision"] == expected
    noise = {s: rng.standard_normal() for s in SEEDS}
    noise[0], noise[1] = 1.5, -1.5  # no effect: mean near 0, spread 1
    assert difference(noise, dict.fromkeys(SEEDS, 0.0))["decision"] == "inconclusive"


def test_a_shifted_null_decides_against_the_margin():
    a = {s: -1.0 + 0.05 * (s - 2) for s in SEEDS}  # noisy BN − BN about −1 pp
    zero = dict.fromkeys(SEEDS, 0.0)
    assert difference(a, zero, null=-3.0)["decision"] == "supported"  # clearly above −3
    assert difference(a, zero)["decision"] == "contradicted"  # clearly below 0


# --- sub-claims -------------------------------------------------------------------------------


def c4_table(bn: dict[int, float], gn: dict[int, float]) -> dict:
    """bn_small_batch with BN and GN at batch 2 and 32: test error per batch (fractions)."""
    cells = [
        ({"norm.name": n, "train.batch_size": b}, err)
        for n, errs in (("batch", bn), ("group", gn))
        for b, err in errs.items()
    ]
    df = runs(cells, sd=0.003).rename(columns={"v": "test_err"})
    return {bn_small_batch.EXPERIMENT: df}


def sub_calls(v: dict) -> dict[str, str]:
    json.dumps(v, allow_nan=False)  # strict JSON, subs included
    return {s["id"]: s["verdict"] for s in v["sub"]}


def test_c4_has_one_verdict_per_sub_claim_both_ways():
    # BN degrades (gap grows by 10 pp) but GN still trails BN at batch 2: C4a yes, C4b no
    v = bn_small_batch.ANALYSIS.verdict(c4_table({2: 0.50, 32: 0.30}, {2: 0.55, 32: 0.45}))
    assert sub_calls(v) == {"C4a": "supported", "C4b": "contradicted"}
    assert v["verdict"] == "contradicted"  # the claim: supported iff every part is
    # GN beats BN at batch 2 and the gap grows: both supported
    v = bn_small_batch.ANALYSIS.verdict(c4_table({2: 0.60, 32: 0.30}, {2: 0.40, 32: 0.32}))
    assert sub_calls(v) == {"C4a": "supported", "C4b": "supported"}
    assert v["verdict"] == "supported"
    # the row shows the statistic that decided it, with its own estimate
    c4b = v["sub"][1]
    assert "at batch 2" in c4b["statistic"] and c4b["estimate"] == pytest.approx(20, abs=1)
    assert c4b["p_holm"] is not None and c4b["p_holm"] <= 0.05 and c4b["seeds"] == 5


def c7_table(bpc: dict[str, float]) -> pd.DataFrame:
    cells = [({"norm.name": cell, "data.level": "char"}, v) for cell, v in bpc.items()]
    return runs(cells, sd=0.005).rename(columns={"v": "test_bpc"})


def test_c7_sub_claims_both_ways():
    # BN per-step helps the plain LSTM: BN is not useless (C7a contradicted), and LN is not
    # the only norm that helps (C7b contradicted, decided by that same BN test)
    v = rnn_norm.verdict_from(
        c7_table({"none": 2.0, "layer": 1.7, "batch_per_step": 1.8, "batch_shared": 2.1})
    )
    assert sub_calls(v) == {"C7a": "contradicted", "C7b": "contradicted"}
    assert "per-step" in v["sub"][1]["statistic"]
    # BN hurts, LN helps and beats every BN cell: both supported; RMSNorm is no rival
    v = rnn_norm.verdict_from(
        c7_table(
            {"none": 2.0, "layer": 1.7, "batch_per_step": 2.2, "batch_shared": 2.3, "rms": 1.6}
        )
    )
    assert sub_calls(v) == {"C7a": "supported", "C7b": "supported"}
    assert v["verdict"] == "supported"


# --- seeds of record --------------------------------------------------------------------------


def test_seeds_of_record_are_the_profiles_sweep():
    assert record.parse_seeds("0,1,2") == (0, 1, 2)
    assert record.parse_seeds("range(5)") == record.parse_seeds("range(0,5)") == SEEDS
    assert record.declared_seeds("quick") == (0, 1, 2)  # what `make run-sweep` runs at quick
    assert record.declared_seeds("standard") == SEEDS
    for profile in ("quick", "standard", "paper"):
        assert len(record.declared_seeds(profile)) >= record.MIN_SEEDS[profile]
    assert record.declared_seeds("no_such_profile") == ()


def store_table(seeds, t0: float = 100.0, profile: str = "standard") -> pd.DataFrame:
    """Finished runs of one cell, finished one second apart from t0, keys k<seed>."""
    return pd.DataFrame(
        {
            "status": "ok",
            "seed": list(seeds),
            "profile": profile,
            "norm.name": "batch",
            "run_key": [f"k{s}" for s in seeds],
            "finished_at": [t0 + i for i in range(len(seeds))],
            "provenance.commit": "a" * 40,
        }
    )


def test_undeclared_seeds_and_runs_added_by_another_file_are_left_out(tmp_path):
    base, more = store_table((0, 1, 2), 100.0), store_table((3, 4, 5, 6), 500.0)
    sittings = [
        {"command": "python -m normexp.run -m experiment=exp", "experiment": "exp",
         "started": 90.0, "wall_s": 50.0},
        {"command": "python -m normexp.run -m experiment=exp_more_seeds", "experiment": "exp",
         "started": 490.0, "wall_s": 50.0},
    ]  # fmt: skip
    (tmp_path / "sweeps.jsonl").write_text("".join(json.dumps(s) + "\n" for s in sittings))
    kept, info = record.of_record({"exp": pd.concat([base, more])}, tmp_path)
    assert sorted(kept["exp"]["seed"]) == [0, 1, 2]
    assert info["outside_declared"] == 2  # seeds 5, 6
    assert info["added_by_other_files"] == {"exp": 2}  # seeds 3, 4: declared, but added later
    assert info["commits"] == ["a" * 40]


def test_an_incomplete_cell_withholds_the_call_in_the_claim_and_every_sub_claim():
    info = {"declared": {"standard": list(SEEDS)}, "outside_declared": 0,
            "added_by_other_files": {}, "commits": ["a" * 40]}  # fmt: skip
    subs = [{"verdict": "contradicted"}, {"verdict": "inconclusive"}]
    verdict = {"verdict": "contradicted", "sub": subs}
    out = record.apply_record(verdict, info, {"exp": store_table((0, 1, 2))})
    assert out["verdict"] == "inconclusive" and out["call_on_seeds_present"] == "contradicted"
    assert [s["verdict"] for s in out["sub"]] == ["inconclusive", "inconclusive"]
    assert out["sub"][0]["incomplete"] == "incomplete: 3 of 5 declared seeds"
    assert "3 of 5 declared seeds" in out["record_note"]
    complete = record.apply_record({"verdict": "supported"}, info, {"exp": store_table(SEEDS)})
    assert complete["verdict"] == "supported" and "incomplete" not in complete
    few = {**info, "declared": {"standard": [0, 1, 2]}}  # fewer than MIN_SEEDS declared
    out = record.apply_record({"verdict": "supported"}, few, {"exp": store_table((0, 1, 2))})
    assert out["verdict"] == "inconclusive" and "fewer than 5 declared" in out["incomplete"]
    # quick, the fast check, makes calls on its 3 declared seeds
    fast = {**info, "declared": {"quick": [0, 1, 2]}}
    quick = store_table((0, 1, 2), profile="quick")
    out = record.apply_record({"verdict": "supported"}, fast, {"exp": quick})
    assert out["verdict"] == "supported" and "incomplete" not in out


def test_a_report_with_two_commits_lists_both_and_flags_it(monkeypatch):
    a, b = "a" * 40, "b" * 40
    line = report.commits_line({"commits": [a, b], "commits_in_store": [a, b]})
    assert a[:10] in line and b[:10] in line and "NOT declared equivalent" in line
    assert line.startswith("**Warning:**")
    monkeypatch.setitem(record.EQUIVALENT_COMMITS, frozenset((a, b)), "docs-only change")
    assert "declared equivalent: docs-only change" in report.commits_line({"commits": [a, b]})
    one = report.commits_line({"commits": [a], "commits_in_store": [a, b]})
    assert "one commit" in one and b[:10] in one and "none of them of record" in one


def test_the_top_table_has_one_row_per_sub_claim_with_its_statistic():
    v = bn_small_batch.ANALYSIS.verdict(c4_table({2: 0.60, 32: 0.30}, {2: 0.40, 32: 0.32}))
    analysis = bn_small_batch.ANALYSIS
    rows = report.top_rows([{"analysis": analysis, "verdict": v}])
    assert [r["claim"] for r in rows] == ["C4a", "C4b"]
    assert [r["statistic"] for r in rows] == [s["statistic"] for s in v["sub"]]
    assert rows[1]["ci"].startswith("+20") and rows[1]["seeds"] == "5"


def test_a_run_that_never_leaves_chance_is_named_beside_its_cell_and_kept():
    assert did_not_train(0.100) and did_not_train(0.119) and not did_not_train(0.13)
    rows = [
        {"norm.name": n, "train.batch_size": 128, "seed": s, "status": "ok", "val_acc": v}
        for n, s, v in (("none", 0, 0.100), ("none", 1, 0.55), ("batch", 0, 0.60))
    ]
    df = pd.DataFrame(rows)
    assert chance_note(df) == (
        "1 run(s) did not train (final validation accuracy within 2 pp of chance; kept in the "
        "statistics): norm=none, seed=0"
    )
    assert "did not train" not in failures(df) and chance_note(df.iloc[1:]) == ""
    flagged = df.assign(did_not_train=[False, True, False])  # the run's own flag counts too
    assert chance_note(flagged).startswith("2 run(s) did not train")


def test_the_report_names_runs_that_did_not_train_where_it_says_what_was_run():
    rows = [
        {"norm.name": n, "train.batch_size": 128, "seed": 0, "status": "ok", "val_acc": v,
         "profile": "quick"}
        for n, v in (("none", 0.100), ("batch", 0.60))
    ]
    summary = run_summary({"bn_small_batch": pd.DataFrame(rows)})
    c4 = next(a for a in load_analyses() if a.name == "bn_small_batch")
    line = _what_was_run(summary, c4)
    assert "In `bn_small_batch`: 1 run(s) did not train" in line and "norm=none" in line
