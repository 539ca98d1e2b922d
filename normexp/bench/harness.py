"""Harness overhead: the suite's training step rate vs a bare hand-written PyTorch loop on the
same model, data and batch size."""

import time
from pathlib import Path

import torch
import torch.nn.functional as F

from normexp.bench.data import augmented_batches
from normexp.models import build_model
from normexp.train.classification import train_classifier

MODEL = {
    "name": "cnn",
    "widths": [16, 32, 64],
    "convs_per_stage": 2,
    "activation": "relu",
    "weight_side": "none",
}
NORM = {"name": "batch", "position": "pre"}


# The suite's SGD (configs/optim/sgd.yaml's method: Nesterov momentum, weight decay on weights
# only, one-cycle schedule) as a plain optim section; benches and tests set their own LR.
SGD = {
    "name": "sgd",
    "lr_per_128": 0.2,
    "lr_scaling": "linear",
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 5e-4,
    "decay_norm_and_bias": False,
    "schedule": "onecycle",
    "warmup_frac": 0.2,
}

def suite_config(
    data_dir: Path, n: int, batch_size: int, model: dict = MODEL, norm: dict = NORM
) -> dict:
    return {
        "seed": 0,
        "profile": "quick",
        "claim": {"id": "bench", "name": "bench"},
        "data": {
            "name": "cifar10",
            "download": False,
            "verify": False,
            "n_train": n,
            "n_val": 10,
            "n_test": 10,
            "augment": True,
        },
        "model": model,
        "norm": norm,
        "optim": {**SGD, "lr_per_128": 0.1, "l1": 0.0},
        "train": {
            "task": "classification",
            "epochs": 1,
            "batch_size": batch_size,
            "eval_batch_size": 500,
            "device": "cpu",
            "deterministic": True,
            "precise_bn_batches": 0,
        },
        "paths": {"data_dir": str(data_dir), "results_dir": "/tmp"},
        "runtime": {"threads": torch.get_num_threads(), "progress": False, "channels_last": True},
        "tracking": {"mode": "disabled", "project": "normexp"},
    }


def suite_images_per_s(data_dir: Path, n: int, batch_size: int, **model_norm: dict) -> float:
    summary = train_classifier(suite_config(data_dir, n, batch_size, **model_norm), lambda m: None)
    return summary["images_per_s"]


def bare_images_per_s(data_dir: Path, n: int, batch_size: int) -> float:
    torch.manual_seed(0)
    batches = augmented_batches(data_dir, n, batch_size, drop_last=True)
    model = build_model(MODEL, NORM).to(memory_format=torch.channels_last)  # as the suite
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    t0, seen = time.perf_counter(), 0
    for x, y in batches:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += len(y)
    return seen / (time.perf_counter() - t0)


def bench_harness(data_dir: Path, n: int = 4096, repeats: int = 3) -> list[dict]:
    rows = []
    for batch_size in (128, 8):
        ours, bare = [], []
        for _ in range(repeats):
            ours.append(suite_images_per_s(data_dir, n if batch_size > 8 else n // 4, batch_size))
            bare.append(bare_images_per_s(data_dir, n if batch_size > 8 else n // 4, batch_size))
        ratio = max(ours) / max(bare)
        rows.append(
            {
                "bench": "train step",
                "name": f"VGG quick, b={batch_size}",
                "reference": "bare loop",
                "ours": f"{max(ours):,.0f} img/s",
                "reference_value": f"{max(bare):,.0f} img/s",
                "ratio": ratio,
                "target": ">= 0.95",
                "meets_target": ratio >= 0.95,
            }
        )
    return rows
