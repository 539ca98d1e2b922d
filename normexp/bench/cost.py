"""Where a profile's CPU time goes, from the store: run seconds per experiment and per batch
size, and a projection of a grid's cost from seconds per training image at each batch size.

``python -m normexp.bench.cost [--results results]`` prints both tables and checks the time
model against the store: the committed grid projected from it vs its measured total. Runs are
read through normexp.tracking.collect, so the tables follow the store wherever it lives; a
results folder without runs/ is searched one level down (one store per profile).

``python -m normexp.bench.cost --profile standard`` projects a whole profile instead, before
anything runs: every experiment's jobs (the LR protocol's selection runs included, at the first
grid: a widened edge adds more; and the convergence check's runs at twice the budget, stage
check) composed at that profile, each priced by the frozen time model
below (``job_seconds``), and the wall time on ``workers`` cores (``profile_cost``). It prices
what `make run-sweep` runs; the grid's experiments (`make run-grid`) are priced as a separate
table, and the GPU bundle's experiments (normexp/gpu_bundle.py, CUDA only) not at all."""

import argparse
import contextlib
import copy
import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
from hydra.core.global_hydra import GlobalHydra

from normexp.catalogue import gpu_experiments, makefile_list, sweep_experiments
from normexp.norms import norm_spec
from normexp.protocol.pack import pack_limit
from normexp.protocol.plan import (
    EPOCHS,
    SEED,
    STEPS,
    JobRecords,
    _without,
    checked,
    ladder_budgets,
    selection_cell,
    selection_jobs,
    uses_protocol,
)
from normexp.sweep import sweep_overrides
from normexp.tracking.collect import collect_runs, experiments_in_store
from normexp.tracking.store import run_key
from normexp.train.cadence import selection_run, validation_due
from normexp.train.compiling import why_not_compiled

REPO = Path(__file__).resolve().parents[2]

