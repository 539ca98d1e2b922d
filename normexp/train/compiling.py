"""torch.compile of a classifier's training step, where the bench shows it pays
(``runtime.compile``: auto, off or on; issue #30).

Only the training forward pass (and so its backward) of an unpacked classification run is
compiled: evaluation, BN's batch-statistics and precise-BN passes, probes, checkpoints and state
dicts all use the original module, which the compiled one shares its parameters and buffers with
(a compiled module's own state_dict would carry ``_orig_mod.`` prefixes). Packed groups and
instrumented runs train eagerly. ``runtime`` is never part of a run key: a compiled run is the
same math as its eager run, up to float32 rounding (the bench checks it on a real run).

``auto`` reads the frozen table ``COMPILE_TABLE``, measured by ``make bench``
(normexp/bench/compiled.py): the device, model, norm and batch sizes where a compiled step beat
the eager one, and the training budget (images) above which the gain repays the compile twice
over. A compile is "warm" when inductor's on-disk cache already holds the graph (it persists in
its cache directory across the processes of one machine: a sweep's runs of one cell after the
first) and "cold" otherwise; profiles whose sweeps run on one machine (``WARM_CACHE_PROFILES``)
count the warm price, the others (a cluster's nodes, a fresh GPU machine) the cold one. A
compile that fails (no C++ compiler, an unsupported platform) falls back to eager with one
warning line, and the run's summary says whether it was compiled (``compiled``).
"""

import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

COMPILE_MODES = ("auto", "off", "on")
COMPILE_TASKS = ("classification",)  # instrumented runs probe the original module eagerly

log = logging.getLogger("normexp")


@dataclass(frozen=True)
class CompileCell:
    """Runs that ``auto`` compiles: a model, its norms, a batch-size range (both ends
    measured), and the least training images (epochs x images) at which the measured gain
    repays twice a warm, or a cold, compile."""

    model: str
    norms: tuple[str, ...]
    batch: tuple[int, int]
    min_images_warm: int
    min_images_cold: int


# From `make bench` ("compile" rows: one thread, interleaved, CPU clock; load 4-5 on 2 cores),
# torch 2.14.1 on this CPU, the training step compiled over eager: ResNet-20 with BN 1.14x at
# batch 32 and 1.10x at 128, without norm 1.06x and 1.08x; the quick CNN is slower compiled
# (BN 1.02x / 0.88x, none 0.80x / 0.85x: its convolutions are the step), and the MLP at batch 2
# gains nothing (1.01x in a probe, not a bench row: its step is the optimizer's pass over its
# first layer's weights). A compile costs 1.5-3.0 s of CPU warm and 21-43 s cold. A ResNet-20
# image takes 2.8 ms to train at batch 32 (the cost model, idle), of which the row's smallest
# gain saves 0.25 ms (BN, 1.10x) or 0.16 ms (none, 1.06x): twice a 3 s warm compile is repaid
# by 24,000 or 38,000 images, twice a cold one (43 or 26 s) by 340,000 or 330,000. So auto
# compiles none of smoke or quick (16,000 images at most for a ResNet run), and at standard the
# ResNet-20's BN and no-norm cells at batch 32 (80,000 images; the ladder's 0.5 rung and the
# check too, its 0.25 rung not). GN and LN are not compiled (GN measured slower in #30, LN not
# measured), nor anything on CUDA (not measured).
COMPILE_TABLE: dict[str, tuple[CompileCell, ...]] = {
    "cpu": (
        CompileCell("resnet", ("batch",), (32, 128), 24_000, 340_000),
        CompileCell("resnet", ("none",), (32, 128), 38_000, 330_000),
    ),
    "cuda": (),  # not measured: a GPU's compile is another trade (CUDA graphs, autotuning)
}
# Profiles whose sweeps run on one machine, where inductor's cache outlives each run's process.
WARM_CACHE_PROFILES = ("smoke", "quick", "standard")


def training_images(config: Mapping) -> int:
    """The images a run trains on: steps x batch, or epochs x training images."""
    train, data = config["train"], config["data"]
    if train.get("steps"):
        return int(train["steps"]) * int(train["batch_size"])
    n_train = data["n_train"] if data["n_train"] is not None else 50_000 - data["n_val"]
    return int(train["epochs"]) * int(n_train)


def compile_cell(config: Mapping, device: str = "cpu") -> CompileCell | None:
    """The row of COMPILE_TABLE that holds the run (resolved config) on ``device``, if any."""
    model, norm = config["model"]["name"], config["norm"]["name"]
    batch = int(config["train"]["batch_size"])
    for cell in COMPILE_TABLE["cuda" if device.startswith("cuda") else "cpu"]:
        if cell.model == model and norm in cell.norms and cell.batch[0] <= batch <= cell.batch[1]:
            return cell
    return None


def why_not_compiled(config: Mapping, device: str = "cpu") -> str | None:
    """None when the run (resolved config) compiles its training step on ``device``; else why
    it trains eagerly. The caller knows whether it trains packed (packed groups never compile)."""
    mode = config["runtime"].get("compile", "off")  # absent in configs stored before: eager
    if mode == "off":
        return "runtime.compile is off"
    if config["train"]["task"] not in COMPILE_TASKS:
        return f"train.task {config['train']['task']} trains eagerly"
    if mode == "on":
        return None
    cell = compile_cell(config, device)
    if cell is None:
        return "no measured gain for this model, norm and batch size (COMPILE_TABLE)"
    warm = config["profile"] in WARM_CACHE_PROFILES
    least = cell.min_images_warm if warm else cell.min_images_cold
    if training_images(config) < least:
        return f"too short to repay a {'warm' if warm else 'cold'} compile ({least} images)"
    return None


def _compile_threads(threads: int) -> None:
    """One compile thread per run thread (a sweep runs one run per core), set where inductor
    reads it: its environment variable before its config is imported (importing it costs
    seconds, which a run that never compiles should not pay), the config once it is."""
    os.environ["TORCHINDUCTOR_COMPILE_THREADS"] = str(threads)
    if (inductor := sys.modules.get("torch._inductor.config")) is not None:
        inductor.compile_threads = threads


class TrainingForward:
    """The training forward pass of ``model``: the module itself, or torch.compile'd. A compile
    fails at the first call (inductor builds its kernels then); that call's buffers and random
    state are restored and the run goes on eagerly, after one warning line."""

    def __init__(self, model: nn.Module, compile_it: bool, threads: int = 1) -> None:
        self.model = model
        self.compiled = False
        self._forward: nn.Module = model
        self._first_call = False
        if compile_it:
            try:
                _compile_threads(threads)
                self._forward = torch.compile(model)
                self.compiled = self._first_call = True
            except Exception as exc:  # noqa: BLE001 - any failure to compile means eager
                self._fall_back(exc)

    def __call__(self, x: Tensor) -> Tensor:
        if not self._first_call:
            return self._forward(x)
        buffers = [(b, b.clone()) for b in self.model.buffers()]  # BN's running statistics
        rng = torch.get_rng_state()
        try:
            out = self._forward(x)
        except Exception as exc:  # noqa: BLE001 - the compile failed: this call again, eagerly
            with torch.no_grad():
                for buffer, saved in buffers:
                    buffer.copy_(saved)
            torch.set_rng_state(rng)
            self._fall_back(exc)
            return self.model(x)
        self._first_call = False
        return out

    def _fall_back(self, exc: Exception) -> None:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        log.warning("torch.compile failed (%s: %s); training eagerly", type(exc).__name__, first)
        self._forward, self.compiled, self._first_call = self.model, False, False
