"""The convergence check (budget doubling): the rule on synthetic collected tables, the check
runs kept out of the verdict tables, and the sweeper's check stage (planned in process on a fake
store; end to end at smoke in tests/unit/test_protocol.py)."""

import json

import hydra
import numpy as np
import pandas as pd
import pytest

from normexp.analysis import columns as col
from normexp.analysis.verdict.convergence import (
    cell_convergence,
    converged,
    declared,
    failing_note,
    paired_gains,
    passing,
)
from normexp.analysis.verdict.lr_selection import protocol_markdown
from normexp.protocol.plan import JobRecords, in_check, plan
from normexp.sweep import sweep_overrides
from tests.helpers import REPO

CONFIG_DIR = str(REPO / "configs")
DECLARED = {"protocol.check.train.batch_size": "32,128", "protocol.check.norm": "batch,group"}


def record_table(norms=("batch", "group"), batches=(32, 128), seeds=(0, 1, 2)) -> pd.DataFrame:
    """Runs of record as collect writes them (stage record, the declared sub-grid flattened)."""
    rows = []
    for norm in norms:
        for batch in batches:
            for seed in seeds:
                rows.append(
                    {
                        col.NORM: norm, col.BATCH: batch, col.EPOCHS: 4, col.SEED: seed,
                        col.LR_MULT: 0.5 if norm == "batch" else 2.0, col.STAGE: "record",
                        col.STATUS: "ok", "val_acc": 0.60 + 0.01 * seed, "test_acc": 0.6,
                        "test_err": 0.4, **DECLARED,
                    }
                )
    return pd.DataFrame(rows)


def with_checks(record: pd.DataFrame, gains_pp: dict, seed: int = 0) -> pd.DataFrame:
    """``record`` plus one check run (epochs x2, stage check) per cell in ``gains_pp``
    ({(norm, batch): pp}), on ``seed``, its val_acc that seed's run of record's + the gain."""
    rows = []
    for (norm, batch), gain in gains_pp.items():
        base = record[(record[col.NORM] == norm) & (record[col.BATCH] == batch)
                      & (record[col.SEED] == seed)].iloc[0]
        row = base.to_dict()
        row.update({col.EPOCHS: 8, col.STAGE: "check", "val_acc": base["val_acc"] + gain / 100,
                    "test_acc": 0.99, "test_err": 0.01})
        rows.append(row)
    return pd.concat([record, pd.DataFrame(rows)], ignore_index=True)


def by_cell(check: pd.DataFrame) -> dict:
    return {(r[col.NORM], r[col.BATCH]): r["converged"] for _, r in check.iterrows()}


# --- the rule -----------------------------------------------------------------------------


def test_rule_passes_below_one_pp_and_fails_at_one():
    assert converged(0.9) is True and converged(-2.0) is True
    assert converged(1.0) is False and converged(5.0) is False
    assert converged(None) is None and converged(float("nan")) is None


def test_cells_on_synthetic_tables():
    gains = {("batch", 32): 0.9, ("batch", 128): 1.0, ("group", 32): -0.3}
    df = with_checks(record_table(), gains)
    check = cell_convergence(df)
    assert by_cell(check) == {("batch", 32): True, ("batch", 128): False, ("group", 32): True,
                              ("group", 128): None}  # no check run: not checked
    row = check.set_index([col.NORM, col.BATCH]).loc[("batch", 128)]
    assert row["gain"] == pytest.approx(1.0) and row["runs"] == 3 and row["seed"] == 0
    assert check["declared"].all()


def test_check_pairs_with_the_first_seed_at_the_same_multiplier():
    record = record_table()
    # a check run on seed 1, or at another multiplier, is not this cell's check
    df = with_checks(record, {("batch", 32): 0.2}, seed=1)
    assert by_cell(cell_convergence(df))[("batch", 32)] is None
    df = with_checks(record, {("batch", 32): 0.2})
    df.loc[df[col.STAGE] == "check", col.LR_MULT] = 1.0
    assert paired_gains(df).empty
    df = with_checks(record, {("batch", 32): 0.2})
    pair = paired_gains(df).iloc[0]
    assert pair[col.SEED] == 0 and pair["record_value"] == pytest.approx(0.60)
    assert pair["gain"] == pytest.approx(0.2)


def test_a_failed_check_run_leaves_the_cell_unchecked():
    df = with_checks(record_table(), {("batch", 32): 0.2})
    df.loc[df[col.STAGE] == "check", col.STATUS] = "failed"
    assert by_cell(cell_convergence(df))[("batch", 32)] is None