# The frozen time model of ``job_seconds``: wall seconds per unit of training on one core of the
# 2-core CPU of record (idle), evaluation included. Fixed numbers, so that a profile's projection
# is arithmetic, not timing; `python -m normexp.bench.cost` prints the store's own model to
# compare. CNN: ms per training image by batch size, the committed quick store (widths 16/32/64,
# evaluating n_val + n_test = 0.75 x n_train images per epoch). Generator (C6): the same, from
# bn_generation (widths 8/16/32). LSTM (C7): per training token, evaluation included: characters
# from rnn_norm at quick (hidden 128); words from two quick runs of rnn_words (1 x 128 units,
# 600 steps of 20 x 20 tokens: 33 and 35 s; the 10k-word softmax dominates). Factors on the
# CNN's: the probes of train=instrumented (not_ics / smoothness vs plain runs at b32, a probe
# every 25 steps) and the ResNet-20 (width 16), measured side by side with the CNN (README
# "Profiles"). These tables price the test set evaluated every epoch, as the runs measured did;
# EVAL_ONCE and PACK_SPEEDUP below turn them into what a run costs now.
CNN_MS_PER_IMAGE = {2: 1.75, 4: 1.10, 8: 0.89, 16: 0.89, 32: 0.71, 64: 0.76, 128: 0.79}
GENERATOR_MS_PER_IMAGE = {4: 1.07, 32: 0.58}
LSTM_US_PER_TOKEN = {"char": 9.9, "word": 140.0}
# PTB's training split in tokens (characters or words, line ends included): train_tokens null.
PTB_TRAIN_TOKENS = {"char": 5_017_482, "word": 929_589}
# The MLP (3 x 256 units): its own table, as a per-step overhead dominates at small batches
# (a CNN factor priced it at a third of its time): the committed quick store's mlp_small_batch
# (commit ab6c42f, 4 epochs x 4000 images, idle), median per batch size.
MLP_MS_PER_IMAGE = {2: 1.26, 4: 0.66, 8: 0.36, 16: 0.20, 32: 0.13, 64: 0.11, 128: 0.09}
# The Gram-loss stylization (task stylization, C6): the generator's run plus its fixed loss
# network (a forward on the output and back through it, a forward on the content image; the
# same without the backward at evaluation), which does not grow with the generator's widths.
# What it adds, in units of the generator's own time at widths 8/16/32 (GENERATOR_MS_PER_IMAGE):
# measured with the two tasks' training hooks side by side, IN at the quick scale, one thread,
# interleaved, min of 5 (2-core machine under load 2-5): a training image 3.72 vs 1.68 ms at
# batch 4, 2.29 vs 1.14 at 32; a validation image 0.91 vs 0.35 and 1.10 vs 0.43 ms; a quick run
# (16,000 training and 3,000 evaluated images) 2.23x restoration's at batch 4, 2.05x at 32.
LOSS_NETWORK_FACTOR = {4: 1.23, 32: 1.05}
# ResNet-20 / CNN training-step time by batch size (interpolated), interleaved on one core.
RESNET_FACTOR = {2: 2.4, 32: 3.9}
# train=instrumented: the ICS probe adds a forward/backward pass per conv layer every 25 steps
# (the landscape probe about 5): 6 convs in the CNN, 19 in the ResNet-20.
INSTRUMENTED_FACTOR = {"cnn": 1.2, "resnet": 1.6}
# make run-sweep's wall time over (run seconds / workers): 52.9 min measured for the committed
# quick store's 98.5 run-minutes on 2 workers (stragglers at the end of each round, startup).
ROUNDS_OVERHEAD = 1.075
# The test set evaluated once per run, not every epoch (train.test_every_epoch false; #30): one
# quick ResNet-20 run (BN, batch 32, precise BN, 4 epochs) took 0.84x its earlier wall time
# (82-87 s vs 98-103 s, interleaved). The CNN's per-epoch evaluation is the same share of a conv
# net's epoch, so it gets the same factor; the MLP's evaluation is a small share of its
# overhead-bound steps, and the LSTM and generator were not measured: priced as before.
EVAL_ONCE = {"cnn": 0.84, "resnet": 0.84}
# Validation only at the epochs train.val_every asks (normexp/train/cadence.py; #30): the share
# of a validated epoch spent validating, at the batch measured, standard-sized runs (n_val =
# n_train / 5), from `make bench` ("validation" rows, load 3-4 on the 2 cores: a run validated
# every epoch against the same run validated after its last epoch only, interleaved): CNN b128
# 8.8% and ResNet-20 b32 9.1% of an epoch, from the runs' own epoch lines (an epoch's time less
# its training time); the two runs' CPU totals implied 5.4-8.4% and 12.5-13.4% (two benches:
# whole runs apart, noisier), and a validation pass timed alone 6% of either's epoch. With the
# last epoch only, a standard 8-epoch run takes 0.92x (CNN b128) and 0.92x (ResNet b32) its
# time validated every epoch. The pass costs the same seconds at any training batch, so
# ``cadence_factor`` moves the share with the training time per image (less at batch 2).
VAL_SHARE = {"cnn": (128, 0.088), "resnet": (32, 0.091)}
VAL_MEASURED_RATIO = 0.2  # n_val / n_train of the measured runs
# torch.compile (runtime.compile auto: normexp/train/compiling.py's COMPILE_TABLE says which
# runs compile): the compiled training step's speed-up by model, norm and batch, and a compile's
# CPU seconds (the largest measured), from `make bench` ("compile" rows: one thread,
# interleaved, CPU clock, load 4-5 on 2 cores; the CNN, slower compiled, never compiles). Each
# compiled run pays a compile: cold in the first runs of its graph (model, norm, batch) in a
# sweep, warm in the others (inductor's cache persists on the machine). The speed-up is applied
# to the whole run: its evaluation (a few % of it) is not compiled, a slight overstatement.
COMPILE_SPEEDUP = {"resnet": {"batch": {32: 1.14, 128: 1.10}, "none": {32: 1.06, 128: 1.08}}}
COMPILE_SECONDS = {"warm": 3.0, "cold": 43.0}
COLD_RUNS = 2  # a graph's first runs start side by side on the 2 workers: both compile cold
# Packed groups (normexp/protocol/pack.py): a replica's time in a packed group of K over its
# separate run's, per replica-image, from `make bench` (normexp/bench/replicas.py: packed vs
# separate training steps, one thread, interleaved; the lower of two runs on a loaded machine).
# Between K = 1 (1.0) and the measured K linear in K, beyond the largest K that one's; between
# batch sizes log-linear; above the largest batch a model packs at (pack.PACK_TABLE), no gain.
PACK_SPEEDUP = {
    "cnn": {2: {4: 1.62, 8: 1.91}, 8: {4: 1.15}},
    "resnet": {2: {4: 1.48, 8: 1.58}, 4: {4: 1.29}},
}
# Fused SGD (runtime.fused_sgd: one kernel per parameter instead of PyTorch's per-parameter loop
# of separate ops; normexp/train/optim.py): an unpacked run's training time over its time with
# the looped SGD these tables measured, by batch, from `make bench` ("sgd" rows: the suite's
# training steps, Classification's train_epoch, built twice from one seed, differing only in
# the optimizer, interleaved on one thread, CPU clock; MLP with BN; the lower of two runs,
# 1.42-1.50 / 1.42-1.47 / 1.23 / 1.09 at batch 2 / 8 / 32 / 128, load 6 on 2 cores). The
# update's seconds are the same at every norm, so a cheaper step (no norm) gains a little more,
# a costlier one (GN) a little less. Applied to the whole run: its evaluation (about 1% of an
# MLP run) gains nothing, a slight overstatement. The conv nets' steps are their convolutions
# (the quick CNN and the ResNet-20 at batch 32: 0.98-0.99 and 1.00-1.02): not priced. Packed
# groups step PackedSGD: not priced.
FUSED_SGD_SPEEDUP = {"mlp": {2: 1.42, 8: 1.42, 32: 1.23, 128: 1.09}}
# The final test pass that an LR selection's run no longer does (normexp/train/cadence.py),
# from `make bench` ("test pass" rows: standard-sized BN runs with precise BN, each piece timed
# against the same run's training steps, interleaved on one thread, CPU clock, median of 3,
# load 6 on 2 cores): per image evaluated, in training images at that batch, (the test set in
# eval mode, BN's batch-statistics pass, precise BN's population pass). A run's test pass is
# the first for every norm, the second for a norm with batch statistics, and precise BN's pass
# plus a second eval-mode test pass when train.precise_bn_batches > 0. Validation is an
# eval-mode pass too (n_val images at each validated epoch). Not measured: the LSTM, the
# generators (a selection run of theirs is priced as before). Its probes (train=instrumented):
# INSTRUMENTED_FACTOR.
TEST_PASS = {
    "cnn": {2: (0.115, 0.253, 0.238), 32: (0.408, 0.307, 0.765), 128: (0.424, 0.381, 0.895)},
    "resnet": {2: (0.176, 0.328, 0.335), 32: (0.388, 0.318, 0.677)},
    "mlp": {2: (0.011, 0.087, 0.016), 128: (0.272, 0.330, 0.409)},
}
CLASSIFY = ("classification", "instrumented_classification")  # the tasks TEST_PASS prices

