"""C6's deciding task, bn_generation_gram: the Gram and perceptual losses on fixed inputs, the
loss network and the style image, the style weight's rule, the stylization task, its config,
and C6's verdict rule on it."""

import json
from pathlib import Path

import hydra
import pandas as pd
import pytest
import torch
from torch import nn

import normexp
from normexp.analysis.claims import bn_generation
from normexp.bench.cost import job_seconds
from normexp.data.augment import CIFAR10_MEAN
from normexp.data.style_image import procedural_style
from normexp.errors import ConfigError
from normexp.metrics import METRICS
from normexp.models import loss_network
from normexp.models.loss_network import (
    LossNetwork,
    StyleContentLoss,
    check_features,
    gram,
    random_vgg,
)
from normexp.protocol.select import SELECT_DIRECTION
from normexp.sweep import sweep_overrides
from normexp.tasks import get_task
from normexp.train.image_to_image import SAMPLE_GRID
from normexp.train.stylization import balanced_style_weight
from normexp.validate import resolve_config
from tests.unit.test_generation import task_config as generation_task_config

REPO = Path(normexp.__file__).resolve().parent.parent
EXPERIMENT = "bn_generation_gram"
NORMS = ("none", "batch", "instance", "layer", "group")

pytestmark = pytest.mark.usefixtures("results_in_tmp")


def compose(*overrides: str):
    return hydra.compose("config", overrides=list(overrides), return_hydra_config=True)


def constant(value: float, n: int = 2, size: int = 4) -> torch.Tensor:
    return torch.full((n, 3, size, size), value)


def plain_loss(style_value: float) -> StyleContentLoss:
    """A loss network that passes non-negative pixels through (relu1_2, relu2_2) and average-pools
    them (relu3_3), with no normalization: every feature of a constant image is that constant."""
    layers = nn.Sequential(nn.Identity(), nn.ReLU(), nn.Identity(), nn.ReLU(), nn.AvgPool2d(2))
    names = {1: "relu1_2", 3: "relu2_2", 4: "relu3_3"}
    net = LossNetwork(layers, names, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    return StyleContentLoss(net, constant(style_value, n=1)[0])


# --- the losses on fixed inputs ----------------------------------------------------------


def test_gram_of_a_fixed_feature_map():
    # Two channels over four positions: G = F Fᵀ / (C H W) = F Fᵀ / 8.
    f = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 0.0, -1.0]]).view(1, 2, 2, 2)
    expected = torch.tensor([[30.0, -2.0], [-2.0, 2.0]]) / 8
    assert torch.allclose(gram(f)[0], expected)
    assert gram(torch.cat([f, 2 * f])).shape == (2, 2, 2)  # per image
    assert torch.allclose(gram(torch.cat([f, 2 * f]))[1], 4 * expected)


def test_content_and_style_losses_of_constant_images():
    # Output a, content b, style s (constants, 3 channels): content = (a − b)², and each style
    # layer's Gram is a²/3 in all 9 entries, so the style loss is 3 layers × 9 × ((a² − s²)/3)².
    a, b, s = 0.5, 0.2, 0.3
    content, style = plain_loss(s).terms(constant(a), constant(b))
    assert torch.allclose(content, torch.full((2,), (a - b) ** 2))
    assert torch.allclose(style, torch.full((2,), 3 * (a**2 - s**2) ** 2))
    content, style = plain_loss(s).terms(constant(s), constant(s))
    assert torch.all(content == 0) and torch.all(style == 0)


def test_the_style_weight_rule_makes_both_trivial_outputs_cost_the_same():
    # Content b, style s: pasting the style costs (s − b)² of content loss; the content image
    # unchanged costs 3 (b² − s²)² of style loss; the rule's weight equates them.
    b, s = 0.2, 0.3
    loss = plain_loss(s)
    weight = balanced_style_weight(loss, constant(b), constant(s, n=1)[0])
    assert weight == pytest.approx((s - b) ** 2 / (3 * (b**2 - s**2) ** 2))
    pasted, _ = loss.terms(constant(s), constant(b))
    _, unchanged = loss.terms(constant(b), constant(b))
    assert torch.allclose(weight * unchanged, pasted)


