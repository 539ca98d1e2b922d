"""C6's reported tasks, bn_generation (restoration) and bn_generation_style (fixed-map
stylization): corruptions, targets, generator, image-to-image task, analysis and configs."""

import copy
import json
from pathlib import Path

import hydra
import numpy as np
import pandas as pd
import pytest
import torch

import normexp
from normexp.analysis.claims import bn_generation
from normexp.data.corruptions import (
    Corruption,
    CorruptionRanges,
    corrupt,
    fixed_corruption,
    sample_corruption,
    standardize,
    stylize,
)
from normexp.errors import ConfigError
from normexp.models.generator import build_generator, check_generator
from normexp.sweep import compose_jobs, sweep_overrides
from normexp.tasks import get_task
from normexp.train.image_to_image import SAMPLE_GRID, psnr_per_image, ssim_per_image
from normexp.validate import resolve_config

REPO = Path(normexp.__file__).resolve().parent.parent
CONFIG_DIR = str(REPO / "configs")
EXPERIMENTS = ("bn_generation", "bn_generation_style")
NORMS = ("none", "batch", "instance", "layer", "group")
RANGES = CorruptionRanges()


pytestmark = pytest.mark.usefixtures("results_in_tmp")


def compose(*overrides: str):
    return hydra.compose("config", overrides=list(overrides), return_hydra_config=True)