def test_not_checked_is_not_a_pass_and_is_reported_as_not_checked():
    df = with_checks(record_table(), {("batch", 32): 0.5, ("batch", 128): 3.0})
    kept = passing(df, [col.NORM, col.BATCH])
    assert set(zip(kept[col.NORM], kept[col.BATCH], strict=True)) == {("batch", 32)}
    assert len(kept) == 3 and (kept[col.STAGE] == "record").all()  # only runs of record
    note = failing_note(cell_convergence(df))
    assert "1 of 4 cells fail it" in note and "batch_size=128 (+3.0 pp)" in note
    assert "2 of 4 cells not checked" in note and "norm=group, batch_size=32" in note
    # no check run anywhere: nothing passes, and nothing is called failed
    plain = record_table()
    assert passing(plain, [col.NORM, col.BATCH]).empty
    note = failing_note(cell_convergence(plain))
    assert "fail it" not in note and "4 of 4 cells not checked" in note


def test_cells_outside_the_declared_sub_grid_are_counted_apart():
    df = with_checks(record_table(batches=(2, 32)), {("batch", 32): 0.5, ("group", 32): 0.5})
    check = cell_convergence(df)
    assert check.set_index([col.NORM, col.BATCH])["declared"].to_dict() == {
        ("batch", 2): False, ("batch", 32): True, ("group", 2): False, ("group", 32): True}
    assert failing_note(check) == (
        "Convergence check: 2 of 4 cells not checked (outside the sub-grid the experiment "
        "declares in protocol.check)."
    )


def test_check_runs_never_reach_the_verdict_tables():
    df = with_checks(record_table(), {("batch", 32): 0.5, ("group", 128): 0.5})
    shown = col.table({"x": df}, "x")
    assert len(shown) == len(record_table()) and (shown[col.STAGE] == "record").all()
    assert (shown["test_acc"] == 0.6).all()  # the check runs' 0.99 is nowhere


def test_c8_uses_only_passing_cells():
    from normexp.analysis.claims import ln_in_cnn

    record = record_table(norms=("batch", "group", "layer"), batches=(32, 64, 128))
    record["test_err"] = record[col.NORM].map({"batch": 0.40, "group": 0.45, "layer": 0.50})
    record["test_err"] += 0.002 * np.random.default_rng(0).standard_normal(len(record))
    record["protocol.check.norm"] = "batch,group,layer"
    record["protocol.check.train.batch_size"] = "32,64,128"
    every = {(n, b): 0.3 for n in ("batch", "group", "layer") for b in (32, 64, 128)}
    v = ln_in_cnn.ANALYSIS.verdict({"bn_small_batch": with_checks(record, every)})
    assert v["details"]["batch_sizes"] == [32, 64, 128]
    failing_64 = {**every, ("layer", 64): 2.5}
    v = ln_in_cnn.ANALYSIS.verdict({"bn_small_batch": with_checks(record, failing_64)})
    assert v["details"]["batch_sizes"] == [32, 128]  # LN at 64 fails: batch 64 has no LN
    unchecked_64 = {k: g for k, g in every.items() if k != ("layer", 64)}
    v = ln_in_cnn.ANALYSIS.verdict({"bn_small_batch": with_checks(record, unchecked_64)})
    assert v["details"]["batch_sizes"] == [32, 128]  # not checked is no pass either
    assert ln_in_cnn.ANALYSIS.verdict({"bn_small_batch": record})["verdict"] == "not run yet"


def test_c8_is_inconclusive_not_unrun_when_every_deciding_cell_fails_the_check():
    from normexp.analysis.claims import ln_in_cnn

    record = record_table(norms=("batch", "group", "layer"), batches=(32, 128))
    record["test_err"] = record[col.NORM].map({"batch": 0.40, "group": 0.45, "layer": 0.50})
    record["protocol.check.norm"] = "batch,group,layer"
    record["protocol.check.train.batch_size"] = "32,128"
    failing = {(n, b): 5.0 for n in ("batch", "group", "layer") for b in (32, 128)}
    failing[("layer", 32)] = 12.0
    v = ln_in_cnn.ANALYSIS.verdict({"bn_small_batch": with_checks(record, failing)})
    assert v["verdict"] == "inconclusive" and v["details"]["under_trained"]
    assert v["estimate"] is None and "6 deciding cells" in v["effect"]
    assert "+5.0 to +12.0 pp" in v["effect"]
    one_passing = {**failing, ("layer", 128): 0.2}  # LN passes alone: still no batch with all
    v = ln_in_cnn.ANALYSIS.verdict({"bn_small_batch": with_checks(record, one_passing)})
    assert v["verdict"] == "inconclusive" and "5 deciding cells" in v["effect"]


