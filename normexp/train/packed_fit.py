"""Train a packed group: K classification runs of one cell (seeds and LR multipliers apart) as
one grouped model (normexp/models/packed.py), each replica logging, checkpointing and summing
up exactly as its separate run does (normexp/train/fit.py).

Every replica keeps its own task hooks (data order, evaluation, summary), its own model,
optimizer and schedule (so its checkpoint is its separate run's: a group resumes packed or
separately), built after seeding with its own seed, as ``fit`` builds them. The packed model
takes the training steps: per step each replica's own batch, stacked along channels, the loss
the sum of the replicas' mean losses (each replica's gradient is its separate run's), a
per-replica LR in one optimizer (normexp/train/packed_optim.py). After each epoch every live
replica's weights and momentum are copied back into its own model and optimizer, which then
evaluate and checkpoint as the separate run would.

A replica whose loss turns non-finite ends ``Diverged`` as its separate run would (checked at
the same steps); its block keeps computing on zeros but adds nothing to the loss, and nothing
crosses blocks in a grouped model, so it reaches no other replica."""

import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from normexp.models.packed import (
    pack_inputs,
    pack_models,
    replica_losses,
    replica_state_dict,
    replica_tensor,
)
from normexp.train import Diverged
from normexp.train.checkpoint import TrainingState, progress_bar
from normexp.train.device import pick_device, seed_everything
from normexp.train.fit import DIVERGENCE_CHECK_EVERY, TaskHooks, summarize, training_state
from normexp.train.optim import build_scheduler, peak_lr, training_epochs, training_steps
from normexp.train.packed_optim import packed_optimizer

LogEpoch = Callable[[dict], None]
Outcome = dict | Diverged  # a replica's summary, or how it diverged


class GroupMismatch(Exception):
    """The group's replicas cannot train in step (checkpoints at different epochs): the caller
    trains them separately."""


def block(tensor: Tensor, k: int, replicas: int) -> Tensor:
    """Block k of a packed tensor whose first dimension holds the replicas' blocks in turn."""
    n = tensor.shape[0] // replicas
    return tensor[k * n : (k + 1) * n]


class Replica:
    """One run of the group: its config, hooks, training state and what it has seen."""

    def __init__(self, cfg: Mapping, hooks: TaskHooks, state: TrainingState, log: LogEpoch) -> None:
        self.cfg, self.hooks, self.state, self.log = cfg, hooks, state, log
        self.outcome: Diverged | None = None

    @property
    def alive(self) -> bool:
        return self.outcome is None


def _build(
    cfgs: Sequence[Mapping],
    build: Callable[[Mapping, torch.device], TaskHooks],
    logs: Sequence[LogEpoch],
    checkpoints: Sequence[Path | None],
    device: torch.device,
) -> list[Replica]:
    replicas = []
    for cfg, log, checkpoint in zip(cfgs, logs, checkpoints, strict=True):
        seed_everything(cfg["seed"], cfg["train"]["deterministic"])  # as fit() seeds each run
        hooks = build(cfg, device)
        state = training_state(hooks, checkpoint)
        state.resume(log)
        replicas.append(Replica(cfg, hooks, state, log))
    if len({len(r.state.history) for r in replicas}) > 1:
        raise GroupMismatch("the group's checkpoints are at different epochs")
    return replicas


def _momentum_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, dict]:
    """Each parameter's optimizer state in a separate run, by parameter name."""
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: optimizer.state[p] for g in optimizer.param_groups for p in g["params"]}


