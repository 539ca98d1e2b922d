"""An LR at the edge of its widened grid withholds the claim's calls; the LSTM's selection and
convergence check read bits per character, where lower is better."""

import pandas as pd
import pytest

from normexp.analysis import columns as col
from normexp.analysis.report import _verdict_text
from normexp.analysis.verdict import make_verdict, sub_verdict
from normexp.analysis.verdict.convergence import cell_convergence, check_rule
from normexp.analysis.verdict.regime import apply_regime, regime_of, regime_text
from normexp.analysis.verdict.tuning import apply_tuning, edge_cells
from normexp.protocol.select import select_lr
from tests.unit.test_convergence_check import record_table

GRID = (0.35, 0.7, 1.4, 2.8, 5.6, 11.2)


def selection(scores: dict[str, list[float]], grid=GRID, batch: int = 32) -> pd.DataFrame:
    """Selection runs (seed 100) of each norm at ``batch``: ``scores[norm][i]`` at ``grid[i]``."""
    return pd.DataFrame(
        [
            {col.NORM: norm, col.BATCH: batch, col.SEED: 100, col.LR_MULT: m, col.STAGE: "select",
             col.STATUS: "ok", "val_acc": s, "protocol.select_on": "val_acc"}
            for norm, values in scores.items()
            for m, s in zip(grid, values, strict=True)
        ]
    )


def raw_with(scores: dict[str, list[float]]) -> pd.DataFrame:
    """A raw collected table: runs of record and selection runs, each with its run key (how the
    deciding tables are matched to the raw table they came from)."""
    raw = pd.concat([record_table(batches=(32,)), selection(scores)], ignore_index=True)
    return raw.assign(**{col.RUN_KEY: [f"run{i}" for i in range(len(raw))]})


RISING = [0.26, 0.28, 0.35, 0.40, 0.42, 0.44]  # still climbing at x11.2: the edge
PEAKED = [0.50, 0.60, 0.70, 0.65, 0.55, 0.40]


def test_a_deciding_cell_chosen_at_the_edge_of_its_widened_grid_is_found():
    raw = raw_with({"batch": RISING, "group": PEAKED})
    record = raw[raw[col.STAGE] == "record"]
    edges = edge_cells({"bn_small_batch": raw}, {"bn_small_batch": record})
    assert list(edges[col.NORM]) == ["batch"] and edges.iloc[0]["chosen"] == 11.2
    interior = raw_with({"batch": PEAKED, "group": PEAKED})
    found = edge_cells({"x": interior}, {"x": interior[interior[col.STAGE] == "record"]})
    assert found.empty
    # A cell column one architecture lacks (NaN there) still groups its runs.
    lacking = raw.assign(**{"model.final_norm": raw[col.NORM].map({"group": True})})
    found = edge_cells({"x": lacking}, {"x": lacking[lacking[col.STAGE] == "record"]})
    assert list(found[col.NORM]) == ["batch"]
    # A cell outside the deciding table is not judged.
    group_only = record[record[col.NORM] == "group"]
    assert edge_cells({"x": raw}, {"x": group_only}).empty


def two_part_verdict() -> dict:
    subs = [sub_verdict("T1a", "a", "supported", "s"), sub_verdict("T1b", "b", "inconclusive", "s")]
    return make_verdict("T1", "toy", "supported", "", rule="", anchor="", sub=subs)


def test_an_lr_at_the_edge_withholds_every_call_and_keeps_it_beside():
    raw = raw_with({"batch": RISING, "group": PEAKED})
    edges = edge_cells({"x": raw}, {"x": raw[raw[col.STAGE] == "record"]})
    v = apply_tuning(two_part_verdict(), edges)
    assert v["sub"][0]["verdict"] == "inconclusive" and v["sub"][0]["call_untuned"] == "supported"
    assert "lr_at_edge" not in v["sub"][1]  # already inconclusive on its own statistic
    assert v["verdict"] == "inconclusive" and "norm=batch" in v["notes"]
    assert _verdict_text(v["sub"][0]) == "inconclusive (LR at the grid's edge; as run: supported)"
    assert apply_tuning(two_part_verdict(), pd.DataFrame()) == two_part_verdict()


def test_an_under_trained_call_at_the_edge_names_both_reasons():
    fixed = regime_of(pd.DataFrame({"converged": [False], "gain": [5.0], "unit": ["pp"]}), "4")
    raw = raw_with({"batch": RISING, "group": PEAKED})
    edges = edge_cells({"x": raw}, {"x": raw[raw[col.STAGE] == "record"]})
    v = apply_tuning(apply_regime(two_part_verdict(), fixed), edges)
    shown = _verdict_text(v["sub"][0])
    assert shown == "inconclusive (under-trained; at this budget: supported; LR at the grid's edge)"


def test_bits_per_character_select_the_lowest_mean_and_diverged_runs_still_lose():
    rows = pd.DataFrame(
        {"cell": 0, col.LR_MULT: [0.5, 1.0, 2.0, 4.0], col.STATUS: ["ok", "ok", "ok", "diverged"],
         "valid_bpc": [1.60, 1.52, 1.55, 0.1]}
    )
    choice = select_lr(rows, ["cell"], [0.5, 1.0, 2.0, 4.0], metric="valid_bpc").iloc[0]
    assert choice["chosen"] == 1.0 and not choice["at_edge"]
    assert choice["score"][1.0] == pytest.approx(1.52)  # reported in bpc, not negated
    with pytest.raises(ValueError, match="validation metric"):
        select_lr(rows.rename(columns={"valid_bpc": "test_bpc"}), ["cell"], [1.0], "test_bpc")


def lm_table(gain_bpc: float) -> pd.DataFrame:
    """One LSTM cell's run of record (seed 0) and its doubled-budget run, ``gain_bpc`` lower."""
    base = {col.NORM: "layer", "train.steps": 500, col.SEED: 0, col.LR_MULT: 1.0, col.STATUS: "ok"}
    return pd.DataFrame(
        [
            {**base, col.STAGE: "record", "valid_bpc": 1.50},
            {**base, col.STAGE: "check", "train.steps": 1000, "valid_bpc": 1.50 - gain_bpc},
        ]
    )


def test_the_lstm_is_checked_on_bits_per_character():
    assert check_rule(lm_table(0.0)).unit == "bpc"
    still = cell_convergence(lm_table(0.05)).iloc[0]
    assert still["gain"] == pytest.approx(0.05) and still["unit"] == "bpc"
    assert not still["converged"]
    assert cell_convergence(lm_table(0.004)).iloc[0]["converged"] == True  # noqa: E712
    regime = regime_of(cell_convergence(lm_table(0.05)), "500 steps")
    assert "+0.050 bpc" in regime_text(regime)
