"""Language modelling on Penn Treebank: an LSTM trained by truncated BPTT.

The training stream is cut into ``train.batch_size`` contiguous rows and read in windows of
``train.seq_len`` steps; the hidden state is carried from one window to the next (detached) and
reset at the start of every epoch. Evaluation reads the validation and test streams the same way
(``train.eval_batch_size`` rows, state carried), once in windows of the training length and once
in windows ``train.long_eval_factor`` times longer. With the state carried, a cell whose
computation does not depend on the position in the window scores the same at both lengths (up to
rounding); only per-time-step statistics (``batch_per_step``) see steps beyond the trained length
there, which reuse the last trained step's statistics.

Metrics per epoch: training loss, bits per character (character level) or perplexity (word
level) of train / valid / test at both lengths, tokens/s.
"""

import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F

from normexp.data.paths import resolve_data_dir
from normexp.data.ptb import LEVELS, PTBCorpus, batchify, bptt_windows, load_ptb
from normexp.errors import ConfigError
from normexp.models.lstm import build_language_model, check_lstm, detach_state
from normexp.train import Diverged
from normexp.train.checkpoint import TrainingState, progress_bar
from normexp.train.device import pick_device, seed_everything
from normexp.train.optim import build_optimizer, build_scheduler
from normexp.validate_fields import check_choice, check_int, check_number

DIVERGENCE_CHECK_EVERY = 50  # steps between host syncs that look for a non-finite loss


def check_language_model(c: Mapping) -> None:
    """The rules of a language-model run's config, each naming its field (ConfigError)."""
    data, train = c["data"], c["train"]
    if data["name"] != "ptb":
        raise ConfigError(
            "data.name", f"unknown {data['name']!r} for language models; allowed: ptb"
        )
    check_choice("data.level", data["level"], LEVELS)
    check_lstm(c["model"], c["norm"], train["batch_size"], train["seq_len"])
    check_int("train.long_eval_factor", train["long_eval_factor"])
    clip = c["optim"].get("clip_grad_norm")
    if clip is not None:
        check_number("optim.clip_grad_norm", clip, strict=True)
    # Each stream is cut into rows that must hold at least two tokens (an input and its target).
    rows = {"train": train["batch_size"], "valid": train["eval_batch_size"]}
    rows["test"] = rows["valid"]
    for split, n_rows in rows.items():
        n = data[f"{split}_tokens"]
        check_int(f"data.{split}_tokens", n, allow_none=True)
        if n is not None and n < 2 * n_rows:
            raise ConfigError(
                f"data.{split}_tokens",
                f"{n} tokens cannot fill {n_rows} rows of at least 2 tokens; use >= {2 * n_rows}",
            )


def metric_name(level: str) -> str:
    """bpc (bits per character) at character level, ppl (perplexity) at word level."""
    return "bpc" if level == "char" else "ppl"


def from_nats(nats_per_token: float, level: str) -> float:
    if level == "char":
        return nats_per_token / math.log(2)
    return math.exp(min(nats_per_token, 700.0))  # exp overflows past ~709


def streams(corpus: PTBCorpus, data: Mapping) -> dict[str, torch.Tensor]:
    """The token streams of the run: the first ``data.<split>_tokens`` of each split (all if
    null), the same for every run."""
    out = {}
    for split in ("train", "valid", "test"):
        n = data[f"{split}_tokens"]
        stream = getattr(corpus, split)
        out[split] = stream if n is None else stream[:n]
    return out


@torch.no_grad()
def evaluate_lm(model: torch.nn.Module, data: torch.Tensor, seq_len: int) -> float:
    """Mean cross-entropy (nats per token) over the (rows, steps) ``data``, read in windows of
    ``seq_len`` with the state carried across windows."""
    was_training = model.training
    model.eval()
    state, total, count = None, 0.0, 0
    for x, y in bptt_windows(data, seq_len):
        logits, state = model(x.t(), state)
        total += F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), y.t().reshape(-1), reduction="sum"
        ).item()
        count += y.numel()
    model.train(was_training)
    return total / count