# --- the loss network and the style image -------------------------------------------------


def test_random_features_are_fixed_by_their_seed_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a, b, c = random_vgg(0), random_vgg(0), random_vgg(1)
    assert torch.equal(torch.random.get_rng_state(), before)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    fa, fb, fc = a(x), b(x), c(x)
    assert set(fa) == {"relu1_2", "relu2_2", "relu3_3"}
    assert [f.shape[1:] for f in fa.values()] == [(16, 32, 32), (32, 16, 16), (64, 8, 8)]
    assert all(torch.equal(fa[k], fb[k]) for k in fa)
    assert not torch.allclose(fa["relu3_3"], fc["relu3_3"])
    assert not any(p.requires_grad for p in a.parameters())
    assert not a.train().training  # fixed: stays in eval mode


def test_the_generators_first_output_gets_a_gradient():
    # The generator starts by predicting the CIFAR-10 mean colour, which the loss network
    # normalizes to all zeros: with zero biases every feature would be 0, where ReLU passes no
    # gradient, and training could not start.
    loss = StyleContentLoss(random_vgg(0), procedural_style(0))
    start = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1).expand(2, 3, 32, 32).clone()
    start.requires_grad_(True)
    content, style = loss.terms(start, torch.rand(2, 3, 32, 32))
    (content + style).sum().backward()
    assert start.grad.abs().sum() > 0


def test_style_image_is_a_seeded_texture_in_0_1():
    torch.manual_seed(5)
    before = torch.random.get_rng_state()
    s = procedural_style(0)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert s.shape == (3, 32, 32) and s.min() >= 0 and s.max() <= 1
    assert torch.equal(s, procedural_style(0)) and not torch.equal(s, procedural_style(1))
    assert s.std() > 0.1  # a texture, not a flat colour


def test_vgg16_without_cached_weights_is_refused_in_one_line_without_downloading(
    tmp_path, monkeypatch, hydra_ctx
):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    with pytest.raises(ConfigError) as info:
        resolve_config(compose(f"experiment={EXPERIMENT}", "profile=smoke", "train.features=vgg16"))
    assert info.value.field == "train.features"
    assert "\n" not in str(info.value) and "never downloads" in str(info.value)
    assert str(tmp_path / "hub") in str(info.value)
    with pytest.raises(ConfigError):
        loss_network.vgg16()
    weights = tmp_path / "hub" / "checkpoints" / loss_network.VGG16_WEIGHTS_FILE
    weights.parent.mkdir(parents=True)
    weights.touch()
    check_features("vgg16")  # present: accepted (the file is read only when a run starts)


# --- the task and its config ----------------------------------------------------------------


def task_config(data_dir: Path, extra: list[str], *overrides: str) -> dict:
    """A smoke run of this experiment, resolved (the generation tests' helper)."""
    return generation_task_config(data_dir, extra, *overrides, experiment=EXPERIMENT)


def test_task_trains_at_smoke_scale_and_writes_summary_and_sample_grid(
    hydra_ctx, cifar_data, tmp_path
):
    cfg = task_config(*cifar_data, "norm=batch", "train.batch_size=8")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    logged: list[dict] = []
    summary = get_task("stylization").train(
        cfg, logged.append, 0, checkpoint=run_dir / "checkpoint.pt"
    )
    assert [m["epoch"] for m in logged] == [1]
    for key in ("test_stylization_loss", "test_content_loss", "test_style_loss",
                "test_stylization_loss_batch_stats", "input_stylization_loss",
                "val_stylization_loss", "style_weight", "train_loss"):  # fmt: skip
        assert torch.isfinite(torch.tensor(summary[key])), key
    assert summary["test_stylization_loss"] == pytest.approx(
        summary["test_content_loss"] + summary["test_style_loss"]
    )
    assert summary["style_weight"] > 0  # the rule's weight, recorded
    assert summary["sample_grid"] == SAMPLE_GRID
    assert (run_dir / SAMPLE_GRID).read_bytes().startswith(b"\x89PNG")
    json.dumps(summary)
    # Every logged key is a metric registered for the task (tests/unit/test_metrics.py's rule).
    assert set(summary) - {"resumed_at_epoch"} <= {
        m.name for m in METRICS.values() if "stylization" in m.tasks
    }


