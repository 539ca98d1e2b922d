"""The whole grid: every family × norm × position × batch cell the validity rules allow is
reachable from an experiment file and trains; the report's grid section reads it."""

import copy
import functools

import hydra
import numpy as np
import pandas as pd
import pytest
import torch

from normexp.analysis.report import grid, write_report
from normexp.errors import ConfigError
from normexp.job import run_job
from normexp.models import build_model, check_model
from normexp.sweep import compose_jobs, sweep_overrides
from normexp.validate import resolve_config

BATCHES = (2, 4, 8, 16, 32, 64, 128)
NEW_EXPERIMENTS = ("mlp_small_batch", "norm_position")
# The batch axis (pre position, batch 2…128) of each family, with the norms the issue lists;
# IN is listed for the MLP too, so that its refusal is checked. RMS in the CNN across batch
# sizes is not in any experiment yet (bn_small_batch predates RMSNorm in the suite).
BATCH_AXIS = {
    "cnn": ("none", "batch", "layer", "group", "instance"),
    "mlp": ("none", "batch", "layer", "group", "rms", "instance"),
}
# The position axis (pre and post, at the default batch of 128): every norm with a position.
POSITION_NORMS = ("batch", "layer", "group", "rms")
POSITION_BATCH = 128
GRID_EXPERIMENTS = ("bn_small_batch", "mlp_small_batch", "norm_position")


def compose_sweep(experiment: str, profile: str):
    return hydra.compose(
        "config",
        overrides=[f"experiment={experiment}", f"profile={profile}"],
        return_hydra_config=True,
    )


def reachable_cells(profile: str) -> dict[tuple, dict]:
    """{(model, norm, position, batch): a resolved job config} over the grid experiments' jobs
    (one seed: seeds never change validity). A copy of the module's, composed once a profile."""
    return copy.deepcopy(_reachable_cells(profile))


@functools.cache
def _reachable_cells(profile: str) -> dict[tuple, dict]:
    cells = {}
    for experiment in GRID_EXPERIMENTS:
        config = compose_sweep(experiment, profile)
        every = sweep_overrides(config)
        jobs = sorted({tuple(o for o in j if not o.startswith("seed=")) for j in every})
        for job in compose_jobs(config, [list(j) for j in jobs]):
            c = resolve_config(job)  # validates: a refused cell would raise here
            norm, batch = c["norm"], c["train"]["batch_size"]
            cells[(c["model"]["name"], norm["name"], norm["position"], batch)] = c
    return cells


def wanted_cells() -> set[tuple]:
    batch = {(m, n, "pre", b) for m, norms in BATCH_AXIS.items() for n in norms for b in BATCHES}
    position = {
        (m, n, p, POSITION_BATCH)
        for m in BATCH_AXIS
        for n in POSITION_NORMS
        for p in ("pre", "post")
    }
    return batch | position


# Where the whole grid runs: paper (the scale of record). smoke, quick and standard cut C4's CNN
# batch axis (scale.<profile>.sweep.batch_sizes, a stated cost cut): see below.
@pytest.mark.parametrize("profile", ["paper"])
def test_every_allowed_cell_is_reachable_and_every_other_is_refused(hydra_ctx, profile):
    cells = reachable_cells(profile)
    some = next(iter(cells.values()))
    for model, norm, position, batch in sorted(wanted_cells() - set(cells)):
        # not in any experiment: must be a cell the validity rules refuse, with one line
        config = next(c for c in cells.values() if c["model"]["name"] == model)
        with pytest.raises(ConfigError) as info:
            check_model(config["model"], {"name": norm, "position": position}, batch)
        assert "\n" not in str(info.value), (model, norm, position, batch)
    missing = wanted_cells() - set(cells)
    assert missing == {("mlp", "instance", "pre", b) for b in BATCHES}, missing
    assert some["profile"] == profile


