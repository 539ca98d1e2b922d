"""torch.compile of the training step (runtime.compile, normexp/train/compiling.py): which runs
auto compiles, and that a compile which fails falls back to eager training with one warning.
Nothing here compiles for real (20-45 s of CPU each): torch.compile is replaced. The real
compiled-vs-eager run is `make bench`'s compile section (normexp/bench/compiled.py)."""

import copy
import logging

import pytest
import torch

from normexp.train.classification import train_classifier
from normexp.train.compiling import (
    COMPILE_TABLE,
    WARM_CACHE_PROFILES,
    TrainingForward,
    why_not_compiled,
)
from normexp.validate import resolve_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")
CELL = COMPILE_TABLE["cpu"][0]


def run_config(
    profile: str = "standard",
    epochs: int = 8,
    mode: str = "auto",
    model: str = CELL.model,
    norm: str = CELL.norms[0],
    batch: int = CELL.batch[0],
    task: str = "classification",
) -> dict:
    return {
        "profile": profile,
        "runtime": {"compile": mode, "threads": 1},
        "train": {"task": task, "batch_size": batch, "epochs": epochs, "steps": None},
        "data": {"n_train": 10_000, "n_val": 2_000},
        "model": {"name": model},
        "norm": {"name": norm},
    }


def test_auto_compiles_the_measured_cells_when_long_enough_to_repay_the_compile():
    assert why_not_compiled(run_config()) is None  # standard: 80,000 images, warm cache
    assert why_not_compiled(run_config(epochs=16)) is None  # its convergence check
    assert "too short" in why_not_compiled(run_config(epochs=1))
    assert "too short" in why_not_compiled(run_config(profile="paper"))  # a cold compile
    assert why_not_compiled(run_config(profile="paper", epochs=100)) is None
    assert "COMPILE_TABLE" in why_not_compiled(run_config(model="mlp"))
    assert "COMPILE_TABLE" in why_not_compiled(run_config(norm="group"))
    assert "COMPILE_TABLE" in why_not_compiled(run_config(batch=CELL.batch[1] * 2))
    assert "COMPILE_TABLE" in why_not_compiled(run_config(), device="cuda")  # not measured


def test_quick_and_smoke_runs_are_too_short_to_compile():
    # quick trains 4 epochs of 4,000 images (16,000), smoke 1 of 256: neither repays a compile
    assert {"smoke", "quick"} <= set(WARM_CACHE_PROFILES)
    for cell in (c for cells in COMPILE_TABLE.values() for c in cells):
        assert cell.min_images_warm > 4 * 4_000


def test_off_on_and_what_never_compiles():
    assert why_not_compiled(run_config(mode="off")) == "runtime.compile is off"
    assert why_not_compiled(run_config(mode="on", model="mlp", epochs=1)) is None
    instrumented = run_config(mode="on", task="instrumented_classification")
    assert "trains eagerly" in why_not_compiled(instrumented)  # its probes run the module
    stored = run_config()
    del stored["runtime"]["compile"]  # configs from before the field trained eagerly
    assert why_not_compiled(stored) == "runtime.compile is off"


@pytest.fixture(autouse=True)
def compile_threads_restored(monkeypatch):
    # TrainingForward sets inductor's thread count in the environment: undone after each test
    monkeypatch.setenv("TORCHINDUCTOR_COMPILE_THREADS", "1")


class Broken(RuntimeError):
    pass


def failing_compile(model, **kwargs):  # noqa: ANN001, ANN201, ARG001 - torch.compile's shape
    def forward(x):  # noqa: ANN001, ANN202
        model(x)  # a partial run before the failure: the buffers it moved are restored
        raise Broken("InvalidCxxCompiler: No working C++ compiler found\nmore lines")

    return forward


def test_a_compile_that_fails_falls_back_to_eager_at_the_first_call(monkeypatch, caplog):
    monkeypatch.setattr(torch, "compile", failing_compile)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4)).train()
    reference = copy.deepcopy(model)
    forward = TrainingForward(model, compile_it=True)
    assert forward.compiled  # until it is called
    x = torch.randn(8, 3)
    with caplog.at_level(logging.WARNING, logger="normexp"):
        out = forward(x)
        forward(x)
    assert not forward.compiled
    assert torch.equal(out, reference(x))
    reference(x)  # two eager steps: the failed call's statistics were undone, not counted twice
    assert torch.equal(model[1].running_mean, reference[1].running_mean)
    assert int(model[1].num_batches_tracked) == 2
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == ["torch.compile failed (Broken: InvalidCxxCompiler: No working C++ "
                        "compiler found); training eagerly"]  # fmt: skip


def test_a_platform_without_torch_compile_trains_eagerly(monkeypatch, caplog):
    def unsupported(model, **kwargs):  # noqa: ANN001, ANN202, ARG001
        raise RuntimeError("torch.compile is not supported on this platform")

    monkeypatch.setattr(torch, "compile", unsupported)
    with caplog.at_level(logging.WARNING, logger="normexp"):
        forward = TrainingForward(torch.nn.Linear(3, 4), compile_it=True)
    assert not forward.compiled and len(caplog.records) == 1


def test_a_run_records_that_it_compiled_its_training_forward_only(smoke_cfg, monkeypatch):
    compiled_modules = []

    def identity_compile(model, **kwargs):  # noqa: ANN001, ANN202, ARG001 - a compile that works
        compiled_modules.append(model)
        return model

    monkeypatch.setattr(torch, "compile", identity_compile)
    cfg = resolve_config(smoke_cfg("train.batch_size=64", "data.n_train=128", "runtime.compile=on"))
    assert train_classifier(cfg, lambda m: None)["compiled"] is True
    assert len(compiled_modules) == 1  # the training forward; evaluation runs the module itself
