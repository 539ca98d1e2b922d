"""The training skeleton every task shares, split as pycls's trainer.py: setup, one training
epoch, evaluation, summary. Threads and seeds, resume from a checkpoint, the epoch loop, the
progress bar, the divergence check and timing live here once; a task plugs in a TaskHooks
object (its data, model and loss, its evaluation and its summary entries).

The order of operations (seeding, building, resuming, each step's forward / backward / update)
is the one every task had before this skeleton: same config and seed, same numbers."""

import math
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from normexp.train import Diverged
from normexp.train.checkpoint import TrainingState, progress_bar
from normexp.train.device import pick_device, seed_everything
from normexp.train.optim import training_epochs, training_steps

DIVERGENCE_CHECK_EVERY = 50  # steps between host syncs that look for a non-finite loss


class TaskHooks:
    """What a task adds to ``fit``. A subclass sets ``model``, ``optimizer``, ``scheduler`` and
    ``steps_per_epoch`` when built, and overrides ``batches``, ``loss`` and ``evaluate``."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    steps_per_epoch: int
    throughput = "images_per_s"  # the per-epoch speed metric: examples (or tokens) per second
    headline = ""  # the metric shown beside the loss on the progress bar
    desc = ""  # the progress bar's label; "" for norm, batch size and seed
    clip: float | None = None  # the largest gradient norm; None: no clipping

    def stateful(self) -> dict[str, object]:
        """What a checkpoint holds besides the model, optimizer and scheduler."""
        return {}

    def begin_epoch(self) -> None:
        """Reset per-epoch state (a recurrent state, running counts)."""

    def batches(self) -> Iterable:
        raise NotImplementedError

    def loss(self, batch: object, step: int) -> tuple[Tensor, int]:
        """The training loss of ``batch`` at 0-based global ``step`` (before its update), and
        the number of examples (or tokens) it averages over."""
        raise NotImplementedError

    @property
    def untimed_s(self) -> float:
        """Seconds spent so far on work that is not training (probes): kept out of throughput."""
        return 0.0

    def train_metrics(self, train_loss: float, seen: int) -> dict:
        """Training metrics of the epoch beyond the loss (accuracy, bits per character)."""
        return {}

    def evaluate(self, metrics: dict) -> None:
        """Add the epoch's evaluation to ``metrics``."""
        raise NotImplementedError

    def summary(self, history: list[dict], final: dict) -> dict:
        """Summary entries of the task, after training; may add test metrics to ``final``."""
        return {}


def fit(
    cfg: Mapping,
    build: Callable[[torch.device], TaskHooks],
    log_epoch: Callable[[dict], None],
    progress_position: int = 0,
    checkpoint: Path | None = None,
) -> dict:
    """Train the task ``build`` makes on the run's device; call ``log_epoch`` after each epoch;
    return the run summary.

    With ``checkpoint``, the state after every epoch is saved there, and a run that finds one
    (it was killed) resumes after its last finished epoch, re-logging the epochs before it."""
    torch.set_num_threads(cfg["runtime"]["threads"])
    seed_everything(cfg["seed"], cfg["train"]["deterministic"])
    device = pick_device(cfg["train"]["device"])
    hooks = build(device)
    steps, budget = hooks.steps_per_epoch, training_steps(cfg["train"], hooks.steps_per_epoch)
    epochs = training_epochs(cfg["train"], steps)
    bar = progress_bar(cfg, budget, progress_position, hooks.desc)
    state = training_state(hooks, checkpoint)
    state.resume(log_epoch)
    bar.update(len(state.history) * steps)
    limit_s = time_limit_s(cfg["train"])
    stopped = False
    try:
        for epoch in range(len(state.history) + 1, epochs + 1):
            t0 = time.perf_counter()
            limit = min(steps, budget - (epoch - 1) * steps)  # the last epoch of a step budget
            metrics = train_epoch(hooks, epoch, device, bar, limit)
            hooks.evaluate(metrics)
            metrics["epoch_time_s"] = time.perf_counter() - t0
            state.end_epoch(metrics, log_epoch)
            # the headline is absent from an epoch without validation (train.val_every)
            shown = {k: metrics[k] for k in (hooks.headline,) if k in metrics}
            bar.set_postfix(loss=f"{metrics['train_loss']:.4g}", **shown)
            # Stop before an epoch that would end past the wall budget (the last one's time
            # predicts the next); the schedule is then cut short, and the summary says so.
            late = limit_s is not None and state.elapsed_s + metrics["epoch_time_s"] > limit_s
            if late and epoch < epochs:
                stopped = True
                break
    finally:
        bar.close()
    summary = summarize(hooks, state)
    if limit_s is not None:
        summary["stopped_by_time"] = stopped
    return summary


def training_state(hooks: TaskHooks, checkpoint: Path | None) -> TrainingState:
    """What a run's checkpoint holds: its model, optimizer, schedule and the task's own state."""
    return TrainingState(
        checkpoint,
        model=hooks.model,
        optimizer=hooks.optimizer,
        scheduler=hooks.scheduler,
        **hooks.stateful(),
    )


def time_limit_s(train: Mapping) -> float | None:
    """train.max_minutes in seconds (absent in configs stored before it existed: None)."""
    minutes = train.get("max_minutes")
    return None if minutes is None else 60.0 * minutes


def train_epoch(
    hooks: TaskHooks, epoch: int, device: torch.device, bar: tqdm, limit: int | None = None
) -> dict:
    """One pass over the training batches (the first ``limit`` of them, when given); the
    epoch's training metrics."""
    limit = hooks.steps_per_epoch if limit is None else limit
    t0, untimed = time.perf_counter(), hooks.untimed_s
    hooks.model.train()
    hooks.begin_epoch()
    step0 = (epoch - 1) * hooks.steps_per_epoch
    loss_sum = torch.zeros((), device=device)
    seen = 0
    for step, batch in enumerate(hooks.batches(), 1):
        loss, n = hooks.loss(batch, step0 + step - 1)
        hooks.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if hooks.clip:
            torch.nn.utils.clip_grad_norm_(hooks.model.parameters(), hooks.clip)
        hooks.optimizer.step()
        hooks.scheduler.step()
        loss_sum += loss.detach() * n
        seen += n
        if step % DIVERGENCE_CHECK_EVERY == 0:
            bar.update(DIVERGENCE_CHECK_EVERY)
            if not torch.isfinite(loss_sum):
                raise Diverged(f"non-finite training loss in epoch {epoch}, step {step}")
        if step == limit:
            break
    bar.update(limit % DIVERGENCE_CHECK_EVERY)
    train_time = time.perf_counter() - t0 - (hooks.untimed_s - untimed)
    train_loss = loss_sum.item() / seen
    if not math.isfinite(train_loss):
        raise Diverged(f"non-finite training loss in epoch {epoch}")
    return {
        "epoch": epoch,
        "lr": hooks.optimizer.param_groups[0]["lr"],
        "train_loss": train_loss,
        **hooks.train_metrics(train_loss, seen),
        hooks.throughput: seen / train_time,
    }


def summarize(hooks: TaskHooks, state: TrainingState) -> dict:
    """The last epoch's metrics, what every task reports, and the task's own entries."""
    history = state.history
    final = {k: v for k, v in history[-1].items() if k != "epoch"}
    extra = hooks.summary(history, final)
    return {
        **final,
        "epochs": len(history),
        "wall_time_s": state.elapsed_s,
        "resumed_at_epoch": state.resumed_at,
        hooks.throughput: sum(m[hooks.throughput] for m in history) / len(history),
        "n_params": sum(p.numel() for p in hooks.model.parameters()),
        **extra,
    }