COLUMNS = {  # collected column -> short name
    "train.task": "task",
    "train.batch_size": "batch_size",
    "train.epochs": "epochs",
    "data.n_train": "n_train",
    "wall_time_s": "seconds",
    "status": "status",
}


def stores(results_dir: Path) -> list[Path]:
    """The store folders under ``results_dir``: itself, or its per-profile subfolders."""
    results_dir = Path(results_dir)
    if (results_dir / "runs").is_dir():
        return [results_dir]
    return sorted(p.parent for p in results_dir.glob("*/runs") if p.is_dir())


def run_costs(results_dir: Path) -> pd.DataFrame:
    """One row per ended run of every store under ``results_dir``: experiment, task, batch
    size, epochs, training images, wall seconds (training and evaluation)."""
    frames = []
    for store in stores(results_dir):
        for experiment in experiments_in_store(store):
            df = collect_runs(store, experiment)
            if df.empty or "wall_time_s" not in df:
                continue
            df = df[[c for c in COLUMNS if c in df]].rename(columns=COLUMNS)
            frames.append(df.dropna(subset=["seconds"]).assign(experiment=experiment))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["seconds"])


def cost_table(runs: pd.DataFrame, by: str | list[str]) -> pd.DataFrame:
    """Runs, run-minutes and share of all run time per value of ``by``, costliest first."""
    table = runs.groupby(by).agg(runs=("seconds", "size"), seconds=("seconds", "sum"))
    table["minutes"] = table["seconds"] / 60
    table["share"] = table["seconds"] / table["seconds"].sum()
    return table.sort_values("seconds", ascending=False)