class PackedGroup:
    """The packed model and optimizer of a group, and the copies between it and the replicas."""

    def __init__(self, replicas: list[Replica], device: torch.device) -> None:
        self.replicas = replicas
        first = replicas[0].cfg
        self.model = pack_models([r.hooks.model for r in replicas]).to(device)
        if first["runtime"].get("channels_last", False):
            self.model = self.model.to(memory_format=torch.channels_last)
        batch = first["train"]["batch_size"]
        peaks = [peak_lr(r.cfg["optim"], batch) for r in replicas]
        self.optimizer = packed_optimizer(self.model, first["optim"], peaks)
        steps = training_steps(first["train"], replicas[0].hooks.steps_per_epoch)
        self.scheduler = build_scheduler(self.optimizer, first["optim"], steps)
        # resumed: the schedule where the replicas' schedules are
        _sync_schedule(self.scheduler, replicas[0].hooks.scheduler.last_epoch)
        self.params = dict(self.model.named_parameters())
        self._load_momentum()

    def _load_momentum(self) -> None:
        """The replicas' momentum buffers (a resumed group) into the packed optimizer's."""
        k_all = len(self.replicas)
        for k, r in enumerate(self.replicas):
            for name, state in _momentum_names(r.hooks.model, r.hooks.optimizer).items():
                if state.get("momentum_buffer") is None:
                    continue
                packed = self.optimizer.state[self.params[name]]
                if packed.get("momentum_buffer") is None:
                    packed["momentum_buffer"] = torch.zeros_like(self.params[name])
                target = block(packed["momentum_buffer"], k, k_all)
                target.copy_(state["momentum_buffer"].reshape(target.shape))

    def store(self, k: int) -> None:
        """Replica k's weights, buffers and momentum into its own model and optimizer."""
        r = self.replicas[k]
        r.hooks.model.load_state_dict(replica_state_dict(self.model, k))
        for name, state in _momentum_names(r.hooks.model, r.hooks.optimizer).items():
            buffer = self.optimizer.state[self.params[name]].get("momentum_buffer")
            if buffer is not None:
                state["momentum_buffer"] = replica_tensor(self.model, name, buffer, k).clone()


def fit_packed(
    cfgs: Sequence[Mapping],
    build: Callable[[Mapping, torch.device], TaskHooks],
    logs: Sequence[LogEpoch],
    progress_position: int = 0,
    checkpoints: Sequence[Path | None] | None = None,
) -> list[Outcome]:
    """Train the group's runs ``cfgs`` (one cell: they differ in seed and LR multiplier) as one
    packed model; return each replica's summary or Diverged, in order. GroupMismatch when their
    checkpoints are at different epochs (nothing trained then)."""
    first = cfgs[0]
    torch.set_num_threads(first["runtime"]["threads"])
    device = pick_device(first["train"]["device"])
    replicas = _build(cfgs, build, logs, checkpoints or [None] * len(cfgs), device)
    group = PackedGroup(replicas, device)
    hooks0 = replicas[0].hooks
    steps, budget = hooks0.steps_per_epoch, training_steps(first["train"], hooks0.steps_per_epoch)
    epochs = training_epochs(first["train"], steps)
    desc = f"{first['norm']['name']} b={first['train']['batch_size']} x{len(cfgs)} packed"
    bar = progress_bar(first, budget, progress_position, desc)
    bar.update(len(replicas[0].state.history) * steps)
    try:
        for epoch in range(len(replicas[0].state.history) + 1, epochs + 1):
            t0 = time.perf_counter()
            limit = min(steps, budget - (epoch - 1) * steps)
            trained = _train_epoch(group, epoch, device, bar, limit)
            for k, r in enumerate(replicas):
                if not r.alive:
                    continue
                group.store(k)
                metrics = trained[k]
                r.hooks.evaluate(metrics)
                metrics["epoch_time_s"] = time.perf_counter() - t0
                r.state.end_epoch(metrics, r.log)
    finally:
        bar.close()
    outcomes: list[Outcome] = []
    for r in replicas:
        if r.outcome is not None:
            outcomes.append(r.outcome)
            continue
        summary = summarize(r.hooks, r.state)
        summary["packed_replicas"] = len(replicas)
        outcomes.append(summary)
    return outcomes


