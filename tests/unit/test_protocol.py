"""The fair protocol: LR selection (pure rule and the sweeper's plan), the step budget, a sweep's
three stages end to end, and the committed store's run keys (the convergence check's rule and
plan: tests/unit/test_convergence_check.py)."""

import json
import math
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import pytest
import torch

from normexp.protocol.plan import JobRecords, plan
from normexp.protocol.select import LR_MULT, select_lr, widened
from normexp.sweep import sweep_overrides
from normexp.tracking.store import RunRecord, run_key, selection_path
from normexp.train.fit import TaskHooks, fit
from tests.helpers import REPO, run_cli

CONFIG_DIR = str(REPO / "configs")


# --- the selection rule ---------------------------------------------------------------------


def runs(rows: list[tuple]) -> pd.DataFrame:
    """Selection runs (norm, batch, multiplier, seed, status, val_acc) with test columns."""
    df = pd.DataFrame(rows, columns=["norm", "batch", LR_MULT, "seed", "status", "val_acc"])
    df["test_acc"] = 1 - df["val_acc"]  # anti-correlated: a test-reading rule would pick wrong
    df["test_err"] = df["val_acc"]
    return df


def synthetic() -> pd.DataFrame:
    rows = []
    best = {("batch", 2): 0.5, ("batch", 32): 1.0, ("group", 2): 2.0, ("group", 32): 0.25}
    for (norm, batch), peak in best.items():
        for m in (0.25, 0.5, 1.0, 2.0):
            for seed in (100, 101):
                val = 0.6 - 0.1 * abs(math.log2(m / peak)) + 0.001 * (seed - 100)
                rows.append((norm, batch, m, seed, "ok", val))
    return runs(rows)


def chosen(result: pd.DataFrame) -> dict:
    return {(r.norm, r.batch): r.chosen for r in result.itertuples()}


def test_select_lr_picks_each_cells_best_validation_mean():
    result = select_lr(synthetic(), ["norm", "batch"], [0.25, 0.5, 1.0, 2.0], seeds=2)
    assert chosen(result) == {
        ("batch", 2): 0.5,
        ("batch", 32): 1.0,
        ("group", 2): 2.0,
        ("group", 32): 0.25,
    }
    edges = {(r.norm, r.batch): r.at_edge for r in result.itertuples()}
    assert edges == {("batch", 2): False, ("batch", 32): False, ("group", 2): True,
                     ("group", 32): True}
    assert result["complete"].all()
    first = result.iloc[0]
    assert first["score"][0.5] == pytest.approx(0.6005)  # the mean over the selection seeds


def test_selection_never_reads_test_metrics():
    df = synthetic()
    grid = [0.25, 0.5, 1.0, 2.0]
    reference = chosen(select_lr(df, ["norm", "batch"], grid))
    rng = np.random.default_rng(0)
    poisoned = df.assign(test_acc=rng.permutation(df["test_acc"].to_numpy()), test_err=np.nan)
    assert chosen(select_lr(poisoned, ["norm", "batch"], grid)) == reference
    no_test = df.drop(columns=["test_acc", "test_err"])
    assert chosen(select_lr(no_test, ["norm", "batch"], grid)) == reference
    for metric in ("test_acc", "test_err", "train_loss"):
        with pytest.raises(ValueError, match="validation metric or the training accuracy"):
            select_lr(df, ["norm", "batch"], grid, metric=metric)


def test_a_claim_about_training_selects_on_the_training_accuracy_alone():
    # C9 selects on the last epoch's training accuracy: validation is then never read
    df = synthetic()
    grid = [0.25, 0.5, 1.0, 2.0]
    by_val = chosen(select_lr(df, ["norm", "batch"], grid, seeds=2))
    trained = df.assign(train_acc=df["val_acc"], val_acc=1 - df["val_acc"])
    assert chosen(select_lr(trained, ["norm", "batch"], grid, "train_acc", seeds=2)) == by_val
    only_train = trained.drop(columns=["val_acc"])
    assert chosen(select_lr(only_train, ["norm", "batch"], grid, "train_acc", 2)) == by_val