def seconds_per_image(runs: pd.DataFrame, task: str = "classification") -> dict[int, float]:
    """The time model: median wall seconds per training image (epochs x images, evaluation
    included) of the ``task`` runs at each batch size."""
    images = runs[runs["task"] == task]
    per_image = images["seconds"] / (images["epochs"] * images["n_train"])
    return {int(b): float(v) for b, v in per_image.groupby(images["batch_size"]).median().items()}


def at_batch(table: Mapping[int, float], batch_size: int) -> float:
    """``table``'s value at ``batch_size``, interpolated on log2(batch size) (clamped at its
    ends)."""
    sizes = sorted(table)
    return float(np.interp(np.log2(batch_size), np.log2(sizes), [table[b] for b in sizes]))


def project(grid: Iterable[Mapping], per_image: Mapping[int, float]) -> float:
    """Seconds that ``grid`` costs: each entry has runs, batch_size, epochs, n_train. Batch sizes
    not in the time model are interpolated on log2(batch size) (clamped at its ends)."""
    total = 0.0
    for cell in grid:
        seconds = at_batch(per_image, cell["batch_size"])
        total += cell.get("runs", 1) * cell["epochs"] * cell["n_train"] * seconds
    return total


def job_seconds(config: Mapping) -> float:
    """One run's wall seconds on one core by the frozen time model, from its resolved config:
    training images (epochs x images, or steps x batch) x seconds per image, scaled by the
    model's compute relative to the model of record (width squared)."""
    train, data, model = config["train"], config["data"], config["model"]
    batch = int(train["batch_size"])
    if train["task"] == "language_model":
        level = data["level"]
        if train.get("steps"):  # a step budget: steps x rows x window
            tokens = train["steps"] * batch * int(train["seq_len"])
        else:
            tokens = train["epochs"] * (data["train_tokens"] or PTB_TRAIN_TOKENS[level])
        return tokens * LSTM_US_PER_TOKEN[level] * 1e-6
    n_train = data["n_train"] or 50_000 - data["n_val"]  # null: all that is left after n_val
    images = train["steps"] * batch if train.get("steps") else train["epochs"] * n_train
    if train["task"] in ("image_to_image", "stylization"):
        width = (model["widths"][0] / 8) ** 2
        if train["task"] == "stylization":  # the loss network's share, whatever the widths
            width += at_batch(LOSS_NETWORK_FACTOR, batch)
        return images * at_batch(GENERATOR_MS_PER_IMAGE, batch) * 1e-3 * width
    per_image = at_batch(CNN_MS_PER_IMAGE, batch) * 1e-3
    if model["name"] == "resnet":
        per_image *= at_batch(RESNET_FACTOR, batch) * model["width_mult"] ** 2
    elif model["name"] == "cnn":
        per_image *= (model["widths"][0] / 16) ** 2
    else:
        per_image = at_batch(MLP_MS_PER_IMAGE, batch) * 1e-3 * (model["hidden"] / 256) ** 2
    if train["task"] == "instrumented_classification":
        per_image *= INSTRUMENTED_FACTOR[model["name"]]
    return images * per_image


