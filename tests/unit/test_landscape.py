"""C9/C10 probes (ICS, landscape along the gradient), the instrumented task, their analyses and
experiment files."""

import copy
import json
import math
from pathlib import Path

import hydra
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import normexp
from normexp.analysis import curves
from normexp.analysis.claims import smoothness
from normexp.errors import ConfigError
from normexp.models.cnn import VGGNet
from normexp.norms import NormFactory
from normexp.sweep import sweep_overrides
from normexp.train.classification import train_classifier
from normexp.train.instrumented import StepProbes, train_instrumented
from normexp.train.landscape import ics_per_layer, landscape_along_gradient
from normexp.validate import resolve_config

CONFIGS = str(Path(normexp.__file__).resolve().parent.parent / "configs")


def tiny_cnn(norm: str = "batch") -> nn.Module:
    torch.manual_seed(0)
    kwargs = {"max_shift": 0.5, "max_scale": 1.5} if norm == "noisy_batch" else {}
    return VGGNet([4, 8], 2, NormFactory(norm, "pre", kwargs), "relu")


def batch(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def state(model: nn.Module) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


# --- the probes -------------------------------------------------------------------------------


@pytest.mark.parametrize("norm", ["none", "batch", "noisy_batch"])
def test_ics_is_zero_with_a_zero_learning_rate(norm):
    x, y = batch()
    ics = ics_per_layer(tiny_cnn(norm), x, y, lr=0.0)
    assert len(ics["layers"]) == 3  # conv layers 2..4 of 4
    assert max(ics["l2"]) < 1e-6
    assert min(ics["cos"]) > 1 - 1e-6


def test_ics_matches_a_direct_computation_on_copies():
    x, y = batch()
    model, lr = tiny_cnn("batch"), 0.5
    ics = ics_per_layer(model, x, y, lr)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    params = list(model.parameters())
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), params)
    for i, conv in enumerate(convs[1:]):
        shifted = copy.deepcopy(model)
        first = next(j for j, p in enumerate(params) if p is conv.weight)
        with torch.no_grad():
            for p, g in zip(list(shifted.parameters())[:first], grads[:first], strict=True):
                p -= lr * g
        conv_copy = [m for m in shifted.modules() if isinstance(m, nn.Conv2d)][i + 1]
        (g_new,) = torch.autograd.grad(F.cross_entropy(shifted(x), y), [conv_copy.weight])
        g_old = grads[first]
        assert ics["l2"][i] == pytest.approx(float((g_old - g_new).norm()), rel=1e-4)
        assert ics["cos"][i] == pytest.approx(
            float(F.cosine_similarity(g_old.flatten(), g_new.flatten(), dim=0)), abs=1e-5
        )
    assert min(ics["l2"]) > 0


@pytest.mark.parametrize("norm", ["batch", "noisy_batch"])
def test_probes_restore_weights_buffers_and_random_state(norm):
    model = tiny_cnn(norm)
    x, y = batch()
    model(x)  # running statistics away from their initial values
    before, rng = state(model), torch.get_rng_state()
    ics_per_layer(model, x, y, lr=0.3)
    landscape_along_gradient(model, x, y, [0.1, 1.0])
    after = state(model)
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
    assert torch.equal(rng, torch.get_rng_state())
    assert model.training


def test_landscape_with_tiny_steps_moves_nothing():
    x, y = batch()
    near = landscape_along_gradient(tiny_cnn("batch"), x, y, [1e-7, 2e-7])
    far = landscape_along_gradient(tiny_cnn("batch"), x, y, [0.5, 1.0])
    assert near["loss_range"] < 1e-5 and near["grad_predictiveness"] < 1e-4
    assert far["loss_range"] > 100 * near["loss_range"]
    assert math.isfinite(near["beta_smoothness"]) and near["grad_norm"] > 0


class Quadratic(nn.Module):
    """L(w) = ½ Σ λ_j w_j² through model(x) = x·w with x = diag(√λ) and loss ½‖out‖²."""

    def __init__(self, w: list[float]) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w


def half_square(out: torch.Tensor, _: torch.Tensor) -> torch.Tensor:
    return 0.5 * (out**2).sum()


