"""Image classification: train a CNN or MLP on CIFAR-10 and report per-epoch metrics."""

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

from normexp.data.augment import CIFAR10_MEAN, CIFAR10_STD, normalize
from normexp.data.cifar10 import load_cifar10
from normexp.data.paths import resolve_data_dir
from normexp.errors import ConfigError
from normexp.metrics import did_not_train
from normexp.models import build_model, check_model
from normexp.norms.precise_bn import recompute_bn_stats
from normexp.norms.weight_side import l1_penalty
from normexp.train.cadence import selection_run, validation_due
from normexp.train.cifar_splits import CifarSplits
from normexp.train.compiling import TrainingForward, why_not_compiled
from normexp.train.device import autocast, place_model
from normexp.train.evaluate import evaluate, evaluate_with_batch_stats, has_batch_stats
from normexp.train.fit import TaskHooks, fit
from normexp.train.optim import build_optimizer_and_scheduler, training_epochs
from normexp.train.packed_fit import Outcome, fit_packed
from normexp.train.task import Task
from normexp.train.weight_stats import weight_statistics
from normexp.validate_fields import check_int

CIFAR10_TRAIN, CIFAR10_TEST = 50_000, 10_000

if TYPE_CHECKING:
    from normexp.train.instrumented import StepProbes


