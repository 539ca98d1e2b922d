"""The regime rule: a verdict says at which training budget it holds, and a performance
sub-claim decided only at a fixed budget reads inconclusive (under-trained)."""

import copy

import numpy as np
import pandas as pd

from normexp.analysis import columns as col
from normexp.analysis.claims import bn_small_batch
from normexp.analysis.figures import verdict_of_record
from normexp.analysis.report import _verdict_text
from normexp.analysis.verdict import make_verdict, sub_verdict
from normexp.analysis.verdict.regime import (
    CONVERGED,
    FIXED,
    apply_regime,
    apply_sub_regime,
    budget_text,
    regime_of,
    regime_short,
)
from tests.unit.test_convergence_check import record_table, with_checks


def cells(*converged: bool | None, gains: tuple = ()) -> pd.DataFrame:
    gains = gains or tuple(0.5 if c else (3.0 if c is False else None) for c in converged)
    return pd.DataFrame({"converged": list(converged), "gain": list(gains), "unit": "pp"})


def test_the_regime_is_convergence_only_when_every_deciding_cell_passes():
    assert regime_of(cells(True, True), "8 epochs")["kind"] == CONVERGED
    fixed = regime_of(cells(True, False, False, gains=(0.2, 3.0, 12.1)), "8 epochs")
    assert fixed["kind"] == FIXED and fixed["largest_gain"] == {"pp": 12.1}
    assert fixed["unconverged"] == 2
    unchecked = regime_of(cells(True, None), "8 epochs")  # not checked never counts as converged
    assert unchecked["kind"] == FIXED and unchecked["unchecked"] == 1
    assert regime_of(pd.DataFrame(), "8 epochs")["kind"] == FIXED
    assert regime_short(fixed) == "fixed budget: 8 epochs; deciding cells still gain up to +12.1 pp"


def two_part_verdict(a: str = "supported", b: str = "contradicted") -> dict:
    subs = [sub_verdict("T1a", "a", a, "stat a"), sub_verdict("T1b", "b", b, "stat b")]
    return make_verdict("T1", "toy", "contradicted", "", rule="", anchor="", sub=subs)


def test_a_performance_sub_claim_at_a_fixed_budget_reads_under_trained_with_its_call_beside():
    fixed = regime_of(cells(False, gains=(6.8,)), "8 epochs × 10,000 images")
    v = apply_regime(two_part_verdict(), fixed)
    assert [s["verdict"] for s in v["sub"]] == ["inconclusive", "inconclusive"]
    assert [s["call_at_budget"] for s in v["sub"]] == ["supported", "contradicted"]
    assert v["verdict"] == "inconclusive" and v["call_at_budget"] == "contradicted"
    shown = _verdict_text(v["sub"][1])
    assert shown == "inconclusive (under-trained; at this budget: contradicted)"
    assert "8 epochs × 10,000 images" in v["regime_text"] and "+6.8 pp" in v["regime_text"]


def test_a_sub_claim_about_training_keeps_its_call_and_names_its_budget():
    fixed = regime_of(cells(False), "400 steps")
    v = apply_regime(two_part_verdict(), fixed, about_training=("T1a", "T1b"))
    assert [s["verdict"] for s in v["sub"]] == ["supported", "contradicted"]
    assert v["verdict"] == "contradicted" and "400 steps" in v["regime_text"]
    mixed = apply_regime(two_part_verdict(), fixed, about_training=("T1a",))
    assert [s["verdict"] for s in mixed["sub"]] == ["supported", "inconclusive"]


def test_a_sub_claim_on_runs_of_its_own_keeps_their_regime_whatever_the_claims():
    """C11's rows: each judged on its source's runs; the claim's regime does not overwrite them,
    and the claim is withheld when one of them is."""
    v = two_part_verdict()
    a, b = v["sub"]
    apply_sub_regime(a, {"rnn_norm": pd.DataFrame()}, regime_of(cells(True), "4 epochs"))
    apply_sub_regime(b, {"bn_small_batch (cnn)": pd.DataFrame()}, regime_of(cells(False), "8"))
    assert a["verdict"] == "supported" and a["deciding_runs"] == ["rnn_norm"]
    assert b["verdict"] == "inconclusive" and b["call_at_budget"] == "contradicted"
    v = apply_regime(v, regime_of(cells(True, False), "4 epochs; 8 epochs"))  # the union's
    assert a["verdict"] == "supported" and a["regime"]["kind"] == CONVERGED
    assert v["under_trained"] and v["call_at_budget"] == "contradicted"
    # the claim's own cells converged, one row's source's not checked: the claim is withheld
    v = two_part_verdict()
    apply_sub_regime(v["sub"][0], {"t": pd.DataFrame()}, regime_of(cells(None), "8 epochs"))
    v = apply_regime(v, regime_of(cells(True), "8 epochs"))
    assert v["under_trained"] and v["sub"][1]["verdict"] == "contradicted"


def test_at_convergence_every_call_stands_and_not_run_yet_names_no_regime():
    v = apply_regime(two_part_verdict(), regime_of(cells(True), "8 epochs"))
    assert v["verdict"] == "contradicted" and v["regime_text"] == f"{CONVERGED} (8 epochs)"
    nothing = make_verdict("T1", "toy", "not run yet", "", rule="", anchor="")
    assert "regime" not in apply_regime(copy.deepcopy(nothing), regime_of(cells(False), "x"))


def c4_table() -> pd.DataFrame:
    record = record_table(norms=("batch", "group"), batches=(2, 32), seeds=(0, 1, 2, 3, 4))
    rng = np.random.default_rng(0)
    bn_worse_at_2 = (record[col.NORM] == "batch") & (record[col.BATCH] == 2)
    record["test_err"] = 0.40 + 0.10 * bn_worse_at_2 + 0.003 * rng.standard_normal(len(record))
    record["n_train"] = 10_000
    record[col.RUN_KEY] = [f"run{i}" for i in range(len(record))]  # how a deciding run is found
    record["protocol.check.train.batch_size"] = "2,32"
    return record


def test_c4_through_the_reports_pipeline_holds_only_where_its_deciding_cells_are_trained(tmp_path):
    record = c4_table()
    every = [(n, b) for n in ("batch", "group") for b in (2, 32)]
    trained = with_checks(record, dict.fromkeys(every, 0.4))
    mine = {"bn_small_batch": col.table({"x": trained}, "x")}
    info = {"declared": {}, "outside_declared": 0, "added_by_other_files": {}, "commits": []}
    v = verdict_of_record(bn_small_batch.ANALYSIS, mine, info, {"bn_small_batch": trained})
    assert v["regime"]["kind"] == CONVERGED and v["sub"][1]["verdict"] == "supported"
    one_short = with_checks(record, {**dict.fromkeys(every, 0.4), ("group", 2): 12.1})
    v = verdict_of_record(bn_small_batch.ANALYSIS, mine, info, {"bn_small_batch": one_short})
    assert v["regime"]["kind"] == FIXED and v["regime"]["largest_gain"] == {"pp": 12.1}
    assert [s["verdict"] for s in v["sub"]] == ["inconclusive", "inconclusive"]
    assert v["sub"][1]["call_at_budget"] == "supported"
    assert budget_text(mine) == "4 epochs × 10,000 images"