def test_ties_go_to_the_smaller_lr_and_diverged_runs_score_worst():
    df = runs(
        [
            ("batch", 2, 0.5, 100, "ok", 0.4),
            ("batch", 2, 1.0, 100, "ok", 0.4),
            ("batch", 2, 2.0, 100, "diverged", np.nan),
            ("group", 2, 0.5, 100, "ok", 0.3),
            ("group", 2, 1.0, 100, "ok", 0.5),
            ("group", 2, 2.0, 100, "diverged", 0.9),  # a diverged run's last score is ignored
        ]
    )
    result = select_lr(df, ["norm", "batch"], [0.5, 1.0, 2.0])
    assert chosen(result) == {("batch", 2): 0.5, ("group", 2): 1.0}
    assert result.set_index("norm").loc["group", "score"][2.0] == -math.inf


def test_a_cell_missing_a_grid_value_gets_no_choice():
    df = runs([("batch", 2, 0.5, 100, "ok", 0.4), ("batch", 2, 1.0, 100, "failed", np.nan)])
    result = select_lr(df, ["norm", "batch"], [0.5, 1.0])
    assert not result.iloc[0]["complete"] and result.iloc[0]["chosen"] is None
    result = select_lr(df.iloc[:1], ["norm", "batch"], [0.5], seeds=2)  # one of two seeds
    assert not result.iloc[0]["complete"]


def test_widening_adds_one_step_past_the_winning_edge():
    assert widened([0.5, 1.0, 2.0], 2.0) == [0.5, 1.0, 2.0, 4.0]
    assert widened([0.5, 1.0, 2.0], 0.5) == [0.25, 0.5, 1.0, 2.0]
    assert widened([0.5, 1.0, 2.0], 1.0) == [0.5, 1.0, 2.0]


# --- the sweeper's plan (in process, fake store) ---------------------------------------------


def master_config(tmp_path: Path, *extra: str):
    return hydra.compose(
        "config",
        overrides=[
            "experiment=not_ics",
            "profile=smoke",
            f"paths.results_dir={tmp_path}",
            "hydra.sweeper.params.norm='none,batch'",
            *extra,
        ],
        return_hydra_config=True,
    )


def value(job: tuple[str, ...], key: str) -> str:
    return next(o.split("=", 1)[1] for o in job if o.split("=", 1)[0] == key)


def finish(record: RunRecord, config: dict, status: str, val_acc: float) -> None:
    record.start(config)
    record.append_metrics({"epoch": 1, "val_acc": val_acc})
    summary = {"epochs": 1, "run_key": record.key, "status": status, "val_acc": val_acc}
    summary["train_acc"] = val_acc  # what not_ics selects on (C9 is about training)
    summary["test_acc"] = 1 - val_acc
    record.finish(status, summary)


def test_plan_stages_selection_widening_and_record_jobs(tmp_path):
    with hydra.initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        config = master_config(
            tmp_path, "protocol.lr_grid=[0.5,2.0]", "protocol.max_widen=1", "protocol.check=null"
        )  # the check stage: tests/unit/test_convergence_check.py
        basic = sweep_overrides(config)
        records = JobRecords(config)
        first = plan(config, basic, records)
        selects = [j for j in first.jobs if "protocol.stage=select" in j]
        assert len(first.jobs) == len(selects) == 2 * 2  # 2 norms x 2 multipliers x 1 seed
        assert sorted((value(j, "norm"), value(j, LR_MULT)) for j in selects) == [
            (n, m) for n in ("batch", "none") for m in ("0.5", "2.0")
        ]
        assert all("seed=100" in j for j in selects) and len(first.unplanned) == 2

        # none: 0.5 wins (inside after one widening below); batch: 2.0 wins (an edge)
        val = {("none", 0.5): 0.5, ("none", 2.0): 0.2, ("batch", 0.5): 0.3, ("batch", 2.0): 0.6}
        for job in selects:
            cfg, record = records(job)
            finish(record, cfg, "ok", val[cfg["norm"]["name"], cfg["optim"]["lr_mult"]])
        second = plan(config, basic, records)
        new = [j for j in second.jobs if j not in first.jobs]
        assert sorted((value(j, "norm"), value(j, LR_MULT)) for j in new) == [
            ("batch", "4.0"),
            ("none", "0.25"),
        ]

        # none: 0.25 is worse, 0.5 stays; batch: 4.0 is better, an edge again, widened no more
        widened_val = {"none": 0.1, "batch": 0.7}
        for job in new:
            cfg, record = records(job)
            finish(record, cfg, "ok", widened_val[cfg["norm"]["name"]])
        third = plan(config, basic, records)
        record_jobs = [j for j in third.jobs if "protocol.stage=select" not in j]
        assert sorted((value(j, "norm"), value(j, LR_MULT)) for j in record_jobs) == [
            ("batch", "4.0"),
            ("none", "0.5"),
        ]
        assert not third.unplanned
        outcome = third.selection["norm=batch"]
        assert outcome["at_edge"] and outcome["widened"] == 1 and outcome["chosen"] == 4.0
        # record runs: the sweep's own seed, stage record, the chosen multiplier in the config
        cfg, _ = records(next(j for j in record_jobs if "norm=batch" in j))
        assert cfg["seed"] == 0 and cfg["protocol"]["stage"] == "record"
        assert cfg["optim"]["lr_mult"] == 4.0