def speedup_at_k(by_k: Mapping[int, float], k: int) -> float:
    """A packed replica's speed-up with K replicas, from the measured K's (module comment)."""
    points = sorted({1: 1.0, **by_k}.items())
    return float(np.interp(k, [p for p, _ in points], [v for _, v in points]))


def pack_speedup(model: str, batch_size: int, k: int) -> float:
    """A packed replica's speed-up over its separate run (1.0: not measured, or K = 1)."""
    rows = PACK_SPEEDUP.get(model)
    if not rows or k <= 1 or batch_size > max(rows):
        return 1.0
    at = {b: speedup_at_k(by_k, k) for b, by_k in rows.items()}
    return at_batch(at, batch_size)


def train_ms_per_image(config: Mapping, batch_size: int, probes: bool = True) -> float:
    """A CIFAR-10 conv net's time model (ms per training image) at ``batch_size``, relative
    units: CNN_MS_PER_IMAGE, times the ResNet's and (with ``probes``) the probes' factors."""
    model = config["model"]["name"]
    ms = at_batch(CNN_MS_PER_IMAGE, batch_size)
    if model == "resnet":
        ms *= at_batch(RESNET_FACTOR, batch_size)
    if probes and probed(config):
        ms *= INSTRUMENTED_FACTOR[model]
    return ms


def probed(config: Mapping) -> bool:
    """Whether a run runs train=instrumented's probes (an LR selection's run does not)."""
    return config["train"]["task"] == "instrumented_classification" and not selection_run(config)


def cadence_factor(config: Mapping) -> float:
    """A classifier's time validated as train.val_every says over its time validated every
    epoch (VAL_SHARE; 1.0 where not measured: the MLP, the other tasks)."""
    train, data, model = config["train"], config["data"], config["model"]["name"]
    if model not in VAL_SHARE or "val_every" not in train:
        return 1.0
    n_train = data["n_train"] or 50_000 - data["n_val"]
    batch = int(train["batch_size"])
    per_epoch = n_train // batch
    epochs = math.ceil(train["steps"] / per_epoch) if train.get("steps") else train["epochs"]
    skipped = sum(not validation_due(e, epochs, train) for e in range(1, epochs + 1))
    measured_batch, share = VAL_SHARE[model]
    # validation seconds per training second, at this batch and this n_val / n_train (the
    # measured runs had no probes: an instrumented run's epochs are longer, its share smaller)
    ratio = share / (1 - share) * (data["n_val"] / n_train) / VAL_MEASURED_RATIO
    ratio *= train_ms_per_image(config, measured_batch, probes=False)
    ratio /= train_ms_per_image(config, batch)
    return 1 - ratio / (1 + ratio) * skipped / epochs


def fused_sgd_speedup(config: Mapping) -> float:
    """An unpacked SGD run's speed-up from runtime.fused_sgd (FUSED_SGD_SPEEDUP; 1.0 where not
    measured to gain, off, another optimizer, or a packed group)."""
    by_batch = FUSED_SGD_SPEEDUP.get(config["model"]["name"])
    if not by_batch or config["optim"]["name"] != "sgd":
        return 1.0
    if not config["runtime"].get("fused_sgd", False) or pack_limit(config) > 1:
        return 1.0
    return at_batch(by_batch, config["train"]["batch_size"])