@pytest.mark.parametrize("profile", ["smoke", "quick", "standard"])
def test_a_cheaper_profile_reaches_a_subset_of_the_grid_cut_only_on_the_cnn_batch_axis(
    hydra_ctx, profile
):
    cells, full = set(reachable_cells(profile)), set(reachable_cells("paper"))
    assert cells < full
    declared = compose_sweep("bn_small_batch", profile).scale[profile].sweep.batch_sizes
    kept = {int(b) for b in str(declared).split(",")}
    assert {2, 32, 128} <= kept < set(BATCHES)  # the deciding batch sizes stay
    cut = full - cells
    assert cut == {
        ("cnn", n, "pre", b) for n in BATCH_AXIS["cnn"] for b in set(BATCHES) - kept
    }, cut


def test_instance_norm_on_the_mlp_is_refused_with_its_one_line(hydra_ctx):
    mlp = resolve_config(hydra.compose("config", overrides=["model=mlp", "profile=quick"]))["model"]
    with pytest.raises(ConfigError) as info:
        check_model(mlp, {"name": "instance", "position": "pre"}, 32)
    assert info.value.field == "norm.name"
    assert "'instance' is undefined for dense inputs" in str(info.value)


@pytest.mark.parametrize("profile", ["smoke", "quick", "paper"])
def test_gn_groups_the_mlps_units_into_groups_of_several(hydra_ctx, profile):
    from normexp.norms.layers import default_num_groups

    config = resolve_config(
        hydra.compose(
            "config", overrides=["experiment=mlp_small_batch", f"profile={profile}", "norm=group"]
        )
    )
    hidden = config["model"]["hidden"]
    groups = default_num_groups(hidden)
    assert groups >= 2 and hidden // groups >= 2 and hidden % groups == 0  # not IN, not LN


@pytest.mark.parametrize(
    ("experiment", "overrides"),
    [
        ("mlp_small_batch", ("norm=group", "train.batch_size=2")),
        ("norm_position", ("model=cnn", "norm=rms", "norm.position=post")),
    ],
)
def test_one_job_of_each_new_experiment_trains_at_smoke(smoke_cfg, experiment, overrides):
    cfg = smoke_cfg(f"experiment={experiment}", "tracking.mode=disabled", *overrides)
    summary = run_job(cfg)
    assert summary is not None and summary["status"] == "ok"
    assert 0 <= summary["test_err"] <= 1


@pytest.fixture(scope="module")
def new_quick_cells(hydra_ctx) -> dict:
    """The cells the new experiments train at quick: the MLP's batch axis and the position
    axis (the MLP's pre cells at 128 are in both)."""
    cells = reachable_cells("quick")
    return {k: c for k, c in cells.items() if c["claim"]["name"] in NEW_EXPERIMENTS}


def test_one_quick_size_step_in_every_new_cell(new_quick_cells, one_torch_thread):
    """Each new (model, norm, position, batch) cell at quick size: one SGD step on random
    tensors gives a finite loss and moves the weights."""
    torch.manual_seed(0)
    position_axis = 2 * 2 * len(POSITION_NORMS)  # the MLP's pre cells at 128: counted once
    assert len(new_quick_cells) == 5 * len(BATCHES) + position_axis - len(POSITION_NORMS)
    for (model, norm, position, batch), c in sorted(new_quick_cells.items()):
        net = build_model(c["model"], c["norm"])
        opt = torch.optim.SGD(net.parameters(), lr=0.01)
        x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))
        before = [p.detach().clone() for p in net.parameters()]
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
        assert torch.isfinite(loss), (model, norm, position, batch)
        assert any(not torch.equal(a, p) for a, p in zip(before, net.parameters(), strict=True))


# --- the report's grid section ------------------------------------------------------------