def images(n: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


# --- corruptions -----------------------------------------------------------------------


def test_corruption_is_deterministic_given_the_generator_state():
    x = images()
    a, pa = corrupt(x, RANGES, torch.Generator().manual_seed(3))
    b, pb = corrupt(x, RANGES, torch.Generator().manual_seed(3))
    c, _ = corrupt(x, RANGES, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and torch.equal(pa.gain, pb.gain)
    assert not torch.equal(a, c)
    assert torch.equal(fixed_corruption(x, RANGES), fixed_corruption(x, RANGES))


def test_corruption_is_instance_specific_and_exactly_invertible():
    x = images(16)
    y, params = corrupt(x, RANGES, torch.Generator().manual_seed(0))
    assert params.gain.shape == params.offset.shape == (16, 3, 1, 1)
    # Every image (and channel) has its own gain and offset ...
    assert len(torch.unique(params.gain.flatten())) == 16 * 3
    assert len(torch.unique(params.offset.flatten())) == 16 * 3
    # ... applied to that image only: corrupting one image alone gives the same result.
    assert torch.allclose(params[3:4].apply(x[3:4]), y[3:4])
    assert torch.allclose(params.invert(y), x, atol=1e-5)  # not clipped: invertible
    lo, hi = RANGES.contrast[0] * RANGES.colour_gain[0], RANGES.contrast[1] * RANGES.colour_gain[1]
    assert params.gain.min() >= lo and params.gain.max() <= hi
    assert params.offset.abs().max() <= RANGES.brightness + RANGES.colour_offset


def test_corruption_draws_do_not_depend_on_the_pixels():
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    p1 = sample_corruption(4, RANGES, g1)
    _, p2 = corrupt(images(4, seed=9), RANGES, g2)
    assert torch.equal(p1.gain, p2.gain) and torch.equal(p1.offset, p2.offset)


def test_identity_ranges_leave_images_unchanged():
    none = CorruptionRanges(contrast=(1.0, 1.0), colour_gain=(1.0, 1.0), brightness=0.0,
                            colour_offset=0.0)  # fmt: skip
    assert none.is_identity()
    x = images()
    assert torch.allclose(corrupt(x, none, torch.Generator().manual_seed(0))[0], x)


def test_noise_is_drawn_after_the_parameters_and_only_when_asked():
    x = images()
    plain, p0 = corrupt(x, RANGES, torch.Generator().manual_seed(2))
    noisy_ranges = CorruptionRanges(noise=0.05)
    noisy, p1 = corrupt(x, noisy_ranges, torch.Generator().manual_seed(2))
    again, _ = corrupt(x, noisy_ranges, torch.Generator().manual_seed(2))
    # The same per-image parameters as without noise (the restoration draws are unchanged) ...
    assert torch.equal(p0.gain, p1.gain) and torch.equal(p0.offset, p1.offset)
    assert torch.equal(noisy, again)  # ... and the noise is a function of the generator state
    assert (noisy - plain).std().item() == pytest.approx(0.05, rel=0.05)
    assert not noisy_ranges.is_identity()


def test_style_target_is_a_deterministic_map_of_the_clean_image_into_0_1():
    x = images(8)
    t = stylize(x)
    assert t.shape == x.shape and torch.equal(t, stylize(x.clone()))
    assert t.min() > 0 and t.max() < 1
    assert torch.allclose(stylize(x[2:3]), t[2:3], atol=1e-6)  # per image, not per batch
    assert (t[0] - t[1]).abs().mean() > 0.05  # different content, different targets
    # Not a pointwise map of each channel: the colours mix and the sharpening needs neighbours.
    z = standardize(x)
    assert not torch.allclose(torch.sigmoid(z), t, atol=0.05)


def test_style_target_ignores_the_images_own_statistics():
    """Two inputs that differ only by a per-image, per-channel gain and offset (the corruption's
    kind, so everything the input's global statistics say) have the same target: those
    statistics carry no information about it."""
    x = images(16)
    shift = sample_corruption(16, RANGES, torch.Generator().manual_seed(7))
    shifted = shift.apply(x)
    assert (shifted - x).abs().mean() > 0.05  # really different inputs ...
    assert torch.allclose(stylize(shifted), stylize(x), atol=5e-3)  # ... the same target
    # A stronger one-channel change as well, gain 3 on red with a negative offset.
    gain = torch.tensor([3.0, 1.0, 1.0]).view(1, 3, 1, 1).expand(16, 3, 1, 1)
    red = Corruption(gain, torch.full((16, 3, 1, 1), -0.3)).apply(x)
    assert torch.allclose(stylize(red), stylize(x), atol=5e-3)
    # The restoration target (the clean image itself) does change with them.
    assert not torch.allclose(shifted, x, atol=5e-3)


def test_psnr_and_ssim_of_known_images():
    x = images(2)
    assert torch.all(psnr_per_image(x, x) >= 99)  # MSE floor 1e-10 -> 100 dB
    assert torch.allclose(psnr_per_image(x * 0 + 0.5, x * 0 + 0.6), torch.tensor([20.0, 20.0]))
    assert torch.allclose(ssim_per_image(x, x), torch.ones(2), atol=1e-5)
    assert torch.all(ssim_per_image(images(2, seed=1), x) < 0.1)


# --- generator -------------------------------------------------------------------------

MODEL = {"name": "generator", "widths": [4, 8, 8], "res_blocks": 1, "skips": False,
         "activation": "relu"}  # fmt: skip


def norm_cfg(name: str, position: str) -> dict:
    return {"name": name, "position": position, **({"num_groups": 2} if name == "group" else {})}


@pytest.mark.parametrize("skips", [False, True], ids=["plain", "skips"])
@pytest.mark.parametrize("position", ["pre", "post"])
@pytest.mark.parametrize("name", NORMS)
def test_generator_maps_images_to_images_with_every_norm(name, position, skips):
    model = {**MODEL, "skips": skips}
    norm = norm_cfg(name, position)
    if position == "post" and name == "instance":  # IN then the linear output conv: no colour
        with pytest.raises(ConfigError, match="mean colour"):
            check_generator(model, norm, batch_size=4)
        return
    check_generator(model, norm, batch_size=4)
    torch.manual_seed(0)
    net = build_generator(model, norm).train()
    x = torch.randn(4, 3, 32, 32)
    out = net(x)
    assert out.shape == x.shape
    assert torch.all(out == 0)  # zero-initialized output conv: every norm starts alike
    out.sum().backward()
    assert net.out.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "cnn"}, "model.name"),
        ({"widths": []}, "model.widths"),
        ({"widths": [4, 8, 8, 8, 8, 8, 8]}, "model.widths"),  # 32 px halved 6 times
        ({"res_blocks": -1}, "model.res_blocks"),
        ({"skips": "yes"}, "model.skips"),
        ({"activation": "swish"}, "model.activation"),
    ],
)
def test_bad_generator_configs_are_refused_naming_the_field(change, field):
    with pytest.raises(ConfigError) as info:
        check_generator({**MODEL, **change}, norm_cfg("batch", "pre"), batch_size=4)
    assert info.value.field == field


# --- the task --------------------------------------------------------------------------