@pytest.mark.parametrize(("profile", "seeds", "norms"), [("smoke", 1, 2), ("quick", 3, 5),
                                                          ("standard", 5, 5)])  # fmt: skip
def test_experiment_composes_with_its_grid_and_protocol(hydra_ctx, profile, seeds, norms):
    cfg = compose(f"experiment={EXPERIMENT}", f"profile={profile}")
    jobs = sweep_overrides(cfg)
    assert len(jobs) == norms * 2 * seeds
    config = resolve_config(compose(*jobs[0]))
    assert (config["claim"]["id"], config["claim"]["name"]) == ("C6", EXPERIMENT)
    assert config["train"]["task"] == "stylization" and config["model"]["name"] == "generator"
    assert config["train"]["features"] == "random" and config["train"]["style_weight"] is None
    protocol = config["protocol"]
    assert protocol["select_on"] == "val_stylization_loss"
    assert SELECT_DIRECTION[protocol["select_on"]] == "lower"
    if profile != "smoke":
        assert protocol["lr_grid"] and set(protocol["check"]["norm"].split(",")) == set(NORMS)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["train.features=alexnet"], "train.features"),
        (["train.features_seed=-1"], "train.features_seed"),
        (["train.style_weight=0"], "train.style_weight"),
        (["model=cnn"], "model.name"),
        (["norm=instance", "norm.position=post"], "norm.position"),
    ],
)
def test_bad_values_are_refused_naming_the_field(hydra_ctx, overrides, field):
    with pytest.raises(ConfigError) as info:
        resolve_config(compose(f"experiment={EXPERIMENT}", "profile=smoke", *overrides))
    assert info.value.field == field


def test_the_cost_model_adds_the_loss_network_to_the_generators_time(hydra_ctx):
    gram = resolve_config(compose(f"experiment={EXPERIMENT}", "profile=quick",
                                  "train.batch_size=4"))  # fmt: skip
    plain = resolve_config(compose("experiment=bn_generation", "profile=quick",
                                   "train.batch_size=4"))  # fmt: skip
    assert job_seconds(gram) == pytest.approx(2.23 * job_seconds(plain))


# --- C6's verdict on the Gram task --------------------------------------------------------


def gram_table(excess: dict, seeds: int = 3) -> pd.DataFrame:
    """Test losses with every rival ``excess[(norm, batch)]`` % above IN's (0.1 by default, a
    tie at this noise), per-seed noise of ±0.1%."""
    rows = []
    for norm in NORMS:
        for batch in (4, 32):
            for seed in range(seeds):
                loss = 0.2 * (1 + 0.05 * seed)
                if norm != "instance":
                    noise = 1 + 0.001 * ((seed + len(norm)) % 3 - 1)
                    loss *= (1 + excess.get((norm, batch), 0.1) / 100) * noise
                rows.append(
                    {
                        "norm.name": norm,
                        "train.batch_size": batch,
                        "seed": seed,
                        "status": "ok",
                        "test_stylization_loss": loss,
                        "input_stylization_loss": 0.35,
                        "style_weight": 0.93,
                        "profile": "smoke",
                        "n_train": 64,
                        "run_key": f"{norm}{batch}{seed}",
                        "sample_grid": "samples.png",
                    }
                )
    return pd.DataFrame(rows)