def test_report_lines_name_failing_and_unchecked_counts():
    entry = {"protocol": {"unconverged_cells": {"e": 1}, "unchecked_cells": {"e": 2}}}
    lines = protocol_markdown(entry)
    assert "*Convergence check (e).* 1 cell(s) fail it: see the notes." in lines
    assert "*Convergence check (e).* 2 cell(s) not checked: see the notes." in lines


# --- the sweeper's check stage -----------------------------------------------------------


def test_in_check_matches_fields_and_sections_by_name():
    config = {"norm": {"name": "group", "groups": 32}, "train": {"batch_size": 32},
              "arm": {"name": "wn"}}
    assert in_check(config, {"norm": "batch,group", "train.batch_size": "32,128"})
    assert in_check(config, {"arm": ["none", "wn"]})
    assert not in_check(config, {"norm": "batch", "train.batch_size": "32"})
    assert not in_check(config, {"train.batch_size": "2, 8"})
    assert not in_check(config, None) and not in_check(config, {})


def finish(record, config: dict, val_acc: float) -> None:
    # train_acc too: not_ics selects its LR on the training accuracy (C9 is about training)
    record.start(config)
    record.append_metrics({"epoch": 1, "val_acc": val_acc, "train_acc": val_acc})
    summary = {"epochs": 1, "run_key": record.key, "status": "ok", "val_acc": val_acc}
    record.finish("ok", {**summary, "train_acc": val_acc})


def value(job, key: str) -> str:
    return next(o.split("=", 1)[1] for o in job if o.split("=", 1)[0] == key)


@pytest.mark.parametrize("budget", ["epochs", "steps"])
def test_plan_checks_declared_cells_at_twice_the_budget(tmp_path, budget):
    extra = ["train.steps=6"] if budget == "steps" else []
    with hydra.initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        config = hydra.compose(
            "config",
            overrides=[
                "experiment=not_ics", "profile=smoke", f"paths.results_dir={tmp_path}",
                "hydra.sweeper.params.norm='none,batch,noisy_batch'",
                "hydra.sweeper.params.seed='3,1'", "protocol.lr_grid=[0.5,2.0]",
                "protocol.max_widen=0", "protocol.check.norm='batch,group,layer'", *extra,
            ],
            return_hydra_config=True,
        )
        basic = sweep_overrides(config)
        records = JobRecords(config)
        first = plan(config, basic, records)
        # before the LR is chosen: the check job is validated at a placeholder, not launched
        assert not any("protocol.stage=check" in j for j in first.jobs)
        assert sum("protocol.stage=check" in j for j in first.unplanned) == 1
        val = {("none", 0.5): 0.3, ("none", 2.0): 0.2, ("batch", 0.5): 0.3, ("batch", 2.0): 0.6,
               ("noisy_batch", 0.5): 0.4, ("noisy_batch", 2.0): 0.1}
        for job in first.jobs:
            cfg, record = records(job)
            finish(record, cfg, val[cfg["norm"]["name"], cfg["optim"]["lr_mult"]])
        second = plan(config, basic, records)
        checks = [j for j in second.jobs if "protocol.stage=check" in j]
        assert len(checks) == 1  # batch only: group and layer are not in this sweep
        assert second.jobs[-1] == checks[0]  # after every record job
        cfg, record = records(checks[0])
        rec_cfg, rec = records(next(j for j in second.jobs if "norm=batch" in j
                                    and "seed=1" in j and "protocol.stage=select" not in j))
        assert cfg["norm"]["name"] == "batch" and cfg["seed"] == 1  # the first seed of record
        assert cfg["optim"]["lr_mult"] == rec_cfg["optim"]["lr_mult"] == 2.0  # the chosen one
        assert cfg["protocol"]["stage"] == "check" and rec_cfg["protocol"]["stage"] == "record"
        if budget == "steps":
            assert (cfg["train"]["steps"], rec_cfg["train"]["steps"]) == (12, 6)
            assert cfg["train"]["epochs"] == rec_cfg["train"]["epochs"]
        else:
            assert cfg["train"]["epochs"] == 2 * rec_cfg["train"]["epochs"]
            assert cfg["train"]["steps"] is None
        assert record.key != rec.key
        # a rerun with the check run finished plans the same jobs, nothing new
        finish(record, cfg, 0.61)
        assert plan(config, basic, records).jobs == second.jobs


