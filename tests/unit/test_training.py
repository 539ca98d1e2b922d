"""The training skeleton (resume, divergence) and the classification task: determinism, resume
after a kill, divergence, L1, precise BN and what is evaluated when."""

import math
import os

import pytest
import torch
import torch.nn.functional as F

from normexp.train import Diverged
from normexp.train.classification import Classification, train_classifier
from normexp.train.evaluate import evaluate, evaluate_with_batch_stats
from normexp.train.fit import DIVERGENCE_CHECK_EVERY, TaskHooks, fit
from normexp.validate import resolve_config


@pytest.fixture
def config(smoke_cfg):
    return lambda *overrides: resolve_config(
        smoke_cfg("train.epochs=3", "train.batch_size=32", *overrides)
    )


def train(cfg: dict, **kwargs) -> tuple[dict, list[dict]]:
    logged: list[dict] = []
    summary = train_classifier(cfg, logged.append, **kwargs)
    return summary, logged


class Killed(Exception):
    pass


TEST_KEYS = ("test_acc", "test_loss", "test_acc_batch_stats")  # the final model's, once
TIMING = ("epoch_time_s", "images_per_s")


def test_same_seed_same_metrics_other_seed_other_metrics(config):
    cfg = config()
    first, _ = train(cfg)
    again, _ = train(cfg)
    other, _ = train(config("seed=1"))
    keys = ("train_loss", "val_loss", "test_loss", "test_acc_batch_stats")
    assert {k: first[k] for k in keys} == {k: again[k] for k in keys}
    assert first["train_loss"] != other["train_loss"]


def test_a_killed_run_resumes_from_its_checkpoint_to_the_same_result(config, tmp_path):
    cfg = config()
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
    for key in ("train_loss", "val_loss", *TEST_KEYS):
        assert resumed[key] == reference[key], key
    assert resumed_epochs[0]["train_loss"] == reference_epochs[0]["train_loss"]


def test_validation_every_epoch_and_the_test_set_once_on_the_final_model(config):
    cfg = config()
    built: list[Classification] = []

    def build(device):
        built.append(Classification(cfg, device, None))
        return built[0]

    logged: list[dict] = []
    summary = fit(cfg, build, logged.append)
    assert [m["epoch"] for m in logged] == [1, 2, 3]
    for m in logged:  # what the LR selection, the ladder and the convergence check read
        assert {"val_acc", "val_loss"} <= m.keys()
        assert not m.keys() & set(TEST_KEYS), m.keys()
    task = built[0]  # precise BN is off (smoke): the model is the last epoch's
    assert (summary["test_acc"], summary["test_loss"]) == evaluate(
        task.model, task.test_x, task.test_y, task.eval_bs
    )
    batch_stats, _ = evaluate_with_batch_stats(
        task.model, task.test_x, task.test_y, task.batch_size
    )
    assert summary["test_acc_batch_stats"] == batch_stats
    assert summary["test_err"] == 1.0 - summary["test_acc"]
    assert summary["val_acc"] == logged[-1]["val_acc"]


def test_the_test_set_every_epoch_on_request_changes_no_metric(config):
    # noisy BN draws its noise in train mode, as the batch-statistics test pass runs: that pass
    # must not move the training's random stream, or testing every epoch would change training.
    once_epochs: list[dict] = []
    once = train_classifier(config("norm=noisy_batch"), once_epochs.append)
    every, every_epochs = train(config("norm=noisy_batch", "train.test_every_epoch=true"))
    assert all(set(TEST_KEYS) <= m.keys() for m in every_epochs)
    for a, b in zip(once_epochs, every_epochs, strict=True):
        assert a.keys() == b.keys() - set(TEST_KEYS)
        assert all(a[k] == b[k] for k in a.keys() - set(TIMING)), (a, b)
    for key in TEST_KEYS:  # the summary's: the last epoch's, when it has them
        assert once[key] == every[key] == every_epochs[-1][key], key
    for key in ("test_err", "train_loss", "val_acc", "weight_l2_norm"):
        assert once[key] == every[key], key


def test_a_run_killed_after_its_last_epoch_resumes_to_the_same_test_metrics(config, tmp_path):
    # Killed between the last epoch's checkpoint and the summary: the resumed run trains nothing
    # and evaluates the test set on the restored model (precise BN too, from the restored order).
    cfg = config("train.epochs=2", "train.precise_bn_batches=2")
    checkpoint = tmp_path / "checkpoint.pt"
    reference, _ = train(cfg, checkpoint=checkpoint)
    assert checkpoint.exists()  # the job deletes it once the run is finished, fit does not
    resumed, resumed_epochs = train(cfg, checkpoint=checkpoint)
    assert resumed["resumed_at_epoch"] == 2 and len(resumed_epochs) == 2
    for key in (*TEST_KEYS, "test_err", "test_acc_precise_bn", "val_acc", "best_val_acc"):
        assert resumed[key] == reference[key], key