EVERY_RIVAL = {(n, b): 5.0 for n in ("batch", "layer", "group", "none") for b in (4, 32)}


@pytest.mark.parametrize(
    ("excess", "c6a", "c6b", "overall"),
    [
        (EVERY_RIVAL, "supported", "supported", "supported"),
        ({("batch", 32): 5.0, ("batch", 4): 20.0}, "supported", "inconclusive", "inconclusive"),
        ({**EVERY_RIVAL, ("layer", 4): -5.0}, "supported", "contradicted", "contradicted"),
        ({**EVERY_RIVAL, ("batch", 32): -5.0}, "contradicted", "contradicted", "contradicted"),
        # BN ahead only at the small batch still contradicts C6a; IN ahead there alone does not
        # support it (BN's small-batch weakness is C4's claim).
        ({**EVERY_RIVAL, ("batch", 4): -5.0}, "contradicted", "contradicted", "contradicted"),
        ({**EVERY_RIVAL, ("batch", 32): 0.1}, "inconclusive", "inconclusive", "inconclusive"),
    ],
)
def test_c6_is_decided_by_the_gram_task_in_percent_of_ins_loss(excess, c6a, c6b, overall):
    v = bn_generation.verdict({EXPERIMENT: gram_table(excess)})
    subs = {s["id"]: s for s in v["sub"]}
    assert (subs["C6a"]["verdict"], subs["C6b"]["verdict"], v["verdict"]) == (c6a, c6b, overall)
    assert v["estimate"] == pytest.approx(excess.get(("batch", 32), 0.1), abs=0.05)
    assert "% of IN's" in subs["C6a"]["statistic"]
    assert len(v["details"]["tests_pct_of_in"]) == 8
    if c6b == "contradicted":
        assert subs["C6b"]["estimate"] < 0  # the test that contradicted it is the statistic
    assert v["details"]["decided_by"] == EXPERIMENT
    json.dumps(v, allow_nan=False)


def test_the_reported_tasks_never_change_c6s_call():
    gram = gram_table(EVERY_RIVAL)
    psnr = gram.drop(columns=["test_stylization_loss"]).assign(test_psnr=20.0)
    psnr.loc[psnr["norm.name"] == "batch", "test_psnr"] = 25.0  # BN far ahead of IN there
    alone = bn_generation.verdict({EXPERIMENT: gram})
    beside = bn_generation.verdict({EXPERIMENT: gram, "bn_generation": psnr})
    assert alone["verdict"] == beside["verdict"] == "supported"
    assert [s["verdict"] for s in alone["sub"]] == [s["verdict"] for s in beside["sub"]]
    assert {r["experiment"]: r["verdict"] for r in beside["details"]["reported"]} == {
        "bn_generation": "contradicted", "bn_generation_style": "not run yet"}  # fmt: skip
    assert bn_generation.deciding({EXPERIMENT: gram, "bn_generation": psnr}).keys() == {
        EXPERIMENT
    }


def test_a_norm_without_runs_leaves_c6b_open():
    df = gram_table(EVERY_RIVAL)
    v = bn_generation.verdict({EXPERIMENT: df[df["norm.name"] != "group"]})
    subs = {s["id"]: s for s in v["sub"]}
    assert subs["C6a"]["verdict"] == "supported"
    assert subs["C6b"]["verdict"] == "inconclusive" and "GN" in subs["C6b"]["note"]


def test_the_deciding_task_is_named_once_for_other_claims():
    task = bn_generation.DECIDING_TASK
    assert task.experiment == EXPERIMENT and (REPO / "experiments" / f"{EXPERIMENT}.yaml").exists()
    assert METRICS[task.metric].better == ("higher" if task.higher_is_better else "lower")
    assert "stylization" in METRICS[task.metric].tasks
    assert bn_generation.ANALYSIS.reads[0] == task.experiment