def test_the_check_declaration_stays_out_of_run_keys(tmp_path):
    with hydra.initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        keys = []
        declared = ["protocol.check.norm=batch", "protocol.check_budget_mult=3"]
        for check in (["protocol.check=null"], declared):
            config = hydra.compose(
                "config",
                overrides=["experiment=not_ics", "profile=smoke", f"paths.results_dir={tmp_path}",
                           "protocol.lr_grid=[0.5,2.0]", *check],
                return_hydra_config=True,
            )
            records = JobRecords(config)
            keys.append(records(sweep_overrides(config)[0])[1].key)
        assert keys[0] == keys[1]


@pytest.mark.parametrize(
    ("profile", "expected"),
    [
        # standard checks every deciding cell (not_ics: CNN and ResNet)
        ("standard", {"bn_small_batch": 12, "bn_small_batch_resnet": 6, "bn_position": 4,
                      "bn_position_control": 2, "not_ics": 6, "weight_side": 4}),
        # quick (check_profiles): C8's cells only, the others cannot pass at its scale
        ("quick", {"bn_small_batch": 16, "bn_small_batch_resnet": 0, "bn_position": 0,
                   "bn_position_control": 0, "not_ics": 0, "weight_side": 0}),
    ],
)  # fmt: skip
def test_experiments_declare_their_deciding_cells(tmp_path, profile, expected):
    """Every deciding experiment's check is a part of its sweep, at the profiles it names."""
    # GN's grouping decided (gn_grouping's decision in the store), so that GN's cells are planned
    decision = {"complete": True, "run_keys": [],
                "sets": {"norm.grouping": "width", "norm.channels_per_group": 8}}
    folder = tmp_path / profile / "runs" / "gn_grouping"
    folder.mkdir(parents=True)
    (folder / "decision.json").write_text(json.dumps(decision))
    with hydra.initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        for experiment, n in expected.items():
            config = hydra.compose(
                "config",
                overrides=[f"experiment={experiment}", f"profile={profile}",
                           f"paths.results_dir={tmp_path}"],
                return_hydra_config=True,
            )
            current = plan(config, sweep_overrides(config), JobRecords(config))
            checks = [j for j in current.unplanned if "protocol.stage=check" in j]
            assert len(checks) == n, experiment
            assert all(value(j, "seed") == "0" for j in checks), experiment


def test_cost_projection_prices_the_check_stage():
    from normexp.bench.cost import profile_cost

    table = profile_cost("quick", experiments=["bn_small_batch", "gn_grouping"])
    assert table.loc["bn_small_batch", "check"] == 16  # quick's batch 2, 8, 32, 128 x 4 norms
    assert table.loc["bn_small_batch", "ladder"] == 16 * 3  # each checked cell's 3 seeds at x0.5
    assert table.loc["gn_grouping", "check"] == 0  # declares no check


@pytest.mark.parametrize("as_collected", [True, False])
def test_a_profile_outside_check_profiles_is_not_declared(as_collected):
    # collect writes the list as its repr; a config row keeps the list
    profiles = ["smoke", "standard", "paper"]
    value = str(profiles) if as_collected else profiles
    row = pd.Series({"protocol.check.norm": "batch", "norm.name": "batch",
                     "protocol.check_profiles": value, "profile": "quick"})  # fmt: skip
    assert not declared(row)
    assert declared(row.replace({"quick": "standard"}))
    assert declared(row.drop("protocol.check_profiles"))  # absent: every profile


def test_one_reading_of_a_declared_list_for_planner_and_analysis():
    from normexp.protocol.subgrid import listed, runs_check

    # the forms a list arrives in: a sweep string, a YAML list, collect's repr of a list
    for form in ("smoke, standard", ["smoke", "standard"], "['smoke', 'standard']"):
        assert listed(form) == {"smoke", "standard"}
        assert runs_check("standard", form) and not runs_check("quick", form)
    assert runs_check("quick", None)  # null: every profile