def train_language_model(
    cfg: Mapping,
    log_epoch: Callable[[dict], None],
    progress_position: int = 0,
    checkpoint: Path | None = None,
) -> dict:
    """Train as ``cfg`` says; call ``log_epoch`` after each epoch; return the run summary.

    With ``checkpoint``, the state after every epoch is saved there, and a run that finds one
    (it was killed) resumes after its last finished epoch, re-logging the epochs before it."""
    data_cfg, train_cfg = cfg["data"], cfg["train"]
    level = data_cfg["level"]
    unit = metric_name(level)
    torch.set_num_threads(cfg["runtime"]["threads"])
    seed_everything(cfg["seed"], train_cfg["deterministic"])
    device = pick_device(train_cfg["device"])

    corpus = load_ptb(resolve_data_dir(cfg["paths"]["data_dir"]), level, data_cfg["download"])
    tokens = streams(corpus, data_cfg)
    batch_size, eval_bs = train_cfg["batch_size"], train_cfg["eval_batch_size"]
    seq_len = train_cfg["seq_len"]
    long_len = seq_len * train_cfg["long_eval_factor"]
    train_data = batchify(tokens["train"], batch_size).to(device)
    eval_data = {s: batchify(tokens[s], eval_bs).to(device) for s in ("valid", "test")}
    steps_per_epoch = math.ceil((train_data.shape[1] - 1) / seq_len)

    model = build_language_model(cfg["model"], cfg["norm"], len(corpus.vocab), seq_len).to(device)
    optimizer = build_optimizer(model, cfg["optim"], batch_size)
    total_steps = train_cfg["epochs"] * steps_per_epoch
    scheduler = build_scheduler(optimizer, cfg["optim"], total_steps)
    clip = cfg["optim"].get("clip_grad_norm")

    bar = progress_bar(
        cfg, total_steps, progress_position, f"{cfg['norm']['name']} {level} s={cfg['seed']}"
    )
    cpu_start = time.process_time()  # CPU time: what the run costs on a busy machine too
    state_of_run = TrainingState(checkpoint, model=model, optimizer=optimizer, scheduler=scheduler)
    state_of_run.resume(log_epoch)
    history = state_of_run.history
    bar.update(len(history) * steps_per_epoch)
    try:
        for epoch in range(len(history) + 1, train_cfg["epochs"] + 1):
            t0 = time.perf_counter()
            model.train()
            loss_sum = torch.zeros((), device=device)
            seen, state = 0, None
            for step, (x, y) in enumerate(bptt_windows(train_data, seq_len), 1):
                logits, state = model(x.t(), state)
                state = detach_state(state)
                loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.t().reshape(-1))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
                optimizer.step()
                scheduler.step()
                loss_sum += loss.detach() * y.numel()
                seen += y.numel()
                if step % DIVERGENCE_CHECK_EVERY == 0:
                    bar.update(DIVERGENCE_CHECK_EVERY)
                    if not torch.isfinite(loss_sum):
                        raise Diverged(f"non-finite training loss in epoch {epoch}, step {step}")
            bar.update(steps_per_epoch % DIVERGENCE_CHECK_EVERY)
            train_time = time.perf_counter() - t0
            train_loss = loss_sum.item() / seen
            if not math.isfinite(train_loss):
                raise Diverged(f"non-finite training loss in epoch {epoch}")
            metrics = {
                "epoch": epoch,
                "lr": optimizer.param_groups[0]["lr"],
                "train_loss": train_loss,
                f"train_{unit}": from_nats(train_loss, level),
                "tokens_per_s": seen / train_time,
            }
            for split, data in eval_data.items():
                for suffix, length in (("", seq_len), ("_long", long_len)):
                    nats = evaluate_lm(model, data, length)
                    metrics[f"{split}_loss{suffix}"] = nats
                    metrics[f"{split}_{unit}{suffix}"] = from_nats(nats, level)
            metrics["epoch_time_s"] = time.perf_counter() - t0
            state_of_run.end_epoch(metrics, log_epoch)
            bar.set_postfix(loss=f"{train_loss:.3f}", **{f"valid_{unit}": metrics[f"valid_{unit}"]})
    finally:
        bar.close()
    final = history[-1]
    return {
        **{k: v for k, v in final.items() if k != "epoch"},
        "epochs": len(history),
        f"best_valid_{unit}": min(m[f"valid_{unit}"] for m in history),
        "wall_time_s": state_of_run.elapsed_s,
        "cpu_time_s": time.process_time() - cpu_start,  # of this process (not resumed parts)
        "resumed_at_epoch": state_of_run.resumed_at,
        "tokens_per_s": sum(m["tokens_per_s"] for m in history) / len(history),
        "n_params": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(corpus.vocab),
        "n_train_tokens": int(tokens["train"].numel()),
        "n_valid_tokens": int(tokens["valid"].numel()),
        "n_test_tokens": int(tokens["test"].numel()),
        "seq_len": seq_len,
        "long_eval_len": long_len,
    }
