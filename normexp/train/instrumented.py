"""Classification with probes (task ``instrumented_classification``, claims C9 and C10): the
classification task of normexp.train.classification, plus, every ``train.probe_every`` steps,
measurements of the optimization problem at the current weights on the batch about to be
trained on (normexp.train.landscape).

A StepProbes object plugs into the classification task (its ``probes=``), which calls it from the
shared training loop (normexp.train.fit). Probes never change training: they restore weights, BN
buffers and RNG states, so with the same config and seed the training metrics equal those of a
run without probes (tested). Probes sit before the step's forward pass, at the weights the step
starts from; step 0 (the initial weights) is probed too. Per epoch, the mean of each probe over
that epoch's probe points is logged; the summary holds each probe's mean over training, its
per-epoch means and its full series (as lists, evenly thinned to at most MAX_SERIES points). Their
time is kept out of the epoch's images_per_s.

The running training accuracy (``running_train_acc_series`` at ``running_train_acc_steps``):
at each probe point s > 0 and at the end of training, the accuracy of the batches trained since
the previous point, as trained (train mode, a noisy norm's noise on), from the forward passes
training makes anyway (``after_forward``), so it costs nothing and changes nothing. It is
recorded at the number of steps trained when its window closed; C9 reads the steps a run needs
to reach a target training accuracy from it (normexp/analysis/claims/not_ics.py).
``trained_steps`` is the number of optimizer steps of the run."""

import copy
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor, nn

from normexp.errors import ConfigError
from normexp.train.cadence import selection_run
from normexp.train.classification import check_classification, prepare_cifar10, train_classifier
from normexp.train.landscape import ics_per_layer, landscape_along_gradient
from normexp.train.task import Task
from normexp.validate_fields import check_int, check_number

PROBES = ("ics", "landscape")
MAX_SERIES = 200  # probe points kept per series in the summary (the store's JSON stays small)


def check_probes(train: Mapping) -> None:
    """Config rules of the probe fields, each naming its field."""
    check_int("train.probe_every", train["probe_every"], minimum=0)
    for field in ("probes", "probe_step_sizes"):
        if isinstance(train[field], str) or not hasattr(train[field], "__iter__"):
            raise ConfigError(f"train.{field}", f"{train[field]!r} must be a list, e.g. [ics]")
    probes = list(train["probes"])
    unknown = [p for p in probes if p not in PROBES]
    if unknown:
        raise ConfigError("train.probes", f"unknown {unknown}; allowed: {', '.join(PROBES)}")
    sizes = list(train["probe_step_sizes"])
    if "landscape" in probes and not sizes:
        raise ConfigError("train.probe_step_sizes", "the landscape probe needs step sizes")
    for i, eta in enumerate(sizes):
        check_number(f"train.probe_step_sizes[{i}]", eta, strict=True)
    if train.get("precise_bn_batches", 0):
        raise ConfigError(
            "train.precise_bn_batches", "not measured by instrumented_classification; use 0"
        )


def _short(v: float) -> float | None:
    """6 significant digits; None for NaN (JSON has no NaN), ±inf kept (a blown-up probe)."""
    if math.isnan(v):
        return None
    return v if math.isinf(v) else float(f"{v:.6g}")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _thin(n: int, limit: int) -> list[int]:
    """At most ``limit`` indices of range(n), evenly spread, first and last kept."""
    if n <= limit:
        return list(range(n))
    return sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})


