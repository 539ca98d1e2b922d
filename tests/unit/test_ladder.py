"""The budget ladder: the planner trains the checked cells' seeds of record at lower budgets,
and the analysis computes each claim's statistics at every rung by the claim's own rule."""

import hydra
import pandas as pd
import pytest

from normexp.analysis import columns as col
from normexp.analysis.claims import bn_small_batch
from normexp.analysis.verdict import ladder
from normexp.protocol.plan import JobRecords, ladder_budgets, plan
from normexp.sweep import sweep_overrides
from tests.helpers import REPO
from tests.unit.test_convergence_check import finish, record_table
from tests.unit.test_regime import c4_table


def test_rungs_are_the_fractions_of_the_records_budget_rounded_and_distinct():
    def budgets(ladder_, epochs=8, steps=None):
        config = {"train": {"epochs": epochs, "steps": steps}, "protocol": {"ladder": ladder_}}
        return ladder_budgets(config)

    assert budgets([0.25, 0.5]) == ["train.epochs=2", "train.epochs=4"]
    assert budgets([0.5], steps=300) == ["train.steps=150"]
    assert budgets([0.1, 0.2], epochs=2) == ["train.epochs=1"]  # at least 1, once
    assert budgets([0.5], epochs=1) == [] and budgets(None) == []  # the record's own: no rung


def test_plan_trains_every_seed_of_each_checked_cell_at_each_rung(tmp_path):
    with hydra.initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        config = hydra.compose(
            "config",
            overrides=[
                "experiment=not_ics", "profile=smoke", f"paths.results_dir={tmp_path}",
                "hydra.sweeper.params.norm='none,batch'", "hydra.sweeper.params.seed='3,1'",
                "protocol.lr_grid=[0.5,2.0]", "protocol.max_widen=0",
                "protocol.check.norm=batch", "protocol.ladder=[0.25,0.5]", "train.epochs=4",
            ],
            return_hydra_config=True,
        )
        basic, records = sweep_overrides(config), JobRecords(config)
        first = plan(config, basic, records)
        assert not any("protocol.stage=ladder" in j for j in first.jobs)  # no LR chosen yet
        assert any("protocol.stage=ladder" in j for j in first.unplanned)  # but validated
        for job in first.jobs:
            cfg, record = records(job)
            finish(record, cfg, 0.6 if cfg["optim"]["lr_mult"] == 2.0 else 0.3)
        second = plan(config, basic, records)
        rungs = [records(j)[0] for j in second.jobs if "protocol.stage=ladder" in j]
        assert sorted((c["seed"], c["train"]["epochs"]) for c in rungs) == [
            (1, 1), (1, 2), (3, 1), (3, 2)
        ]  # the checked cell (batch) only, both seeds, 1/4 and 1/2 of 4 epochs
        assert all(c["norm"]["name"] == "batch" and c["optim"]["lr_mult"] == 2.0 for c in rungs)
        stages = [j[-1] for j in second.jobs if "protocol.stage=select" not in j]
        first_ladder = next(i for i, j in enumerate(second.jobs) if "protocol.stage=ladder" in j)
        assert all("protocol.stage" not in s for s in stages[: first_ladder - 4])  # records first
        assert "protocol.stage=check" in second.jobs[-1]  # and the check last


def with_rung(record: pd.DataFrame, epochs: int, err_shift: dict) -> pd.DataFrame:
    """``record`` plus each run again as a ladder run at ``epochs``, its test error moved by
    ``err_shift`` ({(norm, batch): shift})."""
    rung = record.copy()
    rung[col.STAGE], rung[col.EPOCHS] = "ladder", epochs
    rung[col.RUN_KEY] = rung[col.RUN_KEY] + f"@{epochs}"
    for (norm, batch), shift in err_shift.items():
        here = (rung[col.NORM] == norm) & (rung[col.BATCH] == batch)
        rung.loc[here, "test_err"] += shift
    return pd.concat([record, rung], ignore_index=True)


def test_each_rung_is_decided_by_the_claims_own_rule_in_place_of_the_record():
    record = c4_table()  # BN worse than GN at batch 2 by 10 pp, equal at 32, 4 epochs
    table = with_rung(record, 2, {("batch", 2): 0.10})  # at 2 epochs BN is 20 pp worse at 2
    assert set(ladder.fractions(table).values()) == {0.5}
    half = ladder.at_rung(table, 0.5)
    assert len(half) == len(record) and set(half[col.EPOCHS]) == {2}
    series = ladder.series(bn_small_batch.ANALYSIS.verdict, {"bn_small_batch": table})
    assert series["fractions"] == [0.5, 1.0]
    (arch,) = series["points"]["C4b"]
    at = {round(row[0], 2): row[1] for row in series["points"]["C4b"][arch]}
    assert at[0.5] - at[1.0] == pytest.approx(10.0, abs=0.5)  # the rung's own gap, not 1.0's


def test_a_rung_that_would_mix_budgets_in_a_deciding_statistic_is_left_out():
    record = c4_table()
    at_32_only = with_rung(record[record[col.BATCH] == 32], 2, {})
    table = pd.concat([record, at_32_only[at_32_only[col.STAGE] == "ladder"]], ignore_index=True)
    analysis = bn_small_batch.ANALYSIS
    series = ladder.series(analysis.verdict, {"bn_small_batch": table}, analysis.deciding)
    assert series == {"fractions": [], "points": {}, "mixed": [0.5]}  # batch 2 has no rung


def test_without_ladder_runs_there_is_no_series_and_the_figure_draws_one_panel_each(tmp_path):
    record = record_table()
    assert ladder.series(bn_small_batch.ANALYSIS.verdict, {"bn_small_batch": record}) == {}
    points = {"C4a": {"ResNet-20": [[0.5, 12.0, 9.0, 15.0, 5], [1.0, 9.9, 7.5, 12.3, 5]]},
              "C4b": {"ResNet-20": [[0.5, -8.0, -9.0, -7.0, 5], [1.0, -5.7, -7.5, -3.9, 5]]}}
    out = ladder.draw({"fractions": [0.5, 1.0], "points": points}, tmp_path / "l.png", "C4")
    assert out.exists() and out.stat().st_size > 10_000