def test_the_grid_section_says_not_run_yet_on_an_empty_store(tmp_path):
    text = grid.markdown({})
    rows = [line for line in text if line.startswith("| C")]
    assert rows and all("not run yet" in r or grid.NA in r for r in rows)
    for family in grid.FAMILIES:
        assert any(line.startswith(f"| {family.name} |") and "not run yet" in line for line in text)
    figures = grid.draw({}, tmp_path / "figures")
    assert [p.name for p in figures] == ["grid_batch.png", "grid_position.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in figures)
    extras = [{"section": grid.SECTION, "figures": figures, "text": text}]
    md, page = write_report(tmp_path, [], {}, "disabled", (), extras)
    report = md.read_text()
    assert f"## {grid.TITLE}" in report and "![grid_batch](figures/grid_batch.png)" in report
    html = page.read_text()
    assert 'id="grid"' in html and 'src="figures/grid_batch.png"' in html and "not run yet" in html
    assert grid.families_line({}, "C4").startswith("CNN: not run yet; MLP: not run yet")


def batch_table(model: str, errs: dict, seeds=range(5)) -> pd.DataFrame:
    """A batch grid's collected table: errs[(norm, batch)] = test error, plus seeded noise."""
    rng = np.random.default_rng(0)
    rows = [
        {
            "status": "ok",
            "seed": s,
            "profile": "quick",
            "model.name": model,
            "norm.name": norm,
            "norm.position": "pre",
            "train.batch_size": b,
            "test_err": err + 0.005 * rng.standard_normal(),
        }
        for (norm, b), err in errs.items()
        for s in seeds
    ]
    return pd.DataFrame(rows)


def errors(bn_degrades: bool) -> dict:
    out = {}
    for b in BATCHES:
        small = b <= 4
        out |= {("batch", b): 0.60 if small and bn_degrades else 0.40, ("group", b): 0.45}
        out |= {("layer", b): 0.50, ("none", b): 0.65, ("rms", b): 0.52}
    return out


def position_table(deltas: dict) -> pd.DataFrame:
    """norm_position: deltas[(model, norm)] = post − pre test accuracy."""
    rng = np.random.default_rng(1)
    rows = []
    for (model, norm), delta in deltas.items():
        for position, acc in (("pre", 0.6), ("post", 0.6 + delta)):
            for s in range(5):
                rows.append(
                    {
                        "status": "ok",
                        "seed": s,
                        "profile": "quick",
                        "model.name": model,
                        "norm.name": norm,
                        "norm.position": position,
                        "train.batch_size": 128,
                        "test_acc": acc + 0.003 * rng.standard_normal(),
                    }
                )
    return pd.DataFrame(rows)


def test_the_grid_section_shows_which_families_support_each_claim(tmp_path):
    tables = {
        "bn_small_batch": batch_table("cnn", errors(bn_degrades=True)),
        "mlp_small_batch": batch_table("mlp", errors(bn_degrades=False)),
        "norm_position": position_table(
            {("cnn", "batch"): 0.03, ("cnn", "layer"): -0.03, ("mlp", "batch"): 0.0}
        ),
    }
    rows = {(r["claim"], r["label"][:4]): r for r in grid.support_table(tables)}
    c4a = rows[("C4", "C4a:")]
    assert c4a["CNN"].startswith("supported") and c4a["MLP"].startswith("inconclusive")
    assert c4a["LSTM"] == "not run yet"
    c3_bn, c3_ln = rows[("C3", "BN a")], rows[("C3", "LN a")]
    assert c3_bn["CNN"].startswith("supported") and c3_bn["MLP"].startswith("inconclusive")
    assert c3_ln["CNN"].startswith("contradicted") and c3_ln["MLP"].startswith("not run yet")
    assert c3_bn["LSTM"] == grid.NA
    c8 = rows[("C8", "LN i")]
    assert c8["CNN"].startswith("supported") and c8["MLP"].startswith("supported")
    assert rows[("C7", "in a")]["CNN"] == grid.NA
    line = grid.families_line(tables, "C4")
    assert line.startswith("CNN: C4a supported, C4b supported; MLP: C4a inconclusive")
    assert "LSTM: not run yet" in line
    figures = grid.draw(tables, tmp_path)
    assert all(p.exists() for p in figures)