def task_config(
    data_dir: Path, extra: list[str], *overrides: str, experiment: str = "bn_generation"
) -> dict:
    return resolve_config(
        compose(
            f"experiment={experiment}",
            "profile=smoke",
            f"paths.data_dir={data_dir}",
            "runtime.progress=false",
            "tracking.mode=disabled",
            *extra,
            *overrides,
        )
    )


def test_task_trains_at_smoke_scale_and_writes_summary_and_sample_grid(
    hydra_ctx, cifar_data, tmp_path
):
    cfg = task_config(*cifar_data, "norm=batch", "train.batch_size=8", "train.epochs=2")
    logged: list[dict] = []
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    task = get_task("image_to_image")
    summary = task.train(cfg, logged.append, 0, checkpoint=run_dir / "checkpoint.pt")
    assert [m["epoch"] for m in logged] == [1, 2]
    for key in ("test_psnr", "val_psnr", "test_ssim", "test_psnr_batch_stats", "input_psnr",
                "wall_time_s", "images_per_s", "train_loss"):  # fmt: skip
        assert np.isfinite(summary[key]), key
    assert summary["epochs"] == 2
    assert summary["sample_grid"] == SAMPLE_GRID
    grid = (run_dir / SAMPLE_GRID).read_bytes()
    assert grid.startswith(b"\x89PNG")
    json.dumps(summary)  # the store writes it as JSON
    # Same config and seed: the same metrics (the test inputs are fixed, training is seeded).
    again = task.train(cfg, lambda m: None, 0)
    assert again["test_psnr"] == summary["test_psnr"]
    assert again["input_psnr"] == summary["input_psnr"]
    assert again["sample_grid"] is None  # no run folder given


class Killed(Exception):
    pass


def test_a_killed_run_resumes_from_its_checkpoint_to_the_same_result(
    hydra_ctx, cifar_data, tmp_path
):
    cfg = task_config(*cifar_data, "norm=group", "train.batch_size=16", "train.epochs=2")
    task = get_task("image_to_image")
    reference = task.train(cfg, lambda m: None, 0)

    def die_in_epoch_2(metrics: dict) -> None:
        if metrics["epoch"] == 2:
            raise Killed  # as if the job were killed while epoch 2 was being logged

    checkpoint = tmp_path / "checkpoint.pt"
    with pytest.raises(Killed):
        task.train(cfg, die_in_epoch_2, 0, checkpoint=checkpoint)
    logged: list[dict] = []
    resumed = task.train(cfg, logged.append, 0, checkpoint=checkpoint)
    assert resumed["resumed_at_epoch"] == 1
    assert [m["epoch"] for m in logged] == [1, 2]
    for key in ("train_loss", "val_psnr", "test_psnr", "test_ssim"):
        assert resumed[key] == reference[key], key


def test_style_task_trains_against_the_stylized_target(hydra_ctx, cifar_data, tmp_path):
    cfg = task_config(
        *cifar_data, "norm=instance", "train.batch_size=8", experiment="bn_generation_style"
    )
    assert cfg["train"]["target"] == "style" and cfg["train"]["corruption"]["noise"] > 0
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    summary = get_task("image_to_image").train(cfg, lambda m: None, 0, checkpoint=run_dir / "c.pt")
    for key in ("test_psnr", "val_psnr", "test_ssim", "input_psnr", "train_loss"):
        assert np.isfinite(summary[key]), key
    assert (run_dir / SAMPLE_GRID).read_bytes().startswith(b"\x89PNG")
    # input_psnr is the style applied to the noisy input: the noise costs the style a lot, and
    # not the restoration's input PSNR (a different target).
    restoration = task_config(*cifar_data, "norm=instance", "train.batch_size=8")
    plain = get_task("image_to_image").train(restoration, lambda m: None, 0)
    assert summary["input_psnr"] != pytest.approx(plain["input_psnr"], abs=0.1)


def test_in_runs_have_no_batch_statistics_metric(hydra_ctx, cifar_data):
    cfg = task_config(*cifar_data, "norm=instance", "train.batch_size=16")
    summary = get_task("image_to_image").train(cfg, lambda m: None, 0)
    assert "test_psnr_batch_stats" not in summary
    assert np.isfinite(summary["test_psnr"])