def test_the_sweep_callback_and_the_sweeper_share_one_jobrecords(tmp_path):
    # The callback checks every job before the sweeper plans them: the sweeper reuses those
    # configs (each job composed once); another sweep (another master config) gets its own.
    with hydra.initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        config = master_config(tmp_path)
        other = master_config(tmp_path)
        records = JobRecords.of_sweep(config)
        job = tuple(sweep_overrides(config)[0])
        checked = records(job)
        again = JobRecords.of_sweep(config)
        assert again is records and again(job) is checked  # cached, not composed again
        assert JobRecords.of_sweep(other) is not records


def test_without_a_grid_the_plan_is_the_basic_sweepers_jobs(tmp_path):
    with hydra.initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        for experiment in sorted(p.stem for p in (REPO / "experiments").glob("*.yaml")):
            config = hydra.compose(
                "config",
                overrides=[f"experiment={experiment}", "profile=smoke",
                           f"paths.results_dir={tmp_path}"],
                return_hydra_config=True,
            )
            assert config.hydra.sweeper._target_.endswith(".ProtocolSweeper")  # the default
            basic = [tuple(j) for j in sweep_overrides(config)]
            planned = plan(config, basic, JobRecords(config))
            # an empty store: GN jobs that take gn_grouping's decision wait for it, in order
            assert planned.jobs == [j for j in basic if j not in planned.waiting]
            assert set(planned.waiting) <= set(basic)
            assert bool(planned.waiting) == (experiment in ("bn_small_batch",
                                                            "bn_small_batch_remedies"))


def test_selection_seeds_must_not_be_seeds_of_record(tmp_path):
    from normexp.errors import ConfigError

    with hydra.initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        config = master_config(
            tmp_path, "protocol.lr_grid=[0.5,2.0]", "hydra.sweeper.params.seed='0,100'"
        )
        with pytest.raises(ConfigError, match="protocol.selection_seeds"):
            plan(config, sweep_overrides(config), JobRecords(config))


# --- the step budget --------------------------------------------------------------------------


class Counting(TaskHooks):
    """A linear model on constant batches: counts the optimizer steps taken."""

    headline = "val_acc"

    def __init__(self, cfg: dict) -> None:
        from normexp.train.optim import build_optimizer_and_scheduler

        self.model = torch.nn.Linear(2, 1)
        self.steps_per_epoch = 7
        self.optimizer, self.scheduler = build_optimizer_and_scheduler(
            self.model, cfg, self.steps_per_epoch
        )
        self.taken: list[int] = []

    def batches(self):
        return [torch.ones(4, 2)] * self.steps_per_epoch

    def loss(self, batch, step):
        self.taken.append(step)
        return self.model(batch).pow(2).mean(), len(batch)

    def evaluate(self, metrics: dict) -> None:
        metrics["val_acc"] = 0.5


def budget_config(epochs: int, steps: int | None) -> dict:
    optim = {"name": "sgd", "lr_per_128": 0.1, "lr_scaling": "none", "lr_mult": 1.0,
             "momentum": 0.0, "nesterov": False, "weight_decay": 0.0,
             "decay_norm_and_bias": False, "schedule": "onecycle", "warmup_frac": 0.2}
    train = {"epochs": epochs, "steps": steps, "batch_size": 4, "deterministic": True,
             "device": "cpu"}
    return {"train": train, "optim": optim, "seed": 0,
            "runtime": {"threads": 1, "progress": False}, "norm": {"name": "x"}}