class Classification(TaskHooks):
    """Cross-entropy training (plus L1 on the weights when asked); validation after the last
    epoch (the LR selection, the convergence check and the ladder read it) and every
    ``train.val_every`` epochs before it (normexp/train/cadence.py), the test set and BN's
    batch-statistics pass once, on the final model (every epoch with train.test_every_epoch),
    except in an LR selection's run, which never evaluates its test set (``selection_run``);
    with ``probes``, each due step is probed before its update."""

    headline = "val_acc"  # the test set is not evaluated during training (issue #30, #31)

    def __init__(
        self,
        cfg: Mapping,
        device: torch.device,
        probes: "StepProbes | None",
        packed: bool = False,
    ) -> None:
        data_cfg, train_cfg = cfg["data"], cfg["train"]
        self.cfg, self.device, self.probes = cfg, device, probes
        self.amp = train_cfg.get("amp", False)  # absent in configs stored before it existed
        autocast(device, self.amp)  # refused on a device without bf16 autocast, before any work
        self.splits = s = CifarSplits.of_run(cfg)
        self.generator = torch.Generator(device=device).manual_seed(cfg["seed"])
        self.batch_size, self.eval_bs = train_cfg["batch_size"], train_cfg["eval_batch_size"]
        self.train_batches = s.train_batches(
            device, self.batch_size, data_cfg["augment"], self.generator
        )
        cifar = s.cifar
        self.val_x = normalize(cifar.train_x[s.val_idx].to(device), CIFAR10_MEAN, CIFAR10_STD)
        self.test_x = normalize(cifar.test_x[s.test_idx].to(device), CIFAR10_MEAN, CIFAR10_STD)
        self.val_y = cifar.train_y[s.val_idx].to(device)
        self.test_y = cifar.test_y[s.test_idx].to(device)
        self.model = place_model(build_model(cfg["model"], cfg["norm"]), device, cfg["runtime"])
        self.steps_per_epoch = len(self.train_batches)
        self.epochs = training_epochs(train_cfg, self.steps_per_epoch)
        # a packed group trains the packed model, never this one's forward (normexp/train/
        # packed_fit.py); instrumented runs probe the original module: both stay eager
        compile_it = not packed and why_not_compiled(cfg, device.type) is None
        self.train_forward = TrainingForward(self.model, compile_it, cfg["runtime"]["threads"])
        self.optimizer, self.scheduler = build_optimizer_and_scheduler(
            self.model, cfg, self.steps_per_epoch
        )
        self.batch_stats = has_batch_stats(self.model)
        self.l1 = cfg["optim"]["l1"]
        self.tested = not selection_run(cfg)  # an LR selection's run has no test set
        # absent in configs stored before it existed (those runs were tested every epoch)
        self.test_every_epoch = self.tested and train_cfg.get("test_every_epoch", False)

    def stateful(self) -> dict[str, object]:
        return {"generator": self.generator, "probes": self.probes}

    @property
    def untimed_s(self) -> float:
        return self.probes.seconds if self.probes is not None else 0.0

    def begin_epoch(self) -> None:
        self.correct = torch.zeros((), device=self.device, dtype=torch.long)

    def batches(self) -> Iterable:
        return self.train_batches

    def loss(self, batch: tuple[Tensor, Tensor], step: int) -> tuple[Tensor, int]:
        x, y = batch
        if self.probes is not None:
            lr = self.optimizer.param_groups[0]["lr"]
            self.probes.before_step(self.model, x, y, step, lr)
        with autocast(self.device, self.amp):  # the forward pass and loss only; eval stays fp32
            out = self.train_forward(x)
            loss = F.cross_entropy(out, y)
        if self.l1:
            loss = loss + self.l1 * l1_penalty(self.model)
        hits = (out.detach().argmax(1) == y).sum()
        self.correct += hits
        if self.probes is not None:
            self.probes.after_forward(hits, len(y))
        return loss, len(y)

    def train_metrics(self, train_loss: float, seen: int) -> dict:
        return {"train_acc": self.correct.item() / seen}

    def evaluate(self, metrics: dict) -> None:
        if validation_due(metrics["epoch"], self.epochs, self.cfg["train"]):
            metrics["val_acc"], metrics["val_loss"] = evaluate(
                self.model, self.val_x, self.val_y, self.eval_bs
            )
        if self.test_every_epoch:
            self.evaluate_test(metrics)
        if self.probes is not None:
            self.probes.end_epoch(metrics)

    def evaluate_test(self, metrics: dict) -> None:
        """The test set as deployed (BN's running averages) and, with BN, by batch statistics."""
        model = self.model
        metrics["test_acc"], metrics["test_loss"] = evaluate(
            model, self.test_x, self.test_y, self.eval_bs
        )
        if self.batch_stats:
            metrics["test_acc_batch_stats"], _ = evaluate_with_batch_stats(
                model, self.test_x, self.test_y, self.batch_size
            )

    def precise_bn(self, final: dict) -> None:
        """Population statistics from large training batches, as augmented in training, and
        the test accuracy with them. Batches of about eval_batch_size, a multiple of the
        training batch so that norms with per-group statistics (ghost BN) see whole groups."""
        bs, n_train = self.batch_size, len(self.splits.train_idx)
        population_bs = min(max(bs, self.eval_bs // bs * bs), n_train)
        population = self.splits.train_batches(
            self.device, population_bs, self.cfg["data"]["augment"], self.generator
        )
        used = recompute_bn_stats(
            self.model, (x for x, _ in population), self.cfg["train"]["precise_bn_batches"]
        )
        final["test_acc_precise_bn"], _ = evaluate(
            self.model, self.test_x, self.test_y, self.eval_bs
        )
        final["precise_bn_batches_used"] = used

    def summary(self, history: list[dict], final: dict) -> dict:
        # The final model's test metrics (with test_every_epoch the last epoch has them, from
        # the same model); before precise BN, which replaces the running averages. An LR
        # selection's run has none: it is read on validation (or training accuracy) only.
        if self.tested and not self.test_every_epoch:
            self.evaluate_test(final)
        if self.tested and self.batch_stats and self.cfg["train"]["precise_bn_batches"] > 0:
            self.precise_bn(final)
        return {
            **({"test_err": 1.0 - final["test_acc"]} if self.tested else {}),
            "best_val_acc": max(m["val_acc"] for m in history if "val_acc" in m),
            "did_not_train": did_not_train(history[-1]["val_acc"]),
            "compiled": self.train_forward.compiled,
            **self.splits.sizes(),
            **weight_statistics(self.model),
            **(self.probes.summary() if self.probes is not None else {}),
        }


def train_classifier(
    cfg: Mapping,
    log_epoch: Callable[[dict], None],
    progress_position: int = 0,
    checkpoint: Path | None = None,
    probes: "StepProbes | None" = None,
) -> dict:
    """Train as ``cfg`` says; call ``log_epoch`` after each epoch; return the run summary.

    With ``checkpoint``, the state after every epoch is saved there, and a run that finds one
    (it was killed) resumes after its last finished epoch, re-logging the epochs before it.
    With ``probes`` (normexp.train.instrumented.StepProbes), each step is probed before its
    update when due, each epoch's metrics get the probes' means and the summary their series."""
    return fit(
        cfg,
        lambda device: Classification(cfg, device, probes),
        log_epoch,
        progress_position,
        checkpoint,
    )


def train_classifiers_packed(
    cfgs: list[Mapping],
    log_epochs: list[Callable[[dict], None]],
    progress_position: int = 0,
    checkpoints: list[Path] | None = None,
) -> list[Outcome]:
    """Train the runs ``cfgs`` of one cell (seeds and LR multipliers apart) as one packed model,
    each logging and checkpointing as its separate run (normexp/train/packed_fit.py)."""
    return fit_packed(
        cfgs,
        lambda cfg, device: Classification(cfg, device, None, packed=True),
        log_epochs,
        progress_position,
        checkpoints,
    )


def check_classification(c: Mapping) -> None:
    """The classification task's own rules: CIFAR-10's split sizes, the batch, the model."""
    data = c["data"]
    check_cifar10_fields(data, "classification")
    if data["n_val"] + (data["n_train"] or 0) > CIFAR10_TRAIN:
        raise ConfigError(
            "data.n_train",
            f"n_train + n_val = {data['n_val'] + data['n_train']} exceeds the {CIFAR10_TRAIN} "
            f"CIFAR-10 training images; at most {CIFAR10_TRAIN - data['n_val']} with this n_val",
        )
    if data["n_val"] >= CIFAR10_TRAIN:
        raise ConfigError("data.n_val", f"must be < {CIFAR10_TRAIN}, the training images")
    if (data["n_test"] or 0) > CIFAR10_TEST:
        raise ConfigError("data.n_test", f"at most {CIFAR10_TEST} (the CIFAR-10 test set) or null")
    n_train = data["n_train"] if data["n_train"] is not None else CIFAR10_TRAIN - data["n_val"]
    batch_size = c["train"]["batch_size"]
    if batch_size > n_train:  # an epoch of no full batch: nothing would train
        raise ConfigError(
            "train.batch_size",
            f"{batch_size} is larger than the {n_train} training images (data.n_train); "
            f"allowed: 1 to {n_train}",
        )
    check_model(c["model"], c["norm"], c["train"]["batch_size"])


def check_cifar10_fields(data: Mapping, task: str) -> None:
    """``data.name`` and the split sizes' types, as every CIFAR-10 task checks them."""
    if data["name"] != "cifar10":
        raise ConfigError("data.name", f"unknown {data['name']!r} for {task}; allowed: cifar10")
    check_int("data.n_train", data["n_train"], allow_none=True)
    check_int("data.n_val", data["n_val"])
    check_int("data.n_test", data["n_test"], allow_none=True)


def prepare_cifar10(c: Mapping) -> None:
    """CIFAR-10 where the config says, downloaded and checked (DataError if it cannot be)."""
    data = c["data"]
    load_cifar10(resolve_data_dir(c["paths"]["data_dir"]), data["download"], data["verify"])


TASK = Task(
    "classification",
    check_classification,
    prepare_cifar10,
    train_classifier,
    amp=True,
    train_packed=train_classifiers_packed,
)