# --- config ----------------------------------------------------------------------------


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize(("profile", "seeds"), [("smoke", 1), ("quick", 3), ("paper", 5)])
def test_experiment_composes_with_its_grid(hydra_ctx, experiment, profile, seeds):
    cfg = compose(f"experiment={experiment}", f"profile={profile}")
    assert (cfg.claim.id, cfg.claim.name) == ("C6", experiment)
    params = cfg.hydra.sweeper.params
    assert set(str(params.norm).split(",")) == set(NORMS)
    sizes = [int(b) for b in str(params["train.batch_size"]).split(",")]
    assert len(sizes) == 2 and min(sizes) <= 4 and max(sizes) >= 32
    assert len(str(params.seed).split(",")) == seeds
    jobs = sweep_overrides(cfg)
    assert len(jobs) == len(NORMS) * len(sizes) * seeds
    config = resolve_config(compose(*jobs[0]))
    assert config["train"]["task"] == "image_to_image"
    assert config["model"]["name"] == "generator"
    assert config["profile"] == profile


@pytest.mark.parametrize("profile", ["quick", "paper"])
def test_style_experiment_differs_from_restoration_only_in_target_and_noise(hydra_ctx, profile):
    """Same data, model, optimizer, scale and grid (so the same cost, comparable results)."""
    runs = {}
    for experiment in EXPERIMENTS:
        cfg = compose(f"experiment={experiment}", f"profile={profile}")
        # Composed as the launcher composes them (normexp.compose: once per set of group choices).
        runs[experiment] = [resolve_config(job) for job in compose_jobs(cfg)]
    restoration, style = runs["bn_generation"], runs["bn_generation_style"]
    assert len(restoration) == len(style)
    for r, s in zip(restoration, style, strict=True):
        s = copy.deepcopy(s)
        assert s["train"].pop("target") == "style"
        assert s["train"]["corruption"].pop("noise") == 0.05
        assert s.pop("claim") == {"id": "C6", "name": "bn_generation_style"}
        assert s == {k: v for k, v in r.items() if k != "claim"}


def test_the_restoration_config_has_none_of_the_style_tasks_fields(hydra_ctx):
    """The style task's new fields are absent from the restoration config, so a restoration run's
    key is what it was before the style task existed (committed keys: test_protocol's
    test_committed_runs_keep_their_keys)."""
    cfg = compose("experiment=bn_generation", "profile=quick")
    restoration = resolve_config(compose(*sweep_overrides(cfg)[0]))
    assert "target" not in restoration["train"]
    assert "noise" not in restoration["train"]["corruption"]


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["model=cnn"], "model.name"),
        (["norm=group", "norm.num_groups=3"], "norm.num_groups"),
        (["norm=batch", "train.batch_size=1", "model.widths=[4,8,8,8,8,8]"], "train.batch_size"),
        (["norm=instance", "norm.position=post"], "norm.position"),
        (["train.loss=huber"], "train.loss"),
        (["train.corruption.contrast=[2.0,0.5]"], "train.corruption.contrast"),
        (["train.corruption.brightness=-1"], "train.corruption.brightness"),
        (["+train.target=sketch"], "train.target"),
        (["+train.corruption.noise=-0.1"], "train.corruption.noise"),
        (["data.n_test=0"], "data.n_test"),
        (["data.n_train=16", "train.batch_size=32"], "data.n_train"),
    ],
)
def test_bad_values_are_refused_naming_the_field(hydra_ctx, overrides, field):
    with pytest.raises(ConfigError) as info:
        resolve_config(compose("experiment=bn_generation", "profile=smoke", *overrides))
    assert info.value.field == field


# --- analysis --------------------------------------------------------------------------
# C6 is decided by the Gram-loss stylization (bn_generation_gram, tests/unit/test_stylization.py
# has its rule); the two PSNR tasks here are reported beside it.


