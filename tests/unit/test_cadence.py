"""Validation cadence (train.val_every, normexp/train/cadence.py): the last epoch always, every
N-th before it; epochs without validation log no validation keys, training is the same as with
validation every epoch, packed groups follow the same cadence, and the field keeps the keys of
runs stored before it (every epoch is its neutral value)."""

import pytest

from normexp.errors import ConfigError
from normexp.schema import validate
from normexp.tasks import get_task
from normexp.tracking.collect import scale_signature
from normexp.tracking.store import run_key
from normexp.train.cadence import validation_due
from normexp.validate import resolve_config
from tests.unit.test_store import make_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")
VAL_KEYS = {"val_acc", "val_loss"}


@pytest.mark.parametrize(
    ("every", "epochs", "due"),
    [
        (1, 4, [1, 2, 3, 4]),
        (0, 4, [4]),  # the last only
        (2, 5, [2, 4, 5]),
        (8, 16, [8, 16]),
        (0, 1, [1]),
    ],
)
def test_the_last_epoch_and_every_nth_are_validated(every, epochs, due):
    train = {"val_every": every, "max_minutes": None}
    assert [e for e in range(1, epochs + 1) if validation_due(e, epochs, train)] == due


def test_every_epoch_with_a_wall_budget_or_a_config_from_before_the_field():
    assert validation_due(1, 4, {"val_every": 0, "max_minutes": 5.0})  # any epoch may be last
    assert validation_due(1, 4, {})  # stored before the field: every epoch, as it ran


@pytest.fixture
def config(smoke_cfg):
    return lambda *overrides: resolve_config(
        smoke_cfg("data.n_train=128", *overrides)
    )


def train(cfg: dict) -> tuple[dict, list[dict]]:
    logged: list[dict] = []
    return get_task(cfg["train"]["task"]).train(cfg, logged.append), logged


def test_epochs_without_validation_log_no_validation_and_train_the_same(config):
    run = ("train.epochs=3", "train.batch_size=64")
    every, every_epochs = train(config(*run))
    sparse, sparse_epochs = train(config(*run, "train.val_every=2"))
    assert [m.keys() >= VAL_KEYS for m in sparse_epochs] == [False, True, True]
    assert not sparse_epochs[0].keys() & VAL_KEYS  # absent, not a placeholder value
    for a, b in zip(every_epochs, sparse_epochs, strict=True):  # evaluation changes no training
        assert a["train_loss"] == b["train_loss"] and a["train_acc"] == b["train_acc"]
    for key in ("val_acc", "test_acc", "test_acc_batch_stats", "did_not_train"):
        assert sparse[key] == every[key], key  # the final model's, validated at the last epoch
    assert sparse["best_val_acc"] == max(m["val_acc"] for m in sparse_epochs[1:])


def test_a_packed_group_follows_the_cadence(config):
    cfgs = [
        config("train.epochs=2", "train.val_every=0", "train.batch_size=16", f"seed={seed}",
               "runtime.compile=on")  # fmt: skip
        for seed in (0, 1)
    ]
    logs: list[list[dict]] = [[], []]
    outcomes = get_task("classification").train_packed(cfgs, [log.append for log in logs])
    for summary, logged in zip(outcomes, logs, strict=True):
        assert [m.keys() >= VAL_KEYS for m in logged] == [False, True]
        assert summary["val_acc"] == summary["best_val_acc"] == logged[-1]["val_acc"]
        assert summary["compiled"] is False  # a packed group never compiles, even when asked


def test_every_epoch_is_the_neutral_value_of_the_run_key():
    config = make_config()
    at = {n: {**config, "train": {**config["train"], "val_every": n}} for n in (0, 1, 4)}
    assert run_key(at[1]) == run_key(config) != run_key(at[0]) != run_key(at[4])


def test_a_negative_cadence_is_refused_naming_the_field(config):
    cfg = config("train.epochs=3", "train.batch_size=64")
    cfg["train"]["val_every"] = -1
    with pytest.raises(ConfigError, match=r"^train\.val_every: -1 is not allowed"):
        validate(cfg)


def test_the_cadence_is_no_part_of_a_runs_scale():
    # one scale per figure and statistic: runs stored before the field share their scale
    row = {"n_train": 10_000, "epochs": 8}
    before = scale_signature({"profile": "standard", "scale": {"standard": row}})
    after = scale_signature({"profile": "standard", "scale": {"standard": {**row, "val_every": 0}}})
    assert before == after
