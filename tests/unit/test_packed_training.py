"""Packed groups in training and in the store: K runs of one cell trained as one packed model
write the runs their separate jobs would (same keys, statuses, metrics within float32
rounding), resume from their checkpoints, keep a diverging member to itself, and the sweeper
groups only what packs (normexp/protocol/pack.py, normexp/train/packed_fit.py)."""

import json

import hydra
import pytest

from normexp.job import member_configs, run_job
from normexp.protocol.pack import group_jobs, group_key, pack_limit, why_not_packed
from normexp.protocol.plan import JobRecords
from normexp.sweep import sweep_overrides
from normexp.tasks import get_task
from normexp.tracking.store import record_of
from normexp.train import Diverged
from normexp.validate import resolve_config
from tests.unit.test_convergence_check import finish

pytestmark = pytest.mark.usefixtures("one_torch_thread")
MEMBERS = ((0, 1.0), (1, 0.5), (2, 2.0))  # (seed, LR multiplier)
# batch 8: the largest the CNN packs at on a CPU, the fewest steps per epoch (32 at smoke)
CELL = ("experiment=bn_small_batch", "norm=batch", "train.batch_size=8", "train.epochs=1")
TWO_EPOCHS = "train.epochs=2"  # where a second epoch is what is tested
# float32: a packed step rounds as the separate one does up to the last bit (the grouped conv
# sums in another order); over two epochs of a tiny net that stays far below 1e-3 of the loss,
# and an evaluation may flip the odd borderline image (1 of 128).
LOSS_RTOL, ACC_ATOL = 1e-3, 2 / 128


def member_cfgs(smoke_cfg, *extra: str, members=MEMBERS) -> list[dict]:
    return [
        resolve_config(smoke_cfg(*CELL, f"seed={s}", f"optim.lr_mult={m}", *extra))
        for s, m in members
    ]


def train_separately(cfgs: list[dict]) -> list[tuple[dict, list[dict]]]:
    task, out = get_task("classification"), []
    for cfg in cfgs:
        logged: list[dict] = []
        try:
            out.append((task.train(cfg, logged.append), logged))
        except Diverged as exc:
            out.append((exc, logged))
    return out


def train_packed(cfgs: list[dict], checkpoints=None) -> list[tuple[object, list[dict]]]:
    logs: list[list[dict]] = [[] for _ in cfgs]
    outcomes = get_task("classification").train_packed(
        cfgs, [log.append for log in logs], checkpoints=checkpoints
    )
    return list(zip(outcomes, logs, strict=True))


def assert_close(packed: dict, separate: dict) -> None:
    """The metrics the separate run logged (an epoch's line, or its summary), in the packed."""
    losses = [k for k in ("train_loss", "val_loss", "test_loss") if k in separate]
    accuracies = [
        k for k in ("train_acc", "val_acc", "test_acc", "test_acc_batch_stats") if k in separate
    ]
    assert {"train_loss", "val_acc"} <= set(losses + accuracies)
    for key in losses:
        assert packed[key] == pytest.approx(separate[key], rel=LOSS_RTOL), key
    for key in accuracies:
        assert packed[key] == pytest.approx(separate[key], abs=ACC_ATOL), key
    assert packed["lr"] == pytest.approx(separate["lr"], rel=1e-12)


def test_a_packed_group_trains_each_member_as_its_separate_run(smoke_cfg):
    cfgs = member_cfgs(smoke_cfg, TWO_EPOCHS)
    separate, packed = train_separately(cfgs), train_packed(cfgs)
    for (s_summary, s_log), (p_summary, p_log) in zip(separate, packed, strict=True):
        assert [m["epoch"] for m in p_log] == [m["epoch"] for m in s_log] == [1, 2]
        for p_epoch, s_epoch in zip(p_log, s_log, strict=True):
            assert_close(p_epoch, s_epoch)
        assert_close(p_summary, s_summary)
        assert p_summary["packed_replicas"] == 3 and "packed_replicas" not in s_summary
        assert set(s_summary) <= set(p_summary)  # every key its separate run writes
    # the members are not one run thrice: their seeds and LRs are honoured
    losses = [p[0]["train_loss"] for p in packed]
    assert len(set(losses)) == 3