def synthetic_table(in_minus_bn: float, seeds: int = 3) -> pd.DataFrame:
    """Per-seed IN − BN differences of in_minus_bn ± 0.1 dB (95% CI half-width 0.25 dB)."""
    rows = []
    base = {"none": 19.0, "batch": 21.0, "layer": 20.5, "group": 20.8}
    base["instance"] = base["batch"] + in_minus_bn
    jitter = [0.1, -0.1, 0.0]
    for norm, psnr in base.items():
        for batch in (4, 64):
            for seed in range(seeds):
                rows.append(
                    {
                        "norm.name": norm,
                        "train.batch_size": batch,
                        "seed": seed,
                        "status": "ok",
                        "test_psnr": psnr
                        + 0.2 * seed
                        + (jitter[seed] if norm == "instance" else 0),
                        "input_psnr": 18.0,
                        "profile": "smoke",
                        "n_train": 256,
                        "run_key": f"{norm}{batch}{seed}",
                        "sample_grid": "samples.png",
                    }
                )
    return pd.DataFrame(rows)


def reported(v: dict) -> dict[str, dict]:
    return {r["experiment"]: r for r in v["details"]["reported"]}


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize(
    ("gap", "expected"),
    [(1.0, "supported"), (-1.5, "contradicted"), (0.1, "inconclusive"), (0.0, "inconclusive")],
)
def test_each_reported_task_is_called_by_its_psnr_rule(experiment, gap, expected):
    v = bn_generation.verdict({experiment: synthetic_table(gap)})
    task = reported(v)[experiment]
    assert task["verdict"] == expected, task["effect"]
    assert task["estimate"] == pytest.approx(gap)
    assert task["details"]["normal_batch"] == 64 and task["details"]["small_batch"] == 4
    if gap:
        assert task["details"]["winner_by_batch"][64] == ("instance" if gap > 0 else "batch")
    assert task["details"]["bn_minus_none_db"][64]["mean"] == pytest.approx(2.0)
    other = reported(v)[next(e for e in EXPERIMENTS if e != experiment)]
    assert other["verdict"] == "not run yet"
    # Reported, never deciding: without the Gram task's runs C6 is not run yet, the row shown.
    assert v["verdict"] == "not run yet" and "sub" not in v
    assert v["details"]["decided_by"] == "bn_generation_gram"
    assert "Reported (not deciding)" in v["effect"] and task["effect"] in v["effect"]
    assert v["claim"] == "C6" and "PSNR_IN" in v["rule"] and "L_IN" in v["rule"]
    json.dumps(v, allow_nan=False)


def test_bn_beating_in_at_the_small_batch_only_contradicts_a_reported_task():
    df = synthetic_table(1.0)
    small_in = (df["norm.name"] == "instance") & (df["train.batch_size"] == 4)
    df.loc[small_in, "test_psnr"] -= 3.0
    v = bn_generation.verdict({"bn_generation_style": df})
    assert reported(v)["bn_generation_style"]["verdict"] == "contradicted"


def test_empty_tables_mean_not_run_yet(tmp_path):
    v = bn_generation.verdict({})
    assert v["verdict"] == "not run yet"
    assert "Verdict rule" not in v["rule"] and "PSNR_IN" in v["rule"]
    assert "Sample grids" not in v["rule"]
    out = bn_generation.draw({}, tmp_path / "figures" / "bn_generation.png")
    assert out.exists()
    assert bn_generation.ANALYSIS.reads == ("bn_generation_gram", *EXPERIMENTS)


def test_figure_shows_sample_grids_found_in_the_run_folders(tmp_path):
    from PIL import Image

    results = tmp_path / "results"
    tables = {}
    for experiment, gap in zip(EXPERIMENTS, (-1.0, 1.0), strict=True):
        df = synthetic_table(gap)
        df["run_key"] = experiment + df["run_key"]
        tables[experiment] = df
        for key in df["run_key"]:
            folder = results / "runs" / experiment / key
            folder.mkdir(parents=True)
            Image.new("RGB", (274, 104), "gray").save(folder / "samples.png")
        grids = bn_generation.sample_grid_paths(df, results, experiment)
        assert len(grids) == 10  # 5 norms x 2 batch sizes, seed 0 each
        assert all(p.parent.name.endswith("0") for p in grids.values())
        assert all(p.parent.parent.name == experiment for p in grids.values())
    out = bn_generation.draw(tables, results / "figures" / "bn_generation.png", results_dir=results)
    assert out.exists()
    assert bn_generation.sample_grid_paths(tables["bn_generation"], None) == {}
    # One task run, the others not: the figure still draws.
    out = bn_generation.draw({"bn_generation_style": tables["bn_generation_style"]}, out)
    assert out.exists()