def selection_factor(config: Mapping, pack_gain: float = 1.0) -> float:
    """An LR selection's run's time over its time with the probes and the final test pass it no
    longer runs (normexp/train/cadence.py); 1.0 for the other stages. Without probes, its time
    over the probed run's is 1 / INSTRUMENTED_FACTOR; the test pass's share of the rest, in
    training images (TEST_PASS): the pass over training (its images / ``pack_gain``, a packed
    replica's gain: its evaluation is its own), validation and the pass."""
    if not selection_run(config):
        return 1.0
    train, data, model = config["train"], config["data"], config["model"]["name"]
    factor = 1.0
    if train["task"] == "instrumented_classification":
        factor /= INSTRUMENTED_FACTOR[model]
    if model not in TEST_PASS or train["task"] not in CLASSIFY:
        return factor
    n_train = data["n_train"] or 50_000 - data["n_val"]
    n_test, batch = data["n_test"] or 10_000, int(train["batch_size"])
    test, batch_stats, precise = (at_batch({b: r[i] for b, r in TEST_PASS[model].items()}, batch)
                                  for i in range(3))  # fmt: skip
    tested = n_test * test
    if norm_spec(config["norm"]["name"]).uses_batch_stats:
        tested += n_test * batch_stats
        if train.get("precise_bn_batches", 0) > 0:
            population = min(max(batch, train["eval_batch_size"] // batch * batch), n_train)
            tested += train["precise_bn_batches"] * population * precise + n_test * test
    steps = n_train // batch  # per epoch (the last partial batch is dropped)
    epochs = math.ceil(train["steps"] / steps) if train.get("steps") else train["epochs"]
    trained = (train.get("steps") or epochs * steps) * batch
    validated = sum(validation_due(e, epochs, train) for e in range(1, epochs + 1))
    run = trained / pack_gain + validated * data["n_val"] * test + tested
    return factor * (1 - tested / run)


def compile_speedup(config: Mapping) -> float:
    """A compiled run's speed-up (COMPILE_SPEEDUP; 1.0 where not measured)."""
    by_batch = COMPILE_SPEEDUP.get(config["model"]["name"], {}).get(config["norm"]["name"])
    return at_batch(by_batch, config["train"]["batch_size"]) if by_batch else 1.0


def compile_seconds(config: Mapping, seen: dict) -> float:
    """A run's compile seconds: warm, or cold for the first COLD_RUNS runs of its graph
    (counted in ``seen``)."""
    graph = (config["model"]["name"], config["norm"]["name"], config["train"]["batch_size"])
    seen[graph] = seen.get(graph, 0) + 1
    return COMPILE_SECONDS["cold" if seen[graph] <= COLD_RUNS else "warm"]


def priced_seconds(jobs: list[tuple[str, dict]], now: bool = True) -> list[float]:
    """Each job's seconds: ``job_seconds``, and with ``now`` as the suite runs it today: the test
    set once per run (EVAL_ONCE), validation at its cadence (``cadence_factor``), the runs of
    each packed group (the same stage and config but the seed and LR multiplier, in groups of
    at most ``pack_limit``) at PACK_SPEEDUP, an LR selection's runs without probes or test pass
    (``selection_factor``), unpacked SGD runs fused (FUSED_SGD_SPEEDUP), and compiled runs
    (``why_not_compiled``) at COMPILE_SPEEDUP plus their compile."""
    base = [job_seconds(config) for _, config in jobs]
    if not now:
        return base
    groups: dict[str, list[int]] = {}
    for i, (_, config) in enumerate(jobs):
        rest = {**config, "seed": None, "optim": {**config["optim"], "lr_mult": None}}
        groups.setdefault(json.dumps(rest, sort_keys=True, default=str), []).append(i)
    out = list(base)
    for members in groups.values():
        config = jobs[members[0]][1]
        model, train = config["model"]["name"], config["train"]
        once = 1.0 if train.get("test_every_epoch") else EVAL_ONCE.get(model, 1.0)
        limit = pack_limit(config)
        cadence = cadence_factor(config)
        for start in range(0, len(members), limit):
            chunk = members[start : start + limit]
            gain = pack_speedup(model, train["batch_size"], len(chunk))
            selection = selection_factor(config, gain)
            for i in chunk:
                out[i] = base[i] * once * cadence / gain * selection
    graphs: dict = {}
    for i, (_, config) in enumerate(jobs):  # packed groups never compile
        out[i] /= fused_sgd_speedup(config)
        if pack_limit(config) == 1 and why_not_compiled(config) is None:
            out[i] = out[i] / compile_speedup(config) + compile_seconds(config, graphs)
    return out


def experiment_jobs(config) -> list[tuple[str, dict]]:
    """Every job a sweep of the composed master ``config`` runs on an empty store, as (stage,
    resolved config): the LR protocol's selection runs at the first grid (normexp.protocol.plan:
    each selection cell x multiplier x selection seed), then the sweep's own jobs, then the
    budget ladder's (each checked cell's seeds at the lower rungs) and the convergence check's
    (each checked cell's first seed at twice the budget; the multiplier, chosen later, does not
    change the price: the first grid value stands in)."""
    records = JobRecords(config, machine=False)
    basic = [tuple(j) for j in sweep_overrides(config)]
    jobs = [("record", j) for j in basic]
    if uses_protocol(config) and basic:
        settings = records(basic[0])[0]["protocol"]
        cells: dict[tuple, list[tuple]] = {}
        for j in basic:
            cells.setdefault(_without(j, SEED), []).append(j)
        chosen = dict.fromkeys(selection_cell(c, settings["select_batch_size"]) for c in cells)
        grid, seeds = settings["lr_grid"], settings["selection_seeds"]
        jobs = [("select", j) for c in chosen for j in selection_jobs(c, grid, seeds)] + jobs
        priced = [(stage, records(job)[0]) for stage, job in jobs]
        return priced + budget_runs(cells, records)
    return [(stage, records(job)[0]) for stage, job in jobs]


def budget_runs(cells: dict[tuple, list[tuple]], records: JobRecords) -> list[tuple[str, dict]]:
    """The ladder's and the check's runs of every checked cell, as (stage, config): its record
    configs with the budget and stage the planner gives them (normexp.protocol.plan), patched
    rather than composed again (a run of either differs from its run of record in no other
    field)."""
    out: list[tuple[str, dict]] = []
    checks = []
    for jobs in cells.values():
        configs = [records(j)[0] for j in jobs]
        if not checked(configs[0]):
            continue
        out += [("ladder", _patched(c, b, "ladder")) for c in configs for b in ladder_budgets(c)]
        first = min(configs, key=lambda c: c["seed"])
        key, n = (STEPS, first["train"]["steps"]) if first["train"].get("steps") else (
            EPOCHS, first["train"]["epochs"])  # fmt: skip
        mult = first["protocol"].get("check_budget_mult", 2)
        checks.append(("check", _patched(first, f"{key}={mult * n}", "check")))
    return out + checks


def _patched(config: dict, budget: str, stage: str) -> dict:
    key, value = budget.split("=")
    patched = copy.deepcopy(config)
    patched["train"][key.split(".")[1]] = int(value)
    patched["protocol"]["stage"] = stage
    return patched


def profile_cost(
    profile: str, workers: int = 2, experiments: list[str] | None = None, now: bool = True
) -> pd.DataFrame:
    """The projected cost of ``make run-sweep PROFILE=profile`` (or of ``experiments``, e.g. the
    grid's) on an empty store: one row per experiment (selection, record, ladder and check runs,
    run-minutes on one core, wall minutes on ``workers`` cores), in run order. A run that an earlier
    experiment already holds (the same run key) is counted once. ``now``: priced as the suite
    runs today (packed groups, the test set once per run, validation at its cadence, compiled
    steps, the fused SGD, selection runs without test pass or probes: ``priced_seconds``); else
    as every run was before them."""
    seen: set[str] = set()
    rows = []
    context = (
        contextlib.nullcontext()  # already on configs/ (a test module's hydra context)
        if GlobalHydra.instance().is_initialized()
        else hydra.initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3")
    )
    with context:
        for name in sweep_experiments() if experiments is None else experiments:
            config = hydra.compose(
                "config",
                overrides=[f"experiment={name}", f"profile={profile}"],
                return_hydra_config=True,
            )
            row = {"experiment": name, "select": 0, "record": 0, "ladder": 0, "check": 0}
            row["run_min"] = 0.0
            jobs = []
            for stage, job in experiment_jobs(config):
                key = f"{job['claim']['name']}/{run_key(job)}"
                if key not in seen:
                    seen.add(key)
                    jobs.append((stage, job))
            for (stage, _), seconds in zip(jobs, priced_seconds(jobs, now), strict=True):
                row[stage] += 1
                row["run_min"] += seconds / 60
            rows.append(row)
    table = pd.DataFrame(rows).set_index("experiment")
    table["wall_min"] = table["run_min"] / workers * ROUNDS_OVERHEAD
    return table


def projected_wall_minutes(profile: str, workers: int = 2, now: bool = True) -> float:
    """``profile_cost``'s total: the whole profile's projected wall minutes on ``workers``."""
    return float(math.fsum(profile_cost(profile, workers, now=now)["wall_min"]))


def store_grid(runs: pd.DataFrame, task: str = "classification") -> list[dict]:
    """The ``task`` runs of the store as a grid (one cell per batch size, epochs, images)."""
    images = runs[runs["task"] == task]
    cells = images.groupby(["batch_size", "epochs", "n_train"]).size()
    return [
        dict(batch_size=int(b), epochs=int(e), n_train=int(n), runs=int(count))
        for (b, e, n), count in cells.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--profile", help="project this profile's whole sweep instead")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if args.profile:
        totals = {}
        for target, names in (("run-sweep", None), ("run-grid", makefile_list("GRID_EXPERIMENTS"))):
            table = profile_cost(args.profile, args.workers, names)
            before = profile_cost(args.profile, args.workers, names, now=False)
            table["before_min"] = before["wall_min"]
            print(table.to_string(float_format="{:.1f}".format))
            print(
                f"make {target} PROFILE={args.profile}: {table['select'].sum()} selection + "
                f"{table['record'].sum()} record + {table['ladder'].sum()} ladder + "
                f"{table['check'].sum()} check runs, "
                f"{table['run_min'].sum():.0f} run-min, "
                f"{table['wall_min'].sum():.0f} min on {args.workers} workers (projected); "
                f"{before['wall_min'].sum():.0f} min priced as before (separate eager runs, "
                "looped SGD, the test set and validation every epoch, selection runs tested "
                "and probed)\n"
            )
            totals[target] = (table["wall_min"].sum(), before["wall_min"].sum())
        now, then = (sum(t[i] for t in totals.values()) for i in (0, 1))
        print(
            f"sweep and grid: {now:.0f} min, {then:.0f} min priced as before: "
            f"{1 - now / then:.0%} less"
        )
        print(f"not priced (GPU bundle, CUDA only): {', '.join(gpu_experiments())}")
        return
    runs = run_costs(args.results)
    if runs.empty:
        print(f"no ended runs under {args.results}")
        return
    fmt = {"minutes": "{:.1f}".format, "share": "{:.0%}".format}
    for by in ("experiment", ["task", "batch_size"]):
        print(cost_table(runs, by).drop(columns="seconds").to_string(formatters=fmt), end="\n\n")
    per_image = seconds_per_image(runs)
    print("classification, ms per training image (evaluation included), by batch size:")
    print("  ".join(f"b={b}: {1e3 * s:.2f}" for b, s in per_image.items()))
    measured = runs.loc[runs["task"] == "classification", "seconds"].sum()
    projected = project(store_grid(runs), per_image)
    print(
        f"classification runs: {measured / 60:.1f} run-min measured, "
        f"{projected / 60:.1f} projected from the time model"
    )


if __name__ == "__main__":
    main()