def test_a_diverging_member_ends_diverged_and_the_others_train_on(smoke_cfg):
    members = ((0, 1.0), (1, 1e6))  # an LR a million times the chosen one: NaN within steps
    cfgs = member_cfgs(smoke_cfg, members=members)
    (ok, ok_log), (bad, bad_log) = train_packed(cfgs)
    assert isinstance(bad, Diverged) and "non-finite training loss" in str(bad)
    (alone, alone_log), (sep_bad, _) = train_separately(cfgs)
    assert isinstance(sep_bad, Diverged) and len(bad_log) == 0
    assert_close(ok, alone)


def test_a_killed_group_resumes_from_its_checkpoints_as_if_never_stopped(smoke_cfg, tmp_path):
    cfgs = member_cfgs(smoke_cfg, TWO_EPOCHS)
    whole = train_packed(cfgs)
    checkpoints = [tmp_path / f"ckpt{k}.pt" for k in range(len(cfgs))]

    class Killed(Exception):
        pass

    logs: list[list[dict]] = [[] for _ in cfgs]

    def stop_in_epoch_two(k: int):
        def log(metrics: dict) -> None:
            if metrics["epoch"] == 2:
                raise Killed  # after every member saved epoch 1, before epoch 2 is saved
            logs[k].append(metrics)

        return log

    with pytest.raises(Killed):
        get_task("classification").train_packed(
            cfgs, [stop_in_epoch_two(k) for k in range(3)], checkpoints=checkpoints
        )
    resumed = train_packed(cfgs, checkpoints=checkpoints)
    for (w_summary, _), (r_summary, r_log) in zip(whole, resumed, strict=True):
        assert r_summary["resumed_at_epoch"] == 1 and [m["epoch"] for m in r_log] == [1, 2]
        for key in ("train_loss", "val_acc", "test_acc", "lr"):
            assert r_summary[key] == w_summary[key], key  # the same steps: the same bits


def test_a_group_job_writes_each_members_run_under_its_separate_key(smoke_cfg):
    others = "runtime.pack_with=[{seed:1,lr_mult:0.5},{seed:2,lr_mult:2.0}]"
    group = smoke_cfg(*CELL, "seed=0", others)
    configs = [resolve_config(c) for c in member_configs(group)]
    assert [(c["seed"], c["optim"]["lr_mult"]) for c in configs] == [(0, 1.0), (1, 0.5), (2, 2.0)]
    separate = member_cfgs(smoke_cfg)
    assert [record_of(c).key for c in configs] == [record_of(c).key for c in separate]
    summary = run_job(group)
    assert summary["status"] == "ok" and len(summary["members"]) == 3
    for config in separate:
        record = record_of(config)
        assert record.status["status"] == "ok"
        saved = json.loads((record.path / "summary.json").read_text())
        assert saved["packed_replicas"] == 3 and saved["run_key"] == record.key
        assert json.loads((record.path / "config.json").read_text())["seed"] == config["seed"]
        assert not (record.path / "checkpoint.pt").exists()
    assert run_job(group)["members"] == []  # every member finished: nothing trains again


def test_why_not_packed_names_what_trains_separately(smoke_cfg):
    assert why_not_packed(resolve_config(smoke_cfg(*CELL))) is None
    noisy = resolve_config(smoke_cfg(*CELL, "norm=noisy_batch"))
    assert "noisy_batch" in why_not_packed(noisy) and pack_limit(noisy) == 1
    off = resolve_config(smoke_cfg(*CELL, "runtime.pack=off"))
    assert why_not_packed(off) == "runtime.pack is off"
    assert pack_limit(resolve_config(smoke_cfg(*CELL))) == 10  # auto at batch 8 on the CPU
    large = resolve_config(smoke_cfg(*CELL[:-2], "train.batch_size=32"))
    assert pack_limit(large) == 1 and pack_limit(large, "cuda:0") == 16
    assert pack_limit(resolve_config(smoke_cfg(*CELL, "runtime.pack=2"))) == 2
    mlp = resolve_config(smoke_cfg(*CELL, "model=mlp"))  # packs exactly, but slower on a CPU
    assert why_not_packed(mlp) is None and pack_limit(mlp) == 1 and pack_limit(mlp, "cuda") == 16
    lstm = resolve_config(smoke_cfg("experiment=rnn_norm"))
    assert why_not_packed(lstm) is not None


