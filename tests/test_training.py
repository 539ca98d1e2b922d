"""The classification loop: determinism, resume after a kill, divergence, L1 and precise BN."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import normexp
from normexp.train import Diverged
from normexp.train.classification import train_classifier
from normexp.validate import resolve_config

CONFIGS = str(Path(normexp.__file__).resolve().parent.parent / "configs")


def config(data_dir: Path, extra: list[str], *overrides: str) -> dict:
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "profile=smoke",
                "train.epochs=3",
                "train.batch_size=32",
                f"paths.data_dir={data_dir}",
                "runtime.progress=false",
                *extra,
                *overrides,
            ],
        )
    return resolve_config(cfg)


def train(cfg: dict, **kwargs) -> tuple[dict, list[dict]]:
    logged: list[dict] = []
    summary = train_classifier(cfg, logged.append, **kwargs)
    return summary, logged


class Killed(Exception):
    pass


def test_same_seed_same_metrics_other_seed_other_metrics(cifar_data):
    cfg = config(*cifar_data)
    first, _ = train(cfg)
    again, _ = train(cfg)
    other, _ = train(config(*cifar_data, "seed=1"))
    keys = ("train_loss", "val_loss", "test_loss", "test_acc_batch_stats")
    assert {k: first[k] for k in keys} == {k: again[k] for k in keys}
    assert first["train_loss"] != other["train_loss"]


def test_a_killed_run_resumes_from_its_checkpoint_to_the_same_result(cifar_data, tmp_path):
    cfg = config(*cifar_data)
    reference, reference_epochs = train(cfg)
    checkpoint = tmp_path / "checkpoint.pt"

    def die_in_epoch_3(metrics: dict) -> None:
        if metrics["epoch"] == 3:
            raise Killed  # as if SIGKILL arrived while epoch 3 was being logged

    with pytest.raises(Killed):
        train_classifier(cfg, die_in_epoch_3, checkpoint=checkpoint)
    assert checkpoint.exists()
    resumed, resumed_epochs = train(cfg, checkpoint=checkpoint)
    assert resumed["resumed_at_epoch"] == 2
    assert [m["epoch"] for m in resumed_epochs] == [1, 2, 3]  # old epochs re-logged once
    for key in ("train_loss", "val_loss", "test_loss", "test_acc"):
        assert resumed[key] == reference[key], key
    assert resumed_epochs[0]["train_loss"] == reference_epochs[0]["train_loss"]


def test_a_huge_learning_rate_diverges(cifar_data):
    cfg = config(*cifar_data, "norm=none", "optim.lr_per_128=1e6", "optim.warmup_frac=0")
    with pytest.raises(Diverged):
        train(cfg)


def test_l1_penalty_enters_the_training_loss(cifar_data):
    def weight_l1(l1: float) -> float:
        cfg = config(*cifar_data, f"optim.l1={l1}", "optim.weight_decay=0")
        summary, _ = train(cfg)
        return summary["train_loss"]

    # The penalty enters the loss: with a strong L1 the training loss (which includes it) rises.
    assert weight_l1(1e-2) > weight_l1(0.0)


def test_precise_bn_reports_its_accuracy(cifar_data):
    summary, _ = train(config(*cifar_data, "train.precise_bn_batches=2", "train.epochs=1"))
    assert summary["precise_bn_batches_used"] >= 1
    assert 0.0 <= summary["test_acc_precise_bn"] <= 1.0