@pytest.mark.parametrize(
    ("curvatures", "w"), [([3.0, 3.0, 3.0], [1.0, -2.0, 0.5]), ([5.0, 1.0], [1.0, 0.0])]
)
def test_beta_smoothness_of_a_quadratic_is_its_curvature(curvatures, w):
    lam = torch.tensor(curvatures, dtype=torch.float64)
    x = torch.diag(lam.sqrt())
    steps = [0.01, 0.05, 0.1]
    got = landscape_along_gradient(Quadratic(w), x, torch.zeros(len(w)), steps, half_square)
    curvature = curvatures[0]  # w lies in an eigenspace of curvature λ₀
    g_norm = curvature * torch.tensor(w, dtype=torch.float64).norm().item()
    assert got["beta_smoothness"] == pytest.approx(curvature, rel=1e-9)
    assert got["grad_predictiveness"] == pytest.approx(max(steps) * curvature * g_norm, rel=1e-9)
    loss0 = 0.5 * curvature * sum(v * v for v in w)
    lowest = min(loss0 * (1 - eta * curvature) ** 2 for eta in steps)
    assert got["loss_range"] == pytest.approx(loss0 - lowest, rel=1e-9)


def test_step_probes_summarize_per_epoch_and_over_training():
    model, (x, y) = tiny_cnn("batch"), batch()
    probes = StepProbes(every=2, probes=["ics", "landscape"], step_sizes=[0.1])
    first, second = {"test_acc": 0.25}, {"test_acc": 0.5}
    for step in range(5):
        probes.before_step(model, x, y, step, lr=0.1)
        if step == 2:
            probes.end_epoch(first)
    probes.end_epoch(second)
    assert probes.steps == [0, 2, 4]
    assert set(first) == {"test_acc"} | {f"probe_{k}" for k in probes.series}
    assert first.keys() == second.keys()
    summary = probes.summary()
    assert summary["test_acc_by_epoch"] == [0.25, 0.5]
    restored = StepProbes(every=2, probes=["ics", "landscape"], step_sizes=[0.1])
    restored.load_state_dict(probes.state_dict())
    assert restored.summary() == summary
    assert summary["probe_points"] == 3 and summary["probe_steps"] == [0, 2, 4]
    assert len(summary["probe_beta_smoothness_series"]) == 3
    assert len(summary["probe_ics_l2_by_epoch"]) == 2
    assert len(summary["probe_ics_cos_by_layer"]) == len(summary["probe_ics_layers"]) == 3
    json.dumps(summary)  # the store writes it as JSON
    off = StepProbes(every=0, probes=["ics"], step_sizes=[])
    off.end_epoch({"test_acc": 0.5, "train_loss": 2.0})
    assert off.summary() == {"test_acc_by_epoch": [0.5], "train_loss_by_epoch": [2.0]}


# --- the task ---------------------------------------------------------------------------------


@pytest.fixture
def compose(smoke_cfg):
    return lambda *overrides: resolve_config(
        smoke_cfg(
            "train=instrumented",
            "train.epochs=2",
            "train.batch_size=32",
            "tracking.mode=disabled",
            *overrides,
        )
    )


@pytest.mark.parametrize("norm", ["batch", "noisy_batch"])
def test_probes_do_not_change_training(compose, norm):
    cfg = compose(f"norm={norm}", "train.probe_every=3")
    logged: list[dict] = []
    probed = train_instrumented(cfg, logged.append)
    plain = train_classifier(cfg, lambda m: None)  # the classification loop, same config
    for key in ("train_loss", "train_acc", "val_loss", "test_loss", "test_acc"):
        assert probed[key] == plain[key], key
    assert probed["probe_points"] == 6  # 8 steps per epoch, 2 epochs: steps 0, 3, ..., 15
    assert all("probe_ics_l2" in m and "probe_beta_smoothness" in m for m in logged)
    assert len(probed["probe_loss_range_by_epoch"]) == 2
    train_acc = [m["train_acc"] for m in logged]
    assert probed["train_acc_by_epoch"] == pytest.approx(train_acc, rel=1e-5)
    # the test set is evaluated once, after training: no test curve unless asked for
    assert "test_acc_by_epoch" not in probed and not any("test_acc" in m for m in logged)


class Killed(Exception):
    pass