def sweep_config(tmp_path, *extra: str):
    """A smoke sweep of BN and noisy BN at batch 2 and 32, three seeds (as the sweeper sees it)."""
    return hydra.compose(
        "config",
        overrides=[
            "experiment=bn_small_batch", "profile=smoke", f"paths.results_dir={tmp_path}",
            "hydra.sweeper.params.norm='batch,noisy_batch'", "scale.smoke.sweep.batch_sizes='2,32'",
            "hydra.sweeper.params.seed='0,1,2'", *extra,
        ],
        return_hydra_config=True,
    )


def test_the_sweeper_packs_the_seeds_of_small_batch_cells_only(hydra_ctx, tmp_path):
    config = sweep_config(tmp_path)
    records = JobRecords(config)
    jobs = [tuple(j) for j in sweep_overrides(config)]
    grouped = group_jobs(jobs, records)
    packs = [j for j in grouped if any(o.startswith("runtime.pack_with=") for o in j)]
    assert len(packs) == 1  # BN at batch 2: noisy BN does not pack, batch 32 does not pay
    pack = packs[0]
    assert "norm=batch" in pack and "train.batch_size=2" in pack
    assert sum(1 for j in grouped if group_key(j[:-1]) == group_key(pack[:-1])) == 1
    assert len(grouped) == len(jobs) - 2  # three members, one job
    members = [resolve_config(c) for c in member_configs(records.compose(pack))]
    assert sorted(c["seed"] for c in members) == [0, 1, 2]
    assert {records(j)[1].key for j in jobs if group_key(j) == group_key(pack[:-1])} == {
        record_of(c).key for c in members
    }
    # a finished member is never packed again; with one left, nothing packs
    for job in jobs:
        cfg, record = records(job)
        if cfg["norm"]["name"] == "batch" and cfg["train"]["batch_size"] == 2 and cfg["seed"] < 2:
            finish(record, cfg, 0.5)
    assert not any(
        o.startswith("runtime.pack_with=") for j in group_jobs(jobs, records) for o in j
    )
    off = sweep_config(tmp_path, "runtime.pack=off")
    off_jobs = [tuple(j) for j in sweep_overrides(off)]
    assert group_jobs(off_jobs, JobRecords(off)) == off_jobs


def test_the_cost_model_prices_a_packed_group_below_its_separate_runs(smoke_cfg):
    from normexp.bench.cost import EVAL_ONCE, job_seconds, pack_speedup, priced_seconds

    cfgs = member_cfgs(smoke_cfg, "train.batch_size=4")  # the CNN at batch 4: one group
    jobs = [("record", c) for c in cfgs]
    before = priced_seconds(jobs, now=False)
    assert before == [job_seconds(c) for c in cfgs]
    gain = pack_speedup("cnn", 4, 3)
    assert 1.0 < gain < pack_speedup("cnn", 2, 3)  # between batch 2's gain and batch 8's
    now = priced_seconds(jobs)
    assert now == pytest.approx([b * EVAL_ONCE["cnn"] / gain for b in before])
    off = member_cfgs(smoke_cfg, "train.batch_size=4", "runtime.pack=off")
    alone = [("record", c) for c in off]
    assert priced_seconds(alone) == pytest.approx([b * EVAL_ONCE["cnn"] for b in before])
    assert pack_speedup("cnn", 32, 4) == pack_speedup("mlp", 2, 4) == pack_speedup("cnn", 2, 1) == 1