def test_c8_sees_its_check_runs_through_the_reports_pipeline(tmp_path):
    """The report hands an analysis its runs of record with the check runs beside them: C8
    pairs them on either architecture, so a passing cell decides there as in the rule's own
    tests."""
    from normexp.analysis.claims import ln_in_cnn
    from normexp.analysis.figures import of_record_for, verdict_of_record

    record = record_table(norms=("batch", "group", "layer"), batches=(32, 128))
    record["test_err"] = record[col.NORM].map({"batch": 0.40, "group": 0.45, "layer": 0.50})
    record["test_err"] += 0.002 * np.random.default_rng(0).standard_normal(len(record))
    record["protocol.check.norm"] = "batch,group,layer"
    passing_all = {(n, b): 0.3 for n in ("batch", "group", "layer") for b in (32, 128)}
    record[col.RUN_KEY] = [f"cnn{i}" for i in range(len(record))]
    collected = with_checks(record, passing_all)
    resnet = with_checks(record.assign(**{col.RUN_KEY: record[col.RUN_KEY] + "r"}), passing_all)
    for tables in ({"bn_small_batch": collected},
                   {"bn_small_batch": record, "bn_small_batch_resnet": resnet}):
        mine, info = of_record_for(ln_in_cnn.ANALYSIS, tables, tmp_path)
        v = verdict_of_record(ln_in_cnn.ANALYSIS, mine, info)
        assert v["verdict"] == "supported" and v["details"]["batch_sizes"] == [32, 128]
    # Every other analysis reading the same tables is handed the check runs too (its regime
    # reads them), its statistics never see them, and C4's verdict on the ResNet's table is the
    # same with its check runs there or not.
    from normexp.analysis.claims import bn_small_batch, bn_train_test

    tables = {"bn_small_batch": collected, "bn_small_batch_resnet": collected}
    for other in (bn_small_batch.ANALYSIS, bn_train_test.ANALYSIS):
        mine, _ = of_record_for(other, tables, tmp_path)  # the check runs beside, for the regime
        assert any((df[col.STAGE] == "check").any() for df in mine.values() if not df.empty)
        for name, df in mine.items():  # and its statistics never read them
            assert df.empty or (col.table(mine, name)[col.STAGE] != "check").all()
    stripped = {e: col.table(tables, e) for e in tables}
    assert bn_small_batch.ANALYSIS.verdict(tables) == bn_small_batch.ANALYSIS.verdict(stripped)


def test_c8_figure_shows_the_check_only_when_no_batch_size_is_trained(tmp_path, monkeypatch):
    from normexp.analysis.claims import ln_in_cnn

    shown = []
    monkeypatch.setattr(ln_in_cnn, "draw_gains", lambda ax, gains, arch: shown.append(gains))
    record = record_table(norms=("batch", "group", "layer", "none"), batches=(32, 128))
    record["protocol.check.norm"] = "batch,group,layer,none"
    failing = {(n, b): 5.0 for n in ("none", "layer", "batch", "group") for b in (128, 32)}
    tables = {"bn_small_batch": with_checks(record, failing)}
    gains = ln_in_cnn.checked_gains(tables)
    assert list(zip(gains[col.NORM], gains[col.BATCH], strict=True)) == [
        ("batch", 32), ("batch", 128), ("group", 32), ("group", 128), ("layer", 32),
        ("layer", 128), ("none", 32), ("none", 128)]
    assert ln_in_cnn.draw(tables, tmp_path / "c8.png").exists() and len(shown) == 1
    # LN, BN and GN trained at 32 only, no norm at 128 only: the verdict decides at 32, and
    # so does the figure (the bars, not the check)
    trained_32 = {**failing, **{(n, 32): 0.2 for n in ("layer", "batch", "group")},
                  ("none", 128): 0.2}
    tables = {"bn_small_batch": with_checks(record, trained_32)}
    assert ln_in_cnn.ANALYSIS.verdict(tables)["details"]["batch_sizes"] == [32]
    ln_in_cnn.draw(tables, tmp_path / "c8.png")
    assert len(shown) == 1


def test_c8_is_not_run_yet_while_a_compared_norm_has_no_runs():
    from normexp.analysis.claims import ln_in_cnn

    record = record_table(norms=("batch", "layer"), batches=(32, 128))
    record["protocol.check.norm"] = "batch,layer"
    failing = {(n, b): 5.0 for n in ("batch", "layer") for b in (32, 128)}
    v = ln_in_cnn.ANALYSIS.verdict({"bn_small_batch": with_checks(record, failing)})
    assert v["verdict"] == "not run yet"  # GN has no runs: not "under-trained"