def test_a_killed_probed_run_resumes_to_the_same_metrics_and_probe_series(compose, tmp_path):
    cfg = compose("norm=noisy_batch", "train.probe_every=3")
    reference = train_instrumented(cfg, lambda m: None)
    checkpoint = tmp_path / "checkpoint.pt"

    def die_in_epoch_2(metrics: dict) -> None:
        if metrics["epoch"] == 2:
            raise Killed  # as if the job were killed while epoch 2 was being logged

    with pytest.raises(Killed):
        train_instrumented(cfg, die_in_epoch_2, checkpoint=checkpoint)
    resumed = train_instrumented(cfg, lambda m: None, checkpoint=checkpoint)
    assert resumed["resumed_at_epoch"] == 1
    timing = {"wall_time_s", "images_per_s", "epoch_time_s", "probe_time_s", "resumed_at_epoch"}
    assert {k: v for k, v in resumed.items() if k not in timing} == {
        k: v for k, v in reference.items() if k not in timing
    }


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("train.probes=[bogus]", "train.probes"),
        ("train.probe_every=-1", "train.probe_every"),
        ("train.probe_step_sizes=[0.1,-1]", "train.probe_step_sizes"),
        ("train.precise_bn_batches=2", "train.precise_bn_batches"),
        ("train.probes=ics", "train.probes"),
    ],
)
def test_bad_probe_fields_are_refused_naming_the_field(compose, override, field):
    with pytest.raises(ConfigError) as info:
        compose(override)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("experiment", "runs", "claim"), [("not_ics", 3 * 3, "C9"), ("smoothness", 2 * 4 * 3, "C10")]
)
def test_experiments_compose_with_the_instrumented_task(experiment, runs, claim):
    with hydra.initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        cfg = hydra.compose(
            "config", overrides=[f"experiment={experiment}"], return_hydra_config=True
        )
        jobs = sweep_overrides(cfg)
        first = resolve_config(hydra.compose("config", overrides=jobs[0]))
    assert len(jobs) == runs
    assert first["train"]["task"] == "instrumented_classification"
    assert first["claim"] == {"id": claim, "name": experiment}
    assert first["train"]["probe_every"] > 0 and first["profile"] == "quick"


# --- the analyses (C9's verdict: tests/unit/test_fair_claims.py) ----------------------------


def row(norm: str, seed: int, acc: float, **extra) -> dict:
    return {
        "norm.name": norm,
        "seed": seed,
        "status": "ok",
        "profile": "quick",
        "n_train": 4000,
        "train.batch_size": 32,
        "optim.lr_per_128": 0.1,
        "test_acc": acc,
        "train_acc": acc + 0.01,
        "train_acc_by_epoch": str([acc / 2, acc + 0.01]),
        "test_acc_by_epoch": str([acc / 2, acc]),
        "probe_steps": "[0, 25, 50]",
        **extra,
    }


def landscape_table(bn_factor: float, bn_high_lr_acc: float) -> pd.DataFrame:
    rows = []
    for seed in range(3):
        j = 0.01 * seed
        for lr in (0.025, 0.1, 0.4, 1.6):
            for norm in ("none", "batch"):
                f = bn_factor if norm == "batch" else 1.0
                acc = {"none": {1.6: 0.1}, "batch": {1.6: bn_high_lr_acc}}[norm].get(lr, 0.4)
                diverged = norm == "none" and lr == 1.6
                rows.append(
                    row(
                        norm,
                        seed,
                        acc + j,
                        **{
                            "optim.lr_per_128": lr,
                            "status": "diverged" if diverged else "ok",
                            "train.probe_step_sizes": "[0.05, 0.1]",
                            "probe_loss_range_mean": f * (0.2 + j),
                            "probe_beta_smoothness_mean": f * (5 + j),
                            "probe_grad_predictiveness_mean": f * (1 + j),
                            "probe_loss_range_series": str([f * 0.2, f * 0.3, f * 0.1]),
                            "probe_beta_smoothness_series": str([f * 5, f * 4, f * 3]),
                            "probe_grad_predictiveness_series": str([f, f, f]),
                        },
                    )
                )
    return pd.DataFrame(rows)


def test_smoothness_verdict_both_ways_and_not_run_yet(tmp_path):
    supported = smoothness.verdict({"smoothness": landscape_table(0.3, bn_high_lr_acc=0.4)})
    assert supported["verdict"] == "supported", supported["effect"]
    assert supported["details"]["lrs_that_train"] == {
        "batch": [0.025, 0.1, 0.4, 1.6],
        "none": [0.025, 0.1, 0.4],
    }
    assert supported["estimate"] == pytest.approx(math.log10(0.3))
    contradicted = smoothness.verdict({"smoothness": landscape_table(3.0, bn_high_lr_acc=0.1)})
    assert contradicted["verdict"] == "contradicted", contradicted["effect"]
    assert smoothness.verdict({"smoothness": pd.DataFrame()})["verdict"] == "not run yet"
    json.dumps(supported)
    for name, table in (("runs", landscape_table(0.3, 0.4)), ("empty", pd.DataFrame())):
        out = smoothness.draw({"smoothness": table}, tmp_path / f"{name}.png")
        assert out.stat().st_size > 10_000


def test_list_cells_parse_back_from_the_collected_text():
    assert curves.parse_list("[0.5, None, inf, -1e-05, 3]")[2] == math.inf
    parsed = curves.parse_list("[0.5, None, inf, -1e-05, 3]")
    assert parsed[0] == 0.5 and math.isnan(parsed[1]) and parsed[3:] == [-1e-05, 3.0]
    assert curves.parse_list([1, None]) == [1.0, pytest.approx(math.nan, nan_ok=True)]
    assert curves.parse_list(float("nan")) == []
