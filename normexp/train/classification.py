"""Image classification: train a CNN or MLP on CIFAR-10 and report per-epoch metrics."""

import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from normexp.data.augment import CIFAR10_MEAN, CIFAR10_STD, normalize
from normexp.data.cifar10 import load_cifar10
from normexp.data.image_batches import ImageBatches
from normexp.data.paths import resolve_data_dir
from normexp.data.splits import stratified_subset, train_val_split
from normexp.models import build_model
from normexp.norms.precise_bn import recompute_bn_stats
from normexp.norms.weight_side import l1_penalty
from normexp.train import Diverged
from normexp.train.checkpoint import TrainingState, progress_bar
from normexp.train.device import autocast, pick_device, place_model, seed_everything
from normexp.train.evaluate import evaluate, evaluate_with_batch_stats, has_batch_stats
from normexp.train.optim import build_optimizer, build_scheduler
from normexp.train.weight_stats import weight_statistics

if TYPE_CHECKING:
    from normexp.train.instrumented import StepProbes

DIVERGENCE_CHECK_EVERY = 50  # steps between host syncs that look for a non-finite loss


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
    data_cfg, train_cfg = cfg["data"], cfg["train"]
    torch.set_num_threads(cfg["runtime"]["threads"])
    seed_everything(cfg["seed"], train_cfg["deterministic"])
    device = pick_device(train_cfg["device"])
    amp = train_cfg.get("amp", False)  # absent in configs stored before it existed
    autocast(device, amp)  # refused on a device without bf16 autocast, before any work

    data_dir = resolve_data_dir(cfg["paths"]["data_dir"])
    cifar = load_cifar10(data_dir, data_cfg["download"], data_cfg["verify"])
    train_idx, val_idx = train_val_split(
        cifar.train_y, data_cfg["n_train"], data_cfg["n_val"], seed=cfg["seed"]
    )
    test_idx = (
        torch.arange(len(cifar.test_y))
        if data_cfg["n_test"] is None
        else stratified_subset(
            cifar.test_y, data_cfg["n_test"], seed=0
        )  # same test set for all runs
    )
    generator = torch.Generator(device=device).manual_seed(cfg["seed"])
    batch_size, eval_bs = train_cfg["batch_size"], train_cfg["eval_batch_size"]
    train_batches = ImageBatches(
        cifar.train_x[train_idx].to(device),
        cifar.train_y[train_idx].to(device),
        batch_size,
        shuffle=True,
        augment=data_cfg["augment"],
        drop_last=True,
        generator=generator,
    )
    val_x = normalize(cifar.train_x[val_idx].to(device), CIFAR10_MEAN, CIFAR10_STD)
    test_x = normalize(cifar.test_x[test_idx].to(device), CIFAR10_MEAN, CIFAR10_STD)
    val_y, test_y = cifar.train_y[val_idx].to(device), cifar.test_y[test_idx].to(device)

    model = place_model(build_model(cfg["model"], cfg["norm"]), device, cfg["runtime"])
    optimizer = build_optimizer(model, cfg["optim"], batch_size)
    total_steps = train_cfg["epochs"] * len(train_batches)
    scheduler = build_scheduler(optimizer, cfg["optim"], total_steps)
    batch_stats = has_batch_stats(model)
    l1 = cfg["optim"]["l1"]

    bar = progress_bar(cfg, total_steps, progress_position)
    state = TrainingState(
        checkpoint,
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        generator=generator,
        probes=probes,
    )
    state.resume(log_epoch)
    history = state.history
    bar.update(len(history) * len(train_batches))
    global_step = len(history) * len(train_batches)
    try:
        for epoch in range(len(history) + 1, train_cfg["epochs"] + 1):
            t0 = time.perf_counter()
            probe_s = probes.seconds if probes is not None else 0.0
            loss_sum = torch.zeros((), device=device)
            correct = torch.zeros((), device=device, dtype=torch.long)
            seen = 0
            for step, (x, y) in enumerate(train_batches, 1):
                if probes is not None:
                    probes.before_step(model, x, y, global_step, optimizer.param_groups[0]["lr"])
                global_step += 1
                with autocast(device, amp):  # the forward pass and loss only; eval stays fp32
                    out = model(x)
                    loss = F.cross_entropy(out, y)
                if l1:
                    loss = loss + l1 * l1_penalty(model)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                loss_sum += loss.detach() * len(y)
                correct += (out.detach().argmax(1) == y).sum()
                seen += len(y)
                if step % DIVERGENCE_CHECK_EVERY == 0:
                    bar.update(DIVERGENCE_CHECK_EVERY)
                    if not torch.isfinite(loss_sum):
                        raise Diverged(f"non-finite training loss in epoch {epoch}, step {step}")
            bar.update(len(train_batches) % DIVERGENCE_CHECK_EVERY)
            train_time = time.perf_counter() - t0
            if probes is not None:
                train_time -= probes.seconds - probe_s  # images_per_s: training only
            train_loss = loss_sum.item() / seen
            if not math.isfinite(train_loss):
                raise Diverged(f"non-finite training loss in epoch {epoch}")
            metrics = {
                "epoch": epoch,
                "lr": optimizer.param_groups[0]["lr"],
                "train_loss": train_loss,
                "train_acc": correct.item() / seen,
                "images_per_s": seen / train_time,
            }
            metrics["val_acc"], metrics["val_loss"] = evaluate(model, val_x, val_y, eval_bs)
            metrics["test_acc"], metrics["test_loss"] = evaluate(model, test_x, test_y, eval_bs)
            if batch_stats:
                metrics["test_acc_batch_stats"], _ = evaluate_with_batch_stats(
                    model, test_x, test_y, batch_size
                )
            if probes is not None:
                probes.end_epoch(metrics)
            metrics["epoch_time_s"] = time.perf_counter() - t0
            state.end_epoch(metrics, log_epoch)
            bar.set_postfix(loss=f"{train_loss:.3f}", test_acc=f"{metrics['test_acc']:.3f}")
    finally:
        bar.close()
    final = history[-1]
    if batch_stats and train_cfg["precise_bn_batches"] > 0:
        # Population statistics from large training batches, as augmented in training.
        # Batches of about eval_batch_size, a multiple of the training batch so that norms with
        # per-group statistics (ghost BN) see whole groups, as in training.
        population_bs = min(max(batch_size, eval_bs // batch_size * batch_size), len(train_idx))
        population = ImageBatches(
            cifar.train_x[train_idx].to(device),
            cifar.train_y[train_idx].to(device),
            population_bs,
            shuffle=True,
            augment=data_cfg["augment"],
            drop_last=True,
            generator=generator,
        )
        used = recompute_bn_stats(
            model, (x for x, _ in population), train_cfg["precise_bn_batches"]
        )
        final["test_acc_precise_bn"], _ = evaluate(model, test_x, test_y, eval_bs)
        final["precise_bn_batches_used"] = used
    return {
        **{k: v for k, v in final.items() if k != "epoch"},
        "epochs": len(history),
        "test_err": 1.0 - final["test_acc"],
        "best_val_acc": max(m["val_acc"] for m in history),
        "wall_time_s": state.elapsed_s,
        "resumed_at_epoch": state.resumed_at,
        "images_per_s": sum(m["images_per_s"] for m in history) / len(history),
        "n_params": sum(p.numel() for p in model.parameters()),
        "n_train": len(train_idx),
        "n_val": len(val_idx),
        "n_test": len(test_idx),
        **weight_statistics(model),
        **(probes.summary() if probes is not None else {}),
    }