class StepProbes:
    """The probes of one run, as three calls from a training loop: ``before_step`` (measures when
    the step is due), ``end_epoch`` (adds the epoch's means to its metrics) and ``summary``.
    ``state_dict`` / ``load_state_dict`` carry it through a checkpoint."""

    # Also kept per epoch: the training curves (test_acc only with train.test_every_epoch: the
    # test set is otherwise evaluated once, after training; no figure reads this curve).
    EPOCH_SERIES = ("train_acc", "test_acc", "train_loss")

    def __init__(
        self,
        every: int,
        probes: list[str],
        step_sizes: list[float],
        loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy,
    ) -> None:
        self.every, self.probes, self.step_sizes = every, list(probes), list(step_sizes)
        self.loss_fn = loss_fn
        self.steps: list[int] = []
        self.series: dict[str, list[float]] = {}
        self.by_layer: dict[str, list[list[float]]] = {"l2": [], "l2_rel": [], "cos": []}
        self.layers: list[str] = []
        self.epoch_start = 0  # index into steps where this epoch's probe points begin
        self.by_epoch: dict[str, list[float | None]] = {}
        self.seconds = 0.0
        # the running training accuracy: this window's correct predictions and examples, the
        # steps trained, and the closed windows' (steps trained, accuracy)
        self.window_correct: Tensor | int = 0
        self.window_seen = 0
        self.trained = 0
        self.acc_steps: list[int] = []
        self.acc_series: list[float] = []

    @property
    def active(self) -> bool:
        return self.every > 0 and bool(self.probes)

    def before_step(self, model: nn.Module, x: Tensor, y: Tensor, step: int, lr: float) -> None:
        """Probe at 0-based training step ``step`` (before its update) if it is due."""
        if not self.active or step % self.every:
            return
        t0 = time.perf_counter()
        if self.window_seen:
            self.acc_steps.append(self.trained)
            self.acc_series.append(self._window_acc())
            self.window_correct, self.window_seen = 0, 0
        values: dict[str, float] = {}
        if "ics" in self.probes:
            ics = ics_per_layer(model, x, y, lr, self.loss_fn)
            self.layers = ics["layers"]
            for kind, key in (("l2", "l2"), ("l2_rel", "rel"), ("cos", "cos")):
                self.by_layer[kind].append(ics[key])
                values[f"ics_{kind}"] = _mean(ics[key])
        if "landscape" in self.probes:
            land = landscape_along_gradient(model, x, y, self.step_sizes, self.loss_fn)
            for key in ("loss_range", "grad_predictiveness", "beta_smoothness", "grad_norm"):
                values[key] = land[key]
        self.steps.append(step)
        for key, v in values.items():
            self.series.setdefault(key, []).append(v)
        self.seconds += time.perf_counter() - t0

    def after_forward(self, correct: Tensor, n: int) -> None:
        """Count a training step's correct predictions (a 0-d tensor: no sync until a window
        closes) among its ``n`` examples, for the running training accuracy."""
        if self.active:
            self.window_correct = self.window_correct + correct
            self.window_seen += n
            self.trained += 1

    def _window_acc(self) -> float:
        return float(self.window_correct) / self.window_seen

    def end_epoch(self, metrics: dict) -> None:
        """Add ``probe_<name>``, the mean over this epoch's probe points (absent when there were
        none), to the epoch's ``metrics``; keep the per-epoch series for the summary."""
        for key in self.EPOCH_SERIES:
            if key in metrics:
                self.by_epoch.setdefault(key, []).append(_short(metrics[key]))
        for key, values in self.series.items():
            epoch = values[self.epoch_start :]
            mean = _mean(epoch) if epoch else math.nan
            self.by_epoch.setdefault(f"probe_{key}", []).append(_short(mean))
            if epoch:
                metrics[f"probe_{key}"] = mean
        self.epoch_start = len(self.steps)

    def summary(self) -> dict:
        """Per-epoch series (``<name>_by_epoch``); with probe points, each probe's mean over
        training (``probe_<name>_mean``), its series (``probe_<name>_series`` at ``probe_steps``),
        the ICS per layer (``probe_ics_{l2,l2_rel,cos}_by_layer``, ``probe_ics_layers``) and the
        running training accuracy (the window still open at the end closes here)."""
        out: dict = {f"{key}_by_epoch": v for key, v in self.by_epoch.items()}
        if not self.steps:
            return out
        acc_steps, acc = list(self.acc_steps), list(self.acc_series)
        if self.window_seen:
            acc_steps.append(self.trained)
            acc.append(self._window_acc())
        if acc:
            kept = _thin(len(acc), MAX_SERIES)
            out["running_train_acc_steps"] = [acc_steps[i] for i in kept]
            out["running_train_acc_series"] = [_short(acc[i]) for i in kept]
        keep = _thin(len(self.steps), MAX_SERIES)
        out.update(
            probe_points=len(self.steps), probe_time_s=self.seconds, trained_steps=self.trained
        )
        out["probe_steps"] = [self.steps[i] for i in keep]
        for key, values in self.series.items():
            out[f"probe_{key}_mean"] = _mean(values)
            out[f"probe_{key}_series"] = [_short(values[i]) for i in keep]
        if self.by_layer["l2"]:
            out["probe_ics_layers"] = self.layers
            for kind, rows in self.by_layer.items():
                columns = zip(*rows, strict=True)  # one per layer
                out[f"probe_ics_{kind}_by_layer"] = [_short(_mean(list(c))) for c in columns]
        return out

    STATE = (
        "steps",
        "series",
        "by_layer",
        "layers",
        "epoch_start",
        "by_epoch",
        "seconds",
        "window_correct",
        "window_seen",
        "trained",
        "acc_steps",
        "acc_series",
    )

    def state_dict(self) -> dict:
        state = {k: copy.deepcopy(getattr(self, k)) for k in self.STATE}
        state["window_correct"] = int(state["window_correct"])  # a plain count in a checkpoint
        return state

    def load_state_dict(self, state: Mapping) -> None:
        for k in self.STATE:
            if k in state:  # a checkpoint from before the running accuracy keeps the defaults
                setattr(self, k, copy.deepcopy(state[k]))


def train_instrumented(
    cfg: Mapping,
    log_epoch: Callable[[dict], None],
    progress_position: int = 0,
    checkpoint: Path | None = None,
) -> dict:
    """The classification loop with probes before the steps that are due (see StepProbes);
    an LR selection's run without them (normexp/train/cadence.py: it is read on its selection
    metric only, and probes never change training)."""
    train_cfg = cfg["train"]
    probes = None
    if not selection_run(cfg):
        probes = StepProbes(
            train_cfg["probe_every"], train_cfg["probes"], train_cfg["probe_step_sizes"]
        )
    return train_classifier(cfg, log_epoch, progress_position, checkpoint, probes=probes)


def check_instrumented(c: Mapping) -> None:
    check_classification(c)
    check_probes(c["train"])


# C9, C10: classification plus probes of ICS and of the loss landscape
TASK = Task(
    "instrumented_classification",
    check_instrumented,
    prepare_cifar10,
    train_instrumented,
    groups="train=instrumented data=cifar10 model=cnn",
    example="not_ics",
)
