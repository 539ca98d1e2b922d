"""Evaluation's share of a run: the validation cadence and the final test pass.

Validation cadence (``train.val_every``): a standard-sized run (10,000 training images, 2,000
validation, 4,000 test) validated after every epoch against the same run validated after its
last epoch only, interleaved, on one thread and the CPU clock: the whole run, training and its
final test pass included. The cost model (normexp/bench/cost.py, VAL_SHARE) reads the share of a
validated epoch spent validating, from the validated runs' own epoch lines (an epoch's time less
its training time: both halves of one epoch see the same load); the share the two runs' totals
imply, (1 - last/every) x epochs / (epochs - 1), is printed beside it (noisier: whole runs
apart, on a shared machine).

The final test pass (what an LR selection's run no longer does, normexp/train/cadence.py): per
model and training batch, with BN and precise BN (10 batches), the pieces of the pass timed
against the same run's training steps, interleaved on one thread and the CPU clock: the test
set in eval mode (batches of eval_batch_size, as validation is too), BN's batch-statistics pass
(batches of the training size), and precise BN's population pass (its training batches of
about eval_batch_size, without the test evaluation that follows it). Each is reported per image
it evaluates, in training images at the run's batch: the cost model (normexp/bench/cost.py,
TEST_PASS) prices a run's test pass, and so what a selection run saves, from them.
"""

import functools
import statistics
import time
from pathlib import Path

import torch

from normexp.bench.harness import MODEL as CNN
from normexp.bench.harness import suite_config
from normexp.bench.replicas import MLP, RESNET20
from normexp.bench.timing import interleaved_median
from normexp.norms.precise_bn import recompute_bn_stats
from normexp.train.classification import Classification, train_classifier
from normexp.train.device import seed_everything
from normexp.train.evaluate import evaluate, evaluate_with_batch_stats
from normexp.train.fit import train_epoch

# (name, model, batch, epochs): the conv nets at the batch sizes the standard sweep trains most
CASES = (("CNN quick", CNN, 128, 3), ("ResNet-20", RESNET20, 32, 2))
STANDARD = {"n_train": 10_000, "n_val": 2_000, "n_test": 4_000}


def run_config(data_dir: Path, model: dict, batch_size: int, epochs: int, val_every: int) -> dict:
    cfg = suite_config(data_dir, STANDARD["n_train"], batch_size, model=model)
    cfg["data"] = {**cfg["data"], **STANDARD}
    cfg["train"] = {**cfg["train"], "epochs": epochs, "val_every": val_every}
    cfg["runtime"] = {**cfg["runtime"], "threads": 1, "compile": "off"}
    return cfg


def validation_share(epochs: list[dict], n_train: int, batch_size: int) -> float:
    """The median share of an epoch's seconds spent validating, from a run's own epoch lines:
    the epoch's time less its training images over its training speed."""
    trained = n_train // batch_size * batch_size
    shares = [1 - trained / m["images_per_s"] / m["epoch_time_s"] for m in epochs]
    return statistics.median(shares)


def bench_validation(data_dir: Path, repeats: int = 3) -> list[dict]:
    rows = []
    for name, model, batch_size, epochs in CASES:
        logged: list[dict] = []  # the epoch lines of the runs validated every epoch
        logs = {"every": logged.append, "last": lambda m: None}
        runs = {
            label: functools.partial(
                train_classifier,
                run_config(data_dir, model, batch_size, epochs, every),
                logs[label],
            )
            for label, every in (("every", 1), ("last", 0))
        }
        t = interleaved_median(
            runs,
            repeats=repeats,
            warmup=0,
            clock=time.process_time,
        )
        ratio = t["last"] / t["every"]
        share = validation_share(logged, STANDARD["n_train"], batch_size)
        rows.append(
            {
                "bench": "validation",
                "name": f"{name}, b={batch_size}, {epochs} epochs",
                "reference": "validated every epoch",
                "ours": f"{t['last']:.1f} s",
                "reference_value": f"{t['every']:.1f} s",
                "ratio": ratio,
                "target": "report",
                "meets_target": True,
                "mark": f"validation {share:.1%} of an epoch (its own lines); from the runs' "
                f"ratio {(1 - ratio) * epochs / (epochs - 1):.1%}",
                "val_share": share,
            }
        )
    return rows