def test_a_huge_learning_rate_diverges(config):
    cfg = config("norm=none", "optim.lr_per_128=1e6", "optim.warmup_frac=0")
    with pytest.raises(Diverged):
        train(cfg)


def test_l1_penalty_enters_the_training_loss(config):
    def weight_l1(l1: float) -> float:
        cfg = config(f"optim.l1={l1}", "optim.weight_decay=0")
        summary, _ = train(cfg)
        return summary["train_loss"]

    # The penalty enters the loss: with a strong L1 the training loss (which includes it) rises.
    assert weight_l1(1e-2) > weight_l1(0.0)


def test_precise_bn_reports_its_accuracy(config):
    summary, _ = train(config("train.precise_bn_batches=2", "train.epochs=1"))
    assert summary["precise_bn_batches_used"] >= 1
    assert 0.0 <= summary["test_acc_precise_bn"] <= 1.0


# --- the skeleton every task shares (normexp.train.fit), on a toy task without data -----------


class ToyRegression(TaskHooks):
    """Least squares on fixed random data, ``n`` steps per epoch; records the global steps."""

    headline = "val_loss"

    def __init__(
        self, device: torch.device, steps: list[int], nan_at: int | None = None, n: int = 7
    ) -> None:
        self.x = torch.randn(n, 4, 3)  # from the seeded global RNG: fit seeds before building
        self.y = self.x.sum(-1)
        self.model = torch.nn.Linear(3, 1)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: 0.9**s)
        self.steps_per_epoch, self.steps, self.nan_at = n, steps, nan_at

    def batches(self):
        return zip(self.x, self.y, strict=True)

    def loss(self, batch, step):
        self.steps.append(step)
        x, y = batch
        loss = F.mse_loss(self.model(x).squeeze(-1), y)
        return (loss * math.nan if step == self.nan_at else loss), len(y)

    def evaluate(self, metrics):
        with torch.no_grad():
            metrics["val_loss"] = F.mse_loss(self.model(self.x).squeeze(-1), self.y).item()

    def summary(self, history, final):
        return {"best_val_loss": min(m["val_loss"] for m in history)}


def toy_config(epochs: int = 3) -> dict:
    return {
        "seed": 0,
        "runtime": {"threads": 1, "progress": False},
        "train": {"deterministic": True, "device": "cpu", "epochs": epochs, "batch_size": 4},
        "norm": {"name": "toy"},
    }


def test_fit_resumes_a_killed_toy_run_to_the_same_summary(tmp_path):
    steps: list[int] = []
    reference = fit(toy_config(), lambda d: ToyRegression(d, steps), lambda m: None)
    assert steps == list(range(21))  # the global step of every update, in order
    checkpoint = tmp_path / "checkpoint.pt"

    def die_in_epoch_2(metrics: dict) -> None:
        if metrics["epoch"] == 2:
            raise Killed

    with pytest.raises(Killed):
        fit(toy_config(), lambda d: ToyRegression(d, []), die_in_epoch_2, checkpoint=checkpoint)
    resumed_steps: list[int] = []
    logged: list[dict] = []
    resumed = fit(
        toy_config(), lambda d: ToyRegression(d, resumed_steps), logged.append, 0, checkpoint
    )
    assert resumed_steps == list(range(7, 21))  # epochs 2 and 3 again, numbered as before
    assert [m["epoch"] for m in logged] == [1, 2, 3]
    assert resumed["resumed_at_epoch"] == 1
    for key in ("train_loss", "val_loss", "best_val_loss", "lr", "epochs", "n_params"):
        assert resumed[key] == reference[key], key


def test_fit_stops_a_non_finite_loss_at_the_next_check():
    with pytest.raises(Diverged, match="in epoch 2$"):  # a short epoch: checked at its end
        fit(toy_config(), lambda d: ToyRegression(d, [], nan_at=10), lambda m: None)
    every = DIVERGENCE_CHECK_EVERY
    steps: list[int] = []
    with pytest.raises(Diverged, match=f"in epoch 1, step {2 * every}$"):
        build = lambda d: ToyRegression(d, steps, nan_at=every + 3, n=2 * every + 5)  # noqa: E731
        fit(toy_config(), build, lambda m: None)
    assert len(steps) == 2 * every  # stopped at the first check after the NaN


def test_deterministic_kernels_as_torch_sets_them_without_loading_inductor(monkeypatch):
    import sys

    from normexp.train.device import deterministic_kernels

    monkeypatch.setenv("TORCHINDUCTOR_DETERMINISTIC", "0")
    before = torch.get_deterministic_debug_mode()
    loaded = "torch._inductor.config" in sys.modules  # another test may have compiled
    try:
        deterministic_kernels(True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        assert os.environ["TORCHINDUCTOR_DETERMINISTIC"] == "1"  # what inductor reads at import
        assert ("torch._inductor.config" in sys.modules) == loaded
        if loaded:
            assert sys.modules["torch._inductor.config"].deterministic is True
        deterministic_kernels(False)
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.set_deterministic_debug_mode(before)