def _train_epoch(
    group: PackedGroup, epoch: int, device: torch.device, bar, limit: int  # noqa: ANN001 - tqdm
) -> dict[int, dict]:
    """One epoch of the packed model; each live replica's training metrics, by index."""
    replicas = group.replicas
    t0 = time.perf_counter()
    group.model.train()
    for r in replicas:
        r.hooks.model.train()
        r.hooks.begin_epoch()
    iterators = [iter(r.hooks.batches()) for r in replicas]
    k_all = len(replicas)
    losses = torch.zeros(k_all, device=device)  # each replica's summed training loss
    correct = torch.zeros(k_all, device=device, dtype=torch.long)
    seen = 0  # images per replica this epoch (each draws a batch of the cell's size per step)
    alive = torch.tensor([r.alive for r in replicas], device=device)
    for step in range(1, limit + 1):
        xs, ys = [], []
        for r, it in zip(replicas, iterators, strict=True):
            x, y = next(it) if r.alive else (None, None)
            xs.append(x)
            ys.append(y)
        template = next(i for i, x in enumerate(xs) if x is not None)
        xs = [torch.zeros_like(xs[template]) if x is None else x for x in xs]
        targets = torch.stack([ys[template] if y is None else y for y in ys])
        out = group.model(pack_inputs(xs))  # (K, B, classes)
        per_replica = replica_losses(out, targets)  # one call for the K losses
        # A dead replica adds nothing (where, not a product: its loss may be NaN).
        total = torch.where(alive, per_replica, torch.zeros_like(per_replica)).sum()
        losses += per_replica.detach() * targets.shape[1]
        seen += targets.shape[1]
        correct += (out.detach().argmax(-1) == targets).sum(1)
        group.optimizer.zero_grad(set_to_none=True)
        total.backward()
        group.optimizer.step()
        group.scheduler.step()
        if step % DIVERGENCE_CHECK_EVERY == 0:
            bar.update(DIVERGENCE_CHECK_EVERY)
            _check(replicas, losses, f"non-finite training loss in epoch {epoch}, step {step}")
            alive = torch.tensor([r.alive for r in replicas], device=device)
        if not any(r.alive for r in replicas):
            break
    bar.update(limit % DIVERGENCE_CHECK_EVERY)
    train_time = time.perf_counter() - t0
    for r in replicas:  # each replica's own schedule where the group's is: its LR, its checkpoint
        _sync_schedule(r.hooks.scheduler, group.scheduler.last_epoch)
    out_metrics = {}
    for k, r in enumerate(replicas):
        if not r.alive:
            continue
        train_loss = losses[k].item() / seen
        if not math.isfinite(train_loss):
            r.outcome = Diverged(f"non-finite training loss in epoch {epoch}")
            continue
        out_metrics[k] = {
            "epoch": epoch,
            "lr": r.hooks.optimizer.param_groups[0]["lr"],
            "train_loss": train_loss,
            "train_acc": correct[k].item() / seen,
            r.hooks.throughput: seen / train_time,  # the group's time: replicas share it
        }
    return out_metrics


def _sync_schedule(scheduler: torch.optim.lr_scheduler.LambdaLR, step: int) -> None:
    """Set a replica's own schedule (and its optimizer's LR) to ``step``, as ``step`` calls of
    scheduler.step() would (its optimizer never steps: the packed one trains)."""
    scheduler.last_epoch = step
    lrs = [base * f(step) for base, f in zip(scheduler.base_lrs, scheduler.lr_lambdas, strict=True)]
    for group, lr in zip(scheduler.optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
    scheduler._last_lr = list(lrs)  # what get_last_lr() reports, as step() leaves it


def _check(replicas: list[Replica], losses: Tensor, message: str) -> None:
    finite = torch.isfinite(losses).tolist()  # one host sync for the K replicas
    for r, ok in zip(replicas, finite, strict=True):
        if r.alive and not ok:
            r.outcome = Diverged(message)