# (name, model, batches): the models and training batches the standard sweep's selection runs
# train at (the ResNet-20 at 2 and 32 only, the MLP's batches in between interpolated)
TEST_CASES = (("CNN quick", CNN, (2, 32, 128)), ("ResNet-20", RESNET20, (2, 32)),
              ("MLP", MLP, (2, 128)))  # fmt: skip
TRAIN_IMAGES = 256  # training images per timed call (at least 4 steps)
PRECISE_BATCHES = 10  # bn_small_batch's and bn_small_batch_resnet's precise_bn_batches


class _NoBar:
    def update(self, n: int) -> None:
        pass


def final_pass_hooks(data_dir: Path, model: dict, batch_size: int) -> Classification:
    """A standard-sized BN run's task (with precise BN), built as the suite builds it."""
    cfg = run_config(data_dir, model, batch_size, 100, 0)
    cfg["train"]["precise_bn_batches"] = PRECISE_BATCHES
    seed_everything(0, True)
    return Classification(cfg, torch.device("cpu"), None)


def final_pass_ratios(data_dir: Path, model: dict, batch_size: int, repeats: int) -> dict:
    """CPU seconds of each piece of the test pass per image it evaluates, over CPU seconds per
    training image: {"eval", "batch_stats", "precise"}, and "train_ms" (ms per training
    image)."""
    torch.set_num_threads(1)
    h = final_pass_hooks(data_dir, model, batch_size)
    steps = max(4, TRAIN_IMAGES // batch_size)
    population_bs = min(max(batch_size, h.eval_bs // batch_size * batch_size), STANDARD["n_train"])
    population = h.splits.train_batches(h.device, population_bs, True, h.generator)
    images = {
        "train": steps * batch_size,
        "eval": len(h.test_y),
        "batch_stats": len(h.test_y),
        "precise": PRECISE_BATCHES * population_bs,
    }
    calls = {
        "train": lambda: train_epoch(h, 1, h.device, _NoBar(), steps),
        "eval": lambda: evaluate(h.model, h.test_x, h.test_y, h.eval_bs),
        "batch_stats": lambda: evaluate_with_batch_stats(
            h.model, h.test_x, h.test_y, batch_size
        ),
        "precise": lambda: recompute_bn_stats(
            h.model, (x for x, _ in population), PRECISE_BATCHES
        ),
    }
    t = interleaved_median(calls, repeats=repeats, warmup=1, clock=time.process_time)
    per_image = {k: t[k] / images[k] for k in calls}
    out = {k: per_image[k] / per_image["train"] for k in ("eval", "batch_stats", "precise")}
    return {**out, "train_ms": 1e3 * per_image["train"]}


def bench_test_pass(data_dir: Path, repeats: int = 3) -> list[dict]:
    rows = []
    for name, model, batches in TEST_CASES:
        for batch_size in batches:
            r = final_pass_ratios(data_dir, model, batch_size, repeats)
            rows.append(
                {
                    "bench": "test pass",
                    "name": f"{name} BN, b={batch_size}",
                    "reference": "a training image",
                    "ours": f"{r['eval']:.3f} / {r['batch_stats']:.3f} / {r['precise']:.3f}",
                    "reference_value": f"{r['train_ms']:.3f} ms",
                    "ratio": r["eval"],
                    "target": "report",
                    "meets_target": True,
                    "mark": "per image: test (eval mode) / BN batch statistics / precise BN's "
                    "population pass, in training images",
                    **{k: r[k] for k in ("eval", "batch_stats", "precise", "train_ms")},
                }
            )
    return rows
