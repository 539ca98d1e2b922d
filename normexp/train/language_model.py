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
level: exp of the mean negative log-likelihood per word) of train and valid (valid at both
lengths), tokens/s; test at both lengths once, in the summary (every epoch too with
``train.test_every_epoch``). With a step budget (``train.steps``) the summary's
``train_tokens_read`` says how many training tokens the run read (batch x window per step), which
then depends on the batch size.
"""

import math
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F

from normexp.data.paths import resolve_data_dir
from normexp.data.ptb import LEVELS, PTBCorpus, batchify, bptt_windows, load_ptb
from normexp.errors import ConfigError
from normexp.models.lstm import build_language_model, check_lstm, detach_state
from normexp.train.cadence import selection_run
from normexp.train.fit import TaskHooks, fit
from normexp.train.optim import build_optimizer_and_scheduler, training_steps
from normexp.train.task import Task
from normexp.validate_fields import check_choice, check_int, check_number


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


class LanguageModel(TaskHooks):
    """Truncated BPTT over the training stream (state carried across windows, reset every
    epoch); validation after every epoch and the test split once, on the final model (every
    epoch with train.test_every_epoch; never in an LR selection's run), each at the training
    length and at ``long_eval_factor`` times it."""

    throughput = "tokens_per_s"

    def __init__(self, cfg: Mapping, device: torch.device) -> None:
        data_cfg, train_cfg = cfg["data"], cfg["train"]
        self.level = level = data_cfg["level"]
        self.unit = metric_name(level)
        self.headline = f"valid_{self.unit}"
        self.desc = f"{cfg['norm']['name']} {level} s={cfg['seed']}"
        self.cpu_start = time.process_time()  # CPU time: what the run costs on a busy machine too
        self.corpus = load_ptb(
            resolve_data_dir(cfg["paths"]["data_dir"]), level, data_cfg["download"]
        )
        self.tokens = streams(self.corpus, data_cfg)
        eval_bs = train_cfg["eval_batch_size"]
        self.seq_len = train_cfg["seq_len"]
        self.long_len = self.seq_len * train_cfg["long_eval_factor"]
        self.train_data = batchify(self.tokens["train"], train_cfg["batch_size"]).to(device)
        self.eval_data = {
            s: batchify(self.tokens[s], eval_bs).to(device) for s in ("valid", "test")
        }
        self.steps_per_epoch = math.ceil((self.train_data.shape[1] - 1) / self.seq_len)
        vocab = len(self.corpus.vocab)
        self.model = build_language_model(cfg["model"], cfg["norm"], vocab, self.seq_len).to(device)
        self.optimizer, self.scheduler = build_optimizer_and_scheduler(
            self.model, cfg, self.steps_per_epoch
        )
        self.clip = cfg["optim"].get("clip_grad_norm")
        self.budget = training_steps(train_cfg, self.steps_per_epoch)
        self.tested = not selection_run(cfg)  # an LR selection's run has no test split
        # absent in configs stored before it existed (those runs were tested every epoch)
        self.test_every_epoch = self.tested and train_cfg.get("test_every_epoch", False)

    def begin_epoch(self) -> None:
        self.state = None

    def batches(self) -> Iterable:
        return bptt_windows(self.train_data, self.seq_len)

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor], step: int) -> tuple[torch.Tensor, int]:
        x, y = batch
        logits, state = self.model(x.t(), self.state)
        self.state = detach_state(state)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.t().reshape(-1))
        return loss, y.numel()

    def train_metrics(self, train_loss: float, seen: int) -> dict:
        return {f"train_{self.unit}": from_nats(train_loss, self.level)}

    def evaluate(self, metrics: dict) -> None:
        self.evaluate_split("valid", metrics)
        if self.test_every_epoch:
            self.evaluate_split("test", metrics)

    def evaluate_split(self, split: str, metrics: dict) -> None:
        for suffix, length in (("", self.seq_len), ("_long", self.long_len)):
            nats = evaluate_lm(self.model, self.eval_data[split], length)
            metrics[f"{split}_loss{suffix}"] = nats
            metrics[f"{split}_{self.unit}{suffix}"] = from_nats(nats, self.level)

    def summary(self, history: list[dict], final: dict) -> dict:
        if self.tested and not self.test_every_epoch:  # the final model's (the last epoch's
            self.evaluate_split("test", final)  # with the option); none in an LR selection's
        unit, tokens = self.unit, self.tokens
        return {
            f"best_valid_{unit}": min(m[f"valid_{unit}"] for m in history),
            "cpu_time_s": time.process_time() - self.cpu_start,  # this process (not resumed parts)
            "vocab_size": len(self.corpus.vocab),
            **{f"n_{s}_tokens": int(tokens[s].numel()) for s in ("train", "valid", "test")},
            "seq_len": self.seq_len,
            "long_eval_len": self.long_len,
            "train_tokens_read": tokens_read(self.train_data.shape, self.seq_len, self.budget),
        }


def tokens_read(shape: tuple[int, int], seq_len: int, budget: int) -> int:
    """Target tokens that ``budget`` training steps read from a (rows, steps) training stream
    in windows of ``seq_len``: whole epochs, then the first windows of the last one."""
    rows, steps = shape
    per_epoch = math.ceil((steps - 1) / seq_len)
    epochs, windows = divmod(budget, per_epoch)
    return rows * (epochs * (steps - 1) + windows * seq_len)


def train_language_model(
    cfg: Mapping,
    log_epoch: Callable[[dict], None],
    progress_position: int = 0,
    checkpoint: Path | None = None,
) -> dict:
    """Train as ``cfg`` says; call ``log_epoch`` after each epoch; return the run summary.

    With ``checkpoint``, the state after every epoch is saved there, and a run that finds one
    (it was killed) resumes after its last finished epoch, re-logging the epochs before it."""
    return fit(
        cfg, lambda device: LanguageModel(cfg, device), log_epoch, progress_position, checkpoint
    )


def prepare_ptb(c: Mapping) -> None:
    """PTB at the config's level, downloaded and checked (DataError if it cannot be)."""
    data = c["data"]
    load_ptb(resolve_data_dir(c["paths"]["data_dir"]), data["level"], data["download"])


# C7: LSTM language model on PTB, the cell chosen by norm.name
TASK = Task(
    "language_model",
    check_language_model,
    prepare_ptb,
    train_language_model,
    models=("lstm",),
    data="ptb",
    groups="train=language_model data=ptb model=lstm optim=adam_lm",
    example="rnn_norm",
)
