"""GN's grouping, decided like an LR: one rule per network (normexp/norms/layers.py), the
ablation's decision rule and file (normexp/protocol/grouping.py), the planner giving C4's GN jobs
the chosen grouping or holding them back, and the analysis side (runs of another grouping left
out of record; the report section's statement of what decided)."""

import json
import math

import hydra
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from normexp.analysis.report import gn_grouping as section
from normexp.analysis.verdict.grouping import decision_of, other_grouping
from normexp.catalogue import experiment_names, grouping_deciders
from normexp.errors import ConfigError
from normexp.models import build_model, check_model
from normexp.protocol.grouping import (
    decide,
    decision_rule,
    read_decision,
    with_decision,
    write_decision,
)
from normexp.protocol.plan import JobRecords, plan
from normexp.sweep import sweep_overrides
from normexp.tracking.store import RunRecord, run_key
from tests.helpers import REPO

RESNET_20 = {"name": "resnet", "depth": 20, "width_mult": 1, "shortcut": "A",
             "activation": "relu"}
CNN = {"name": "cnn", "widths": [16, 32, 64], "convs_per_stage": 2, "activation": "relu"}
RULE = {"arms": ["w16", "w8", "w4"], "select_on": "val_acc"}


def group_widths(model: dict, **norm: object) -> list[int]:
    """The channels per group of every GN layer of ``model`` (built on the meta device)."""
    with torch.device("meta"):
        net = build_model(model, {"name": "group", "position": "pre", **norm})
    layers = [m for m in net.modules() if isinstance(m, nn.GroupNorm)]
    return [m.num_channels // m.num_groups for m in layers]


# --- one rule per network -----------------------------------------------------------------


@pytest.mark.parametrize("model", [RESNET_20, CNN], ids=["resnet20", "cnn"])
@pytest.mark.parametrize("width", [4, 8, 16])
def test_a_constant_width_groups_every_layer_alike(model, width):
    widths = group_widths(model, grouping="width", channels_per_group=width)
    assert len(widths) == (19 if model is RESNET_20 else 6)
    assert set(widths) == {width}


def test_the_legacy_rule_jumps_8_16_2_across_the_resnet():
    widths = group_widths(RESNET_20, grouping="legacy")
    assert widths == [8] * 7 + [16] * 6 + [2] * 6  # the stem and stage 1, stage 2, stage 3
    assert group_widths(RESNET_20) == widths  # grouping null: no numbers set -> legacy


def test_a_constant_count_keeps_the_groups_and_grows_the_width():
    assert set(group_widths(CNN, grouping="count", num_groups=4)) == {4, 8, 16}


def test_a_width_that_misses_a_layer_is_refused_in_one_line():
    with pytest.raises(ConfigError) as info:
        check_model({**CNN, "widths": [4, 8, 8]}, {"name": "group", "position": "pre",
                                                   "grouping": "width", "channels_per_group": 8},
                    batch_size=2)
    assert info.value.field == "norm.channels_per_group"
    assert str(info.value) == (
        "norm.channels_per_group: 8 does not divide every normalized layer's channels "
        "(4, 4, 8, 8, 8, 8); allowed: 1, 2, 4"
    )


@pytest.mark.parametrize(
    ("norm", "field"),
    [
        ({"grouping": "width"}, "norm.channels_per_group"),  # a width rule without its width
        ({"grouping": "count"}, "norm.num_groups"),
        ({"grouping": "count", "channels_per_group": 8}, "norm.channels_per_group"),
        ({"grouping": "width", "num_groups": 4}, "norm.num_groups"),
        ({"grouping": "legacy", "channels_per_group": 8}, "norm.channels_per_group"),
    ],
)
def test_a_named_rule_needs_its_own_number(norm, field):
    with pytest.raises(ConfigError) as info:
        check_model(CNN, {"name": "group", "position": "pre", **norm}, batch_size=2)
    assert info.value.field == field and "\n" not in str(info.value)


def test_unset_grouping_fields_keep_stored_run_keys():
    config = {"norm": {"name": "group", "position": "pre", "num_groups": None}}
    added = {"norm": {**config["norm"], "grouping": None, "channels_per_group": None}}
    assert run_key(added) == run_key(config)
    chosen = {"norm": {**config["norm"], "grouping": "width", "channels_per_group": 8}}
    assert run_key(chosen) != run_key(config)


# --- the decision rule ------------------------------------------------------------------------


def rows(values: dict[str, list[float]], status: str = "ok") -> list[dict]:
    return [{"arm": a, "status": status, "val_acc": v} for a, vs in values.items() for v in vs]


def test_the_highest_pooled_validation_mean_wins_and_the_legacy_arm_is_never_chosen():
    out = decide(rows({"w16": [0.60, 0.62], "w8": [0.63, 0.63], "w4": [0.61, 0.64],
                       "legacy": [0.90, 0.90]}), RULE)
    assert out["chosen"] == "w8" and out["score"]["w8"] == pytest.approx(0.63)
    assert "legacy" not in out["score"] and out["runs"] == {"w16": 2, "w8": 2, "w4": 2}


def test_a_tie_goes_to_the_wider_group_and_a_diverged_run_scores_worst():
    tie = decide(rows({"w4": [0.5], "w8": [0.5], "w16": [0.5]}), RULE)
    assert tie["chosen"] == "w16"  # the first listed
    diverged = rows({"w16": [0.9]}, "diverged") + rows({"w16": [0.2], "w8": [0.3, 0.3],
                                                        "w4": [0.1, 0.1]})
    out = decide(diverged, RULE)
    assert out["chosen"] == "w8" and out["score"]["w16"] is None


# --- the decision file and the planner ----------------------------------------------------


class FakeRecords:
    """What the planner's JobRecords gives: (resolved config, store record) per job."""

    def __init__(self, folder, configs: dict[tuple, dict]):
        self.configs = configs
        self.folder = folder

    def __call__(self, job):
        config = self.configs[tuple(job)]
        return config, RunRecord(self.folder, config["claim"]["name"], run_key(config))


def ablation_config(arm: str, seed: int, results_dir) -> dict:
    width = {"w16": 16, "w8": 8, "w4": 4}.get(arm)
    grouping = "width" if width else "legacy"
    return {
        "claim": {"name": "gn_grouping"}, "profile": "smoke", "seed": seed,
        "paths": {"results_dir": str(results_dir)}, "arm": {"name": arm},
        "norm": {"name": "group", "grouping": grouping, "channels_per_group": width},
        "protocol": {"stage": "record", "grouping_decision": RULE},
    }


def finish(record: RunRecord, config: dict, val_acc: float, status: str = "ok") -> None:
    record.start(config)
    record.append_metrics({"epoch": 1, "val_acc": val_acc})
    record.finish(status, {"epochs": 1, "run_key": record.key, "status": status,
                           "val_acc": val_acc})


def test_the_ablations_sweep_writes_its_decision_once_complete(tmp_path):
    val = {"w16": 0.50, "w8": 0.56, "w4": 0.54, "legacy": 0.70}
    configs = {(a, f"seed={s}"): ablation_config(a, s, tmp_path) for a in val for s in (0, 1)}
    records = FakeRecords(tmp_path / "smoke", configs)
    master = {"protocol": {"grouping_decision": RULE}}
    jobs = list(configs)
    for job in jobs[:-1]:  # every run but the last legacy one
        config, record = records(job)
        finish(record, config, val[config["arm"]["name"]])
    path = write_decision(master, jobs, [], records)
    decision = json.loads(path.read_text())
    assert decision["complete"] and decision["chosen"] == "w8"  # legacy: reported only
    assert decision["sets"] == {"norm.grouping": "width", "norm.channels_per_group": 8}
    assert read_decision(tmp_path / "smoke", "gn_grouping")["chosen"] == "w8"
    # a run it was decided on is gone from the store: the decision no longer holds
    config, record = records(jobs[0])
    (record.path / "status.json").unlink()
    assert read_decision(tmp_path / "smoke", "gn_grouping") is None
    assert not json.loads(write_decision(master, jobs, [], records).read_text())["complete"]


def compose(experiment: str, results_dir, *extra: str):
    return hydra.compose(
        "config",
        overrides=[f"experiment={experiment}", "profile=smoke", f"paths.results_dir={results_dir}",
                   *extra],
        return_hydra_config=True,
    )


def test_c4s_gn_jobs_wait_for_the_decision_then_take_the_chosen_grouping(tmp_path):
    with hydra.initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        config = compose("bn_small_batch", tmp_path, "scale.smoke.sweep.batch_sizes='2'")
        basic = sweep_overrides(config)
        records = JobRecords(config)
        before = plan(config, basic, records)
        assert [records(j)[0]["norm"]["name"] for j in before.waiting] == ["group"]
        assert "group" not in {records(j)[0]["norm"]["name"] for j in before.jobs}

        decision = {"complete": True, "chosen": "w8", "run_keys": [],
                    "sets": {"norm.grouping": "width", "norm.channels_per_group": 8}}
        folder = tmp_path / "smoke" / "runs" / "gn_grouping"
        folder.mkdir(parents=True)
        (folder / "decision.json").write_text(json.dumps(decision))
        after = plan(config, basic, records)
        assert not after.waiting and len(after.jobs) == len(basic)
        gn = [records(j)[0] for j in after.jobs if records(j)[0]["norm"]["name"] == "group"]
        assert [(c["norm"]["grouping"], c["norm"]["channels_per_group"]) for c in gn] == [
            ("width", 8)
        ]
        # the ResNet's cells have no grouping fields in their norm node: they are added
        resnet = compose("bn_small_batch_resnet", tmp_path)
        job = ("experiment=bn_small_batch_resnet", "profile=smoke",
               f"paths.results_dir={tmp_path}", "cell={norm: group, batch: 2}", "seed=0")
        records = JobRecords(resnet)
        jobs, waiting = with_decision(resnet, [job], records)
        assert not waiting and jobs[0][-2:] == ("++norm.grouping=width",
                                                "++norm.channels_per_group=8")
        assert records(jobs[0])[0]["norm"]["channels_per_group"] == 8


def test_every_experiment_that_takes_a_decision_runs_after_the_one_that_makes_it():
    order = experiment_names()  # make run-sweep's (and the e2e smoke store's) order
    readers = []
    for name in order:
        declared = OmegaConf.load(REPO / "experiments" / f"{name}.yaml")
        source = OmegaConf.select(declared, "protocol.grouping_from", default=None)
        if source is not None:
            assert source in grouping_deciders() and order.index(source) < order.index(name)
            readers.append(name)
    assert set(readers) == set(section.READERS)  # what the report says trains with it


@pytest.mark.parametrize("metric", ["test_acc", "train_acc"])
def test_a_grouping_is_never_chosen_on_test_or_training_accuracy(metric):
    with pytest.raises(ConfigError) as info:
        decision_rule({"protocol": {"grouping_decision": {"arms": ["w8"], "select_on": metric}}})
    assert info.value.field == "protocol.grouping_decision.select_on"


@pytest.mark.parametrize(
    ("profile", "models", "seeds", "epochs"),
    [("quick", {"cnn"}, {0, 1, 2}, 4), ("standard", {"cnn", "resnet"}, {0, 1, 2}, 3)],
)
def test_the_ablations_cells_per_profile(tmp_path, profile, models, seeds, epochs):
    with hydra.initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        config = hydra.compose(
            "config", overrides=["experiment=gn_grouping", f"profile={profile}",
                                 f"paths.results_dir={tmp_path}"], return_hydra_config=True)
        jobs = sweep_overrides(config)
        assert len(jobs) == len(models) * 2 * 4 * len(seeds)  # x batch 2, 32 x 4 arms
        records = JobRecords(config)
        resolved = records(jobs[-1])[0]
    assert resolved["train"]["epochs"] == epochs and resolved["claim"]["name"] == "gn_grouping"
    assert resolved["protocol"]["lr_grid"]  # each cell's LR selected


# --- the analysis ---------------------------------------------------------------------------


def table(values: dict[str, list[float]]) -> pd.DataFrame:
    width = {"w16": 16, "w8": 8, "w4": 4}
    out = []
    for arm, vs in values.items():
        for seed, v in enumerate(vs):
            for model, batch in (("cnn", 2), ("resnet", 32)):
                out.append({"arm.name": arm, "model.name": model, "train.batch_size": batch,
                            "seed": seed, "status": "ok", "val_acc": v, "test_acc": v - 0.01,
                            "norm.name": "group", "norm.channels_per_group": width.get(arm),
                            "norm.grouping": "width" if arm in width else "legacy",
                            "protocol.grouping_decision.arms": "['w16', 'w8', 'w4']",
                            "protocol.grouping_decision.select_on": "val_acc",
                            "protocol.stage": "record", "train.epochs": 4})
    return pd.DataFrame(out)


def test_the_report_recomputes_the_decision_and_tells_c4_which_grouping_its_gn_used():
    ablation = table({"w16": [0.5, 0.52], "w8": [0.6, 0.61], "w4": [0.55, 0.5],
                      "legacy": [0.4, 0.42]})
    decision = decision_of(ablation)
    assert decision["chosen"] == "w8" and decision["complete"]
    c4 = pd.DataFrame({"norm.name": ["batch", "group"], "norm.grouping": [math.nan, "width"],
                       "norm.channels_per_group": [math.nan, 8.0], "seed": [0, 0],
                       "status": ["ok", "ok"]})
    tables = {"gn_grouping": ablation, "bn_small_batch": c4}
    line = section.claim_line(tables, "C8")
    assert "a constant 8 channels per group" in line and "arm w8" in line
    assert section.claim_line(tables, "C3") == ""
    text = "\n".join(section.markdown(tables))
    assert "**Decided: w8**" in text and "| legacy |" in text


def test_gn_runs_without_the_decided_grouping_are_not_of_record(tmp_path):
    df = pd.DataFrame({
        "norm.name": ["group", "group", "batch"],
        "norm.grouping": ["width", math.nan, math.nan],
        "norm.channels_per_group": [8.0, math.nan, math.nan],
        "protocol.grouping_from": ["gn_grouping", math.nan, "gn_grouping"],
    })
    assert other_grouping(df, None).tolist() == [False, True, False]  # no decision: older runs
    folder = tmp_path / "runs" / "gn_grouping"
    folder.mkdir(parents=True)
    decision = {"complete": True, "run_keys": [],
                "sets": {"norm.grouping": "width", "norm.channels_per_group": 4}}
    (folder / "decision.json").write_text(json.dumps(decision))
    assert other_grouping(df, tmp_path).tolist() == [True, True, False]  # not w4