@pytest.mark.parametrize(("epochs", "steps", "taken", "logged"), [(3, None, 21, 3), (3, 10, 10, 2)])
def test_budget_in_steps_stops_after_exactly_n_steps(epochs, steps, taken, logged):
    hooks: list[Counting] = []

    def build(device):
        hooks.append(Counting(budget_config(epochs, steps)))
        return hooks[0]

    logged_epochs: list[dict] = []
    summary = fit(budget_config(epochs, steps), build, logged_epochs.append)
    assert hooks[0].taken == list(range(taken))
    assert len(logged_epochs) == summary["epochs"] == logged
    # the schedule spans the budget: the last step's LR is the last of a one-cycle to zero
    assert hooks[0].optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


# --- the committed store keeps its keys -------------------------------------------------------


def test_committed_runs_keep_their_keys():
    configs = sorted((REPO / "results").glob("**/runs/*/*/config.json"))
    if not configs:
        pytest.skip("no committed runs in this checkout")
    for path in configs:
        config = json.loads(path.read_text())
        assert run_key(config) == path.parent.name, path


def test_selection_file_sits_in_the_experiments_store_folder(tmp_path):
    assert selection_path(tmp_path, "x") == RunRecord(tmp_path, "x", "k").path.parent / (
        "selection.json"
    )


# --- end to end: a sweep under the protocol, then the same command again -----------------------


@pytest.mark.slow
def test_protocol_sweep_selects_records_checks_and_resumes(tmp_path, cifar_data):
    from normexp.analysis.columns import table
    from normexp.analysis.verdict import ladder
    from normexp.analysis.verdict.convergence import cell_convergence
    from normexp.tracking.collect import collect_runs

    data_dir, extra = cifar_data
    args = [
        "normexp.run", "-m", "experiment=not_ics", "profile=smoke", "tracking.mode=disabled",
        "runtime.progress=false", f"hydra.sweep.dir={tmp_path / 'hydra'}",
        "hydra.sweeper.params.norm='none,batch'", "protocol.lr_grid=[0.5,2.0]",
        "protocol.max_widen=0", "protocol.check.norm=batch", "protocol.ladder=[0.5]",
        "train.steps=2", *extra,  # a step budget: the ladder's rung is 1 step, the check's 4
        "hydra.launcher.n_jobs=1",  # the stages are the point here; workers: test_interrupt
    ]
    first = run_cli(args, tmp_path / "results", data_dir)
    assert first.returncode == 0, first.stderr[-3000:]
    store = tmp_path / "results" / "smoke" / "runs" / "not_ics"
    configs = [json.loads(p.read_text()) for p in store.glob("*/config.json")]
    stages = sorted(c["protocol"]["stage"] for c in configs)
    # check and ladder: the declared cell (batch), at twice and half the record's 2 steps
    assert stages == ["check", "ladder"] + ["record"] * 2 + ["select"] * 4
    (rung,) = [c for c in configs if c["protocol"]["stage"] == "ladder"]
    assert rung["norm"]["name"] == "batch" and rung["train"]["steps"] == 1
    selection = json.loads(selection_path(tmp_path / "results" / "smoke", "not_ics").read_text())
    picks = {cell: entry["chosen"] for cell, entry in selection["cells"].items()}
    assert set(picks) == {"norm=none", "norm=batch"}
    record_steps = set()
    for c in configs:
        if c["protocol"]["stage"] in ("record", "ladder", "check"):
            assert c["seed"] == 0 and c["optim"]["lr_mult"] == picks[f"norm={c['norm']['name']}"]
        if c["protocol"]["stage"] == "record":
            record_steps.add(c["train"]["steps"])
    (check,) = [c for c in configs if c["protocol"]["stage"] == "check"]
    assert check["norm"]["name"] == "batch" and [check["train"]["steps"] / 2] == [*record_steps]
    assert "sweep of 8 runs" in first.stderr

    # collected: the check and ladder runs are in the raw table, never in the runs of record
    raw = collect_runs(tmp_path / "results" / "smoke", "not_ics")
    assert len(raw) == 8 and len(table({"not_ics": raw}, "not_ics")) == 2
    assert ladder.rungs({"not_ics": raw}) == [0.5]
    cells = cell_convergence(raw).set_index("norm.name")
    assert cells.loc["batch", "converged"] in (True, False)  # checked: judged by the rule
    assert cells.loc["none", "converged"] is None and not cells.loc["none", "declared"]

    again = run_cli(args, tmp_path / "results", data_dir)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "sweep of 8 runs (8 finished before, skipped)" in again.stderr
    again_selection = selection_path(tmp_path / "results" / "smoke", "not_ics").read_text()
    assert json.loads(again_selection) == selection
