"""Validation cadence (``train.val_every``): a standard-sized run (10,000 training images, 2,000
validation, 4,000 test) validated after every epoch against the same run validated after its
last epoch only, interleaved, on one thread and the CPU clock: the whole run, training and its
final test pass included. The cost model (normexp/bench/cost.py, VAL_SHARE) reads the share of a
validated epoch spent validating, from the validated runs' own epoch lines (an epoch's time less
its training time: both halves of one epoch see the same load); the share the two runs' totals
imply, (1 - last/every) x epochs / (epochs - 1), is printed beside it (noisier: whole runs
apart, on a shared machine).
"""

import functools
import statistics
import time
from pathlib import Path

from normexp.bench.harness import MODEL as CNN
from normexp.bench.harness import suite_config
from normexp.bench.replicas import RESNET20
from normexp.bench.timing import interleaved_median
from normexp.train.classification import train_classifier

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
