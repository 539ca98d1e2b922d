"""The profiles' scales and budgets: standard sits between quick and paper, every experiment
composes at it, its LR grid is wide enough, and the projected cost of each profile's whole sweep
(normexp.bench.cost, frozen time model: arithmetic, not timing) fits its budget."""

import functools

import hydra
import pandas as pd
import pytest
from omegaconf import OmegaConf

from normexp import gpu_bundle
from normexp.bench.cost import experiment_jobs, job_seconds, profile_cost
from normexp.catalogue import experiment_names, gpu_experiments, makefile_list, sweep_experiments
from normexp.errors import ConfigError
from normexp.protocol.plan import JobRecords
from normexp.schema import PROFILES
from normexp.tracking.store import run_key

# `make test` runs tests on every core (pytest-xdist, --dist loadgroup); a group stays on one
# worker, so the fixture its tests share is built once.
pytestmark = pytest.mark.xdist_group("test_profiles_scale")

STANDARD_BUDGET_MIN = 12 * 60  # `make run-sweep` and `make run-grid` together (DESIGN.md)


@functools.cache
def whole_sweep_cost(profile: str) -> pd.DataFrame:
    """profile_cost(profile), priced once for this module (tens of seconds each); read only."""
    return profile_cost(profile)


def master(profile: str, experiment: str | None = None):
    overrides = [f"profile={profile}"] + ([f"experiment={experiment}"] if experiment else [])
    return hydra.compose("config", overrides=overrides, return_hydra_config=True)


def test_standard_is_a_profile_between_quick_and_paper(hydra_ctx):
    assert PROFILES == ("smoke", "quick", "standard", "paper")
    scale = OmegaConf.to_container(master("standard").scale, resolve=True)
    quick, standard, paper = scale["quick"], scale["standard"], scale["paper"]
    assert quick["n_train"] < standard["n_train"] <= 50_000 - paper["n_val"]  # paper: all
    assert standard["n_train"] >= 10_000
    assert quick["epochs"] < standard["epochs"] < paper["epochs"]
    assert quick["n_train"] * quick["epochs"] < standard["n_train"] * standard["epochs"]


@pytest.mark.parametrize(("profile", "count"), [("quick", 3), ("standard", 5), ("paper", 5)])
def test_seeds_of_record_per_profile(hydra_ctx, profile, count):
    # quick is the fast check (3 seeds, within its hour); the profiles of record keep 5.
    seeds = str(master(profile).hydra.sweeper.params.seed).split(",")
    assert len(seeds) == count and len(set(seeds)) == count


def test_standard_lr_grid_has_four_values_over_8x_and_separate_selection_seeds(hydra_ctx):
    protocol = OmegaConf.to_container(master("standard").protocol.profiles, resolve=True)
    grid = protocol["standard"]["lr_grid"]
    assert len(grid) >= 4 and max(grid) / min(grid) >= 8 - 1e-9
    assert len(protocol["standard"]["selection_seeds"]) >= 1
    assert not set(protocol["standard"]["selection_seeds"]) & set(range(5))  # not of record
    assert len(protocol["quick"]["lr_grid"]) == 3  # quick: the coarser grid


@pytest.mark.parametrize("experiment", gpu_experiments())
def test_every_experiment_composes_and_validates_at_standard(hydra_ctx, experiment):
    # The GPU bundle's experiments here: the cost test below resolves (so validates) every job
    # of every other experiment at standard, those of `make run-sweep` and of `make run-grid`.
    jobs = experiment_jobs(master("standard", experiment))  # resolve_config: validated
    assert jobs and all(job["profile"] == "standard" for _, job in jobs)
    assert all(job_seconds(job) > 0 for _, job in jobs)


def test_resnet_runs_the_deciding_cells_at_standard_only(hydra_ctx):
    def cells(profile, experiment):
        jobs = experiment_jobs(master(profile, experiment))
        return {
            (j["model"]["name"], j["norm"]["name"], j["train"]["batch_size"])
            for stage, j in jobs
            if stage == "record"
        }

    resnet = cells("standard", "bn_small_batch_resnet")
    for norm, batch in [("batch", 2), ("group", 2), ("batch", 32), ("group", 32), ("layer", 32)]:
        assert ("resnet", norm, batch) in resnet  # C4, C5, C8
    assert ("resnet", "none", 32) in resnet  # the baseline
    assert {m for m, _, _ in cells("standard", "not_ics")} == {"cnn", "resnet"}  # C9
    assert {m for m, _, _ in cells("quick", "not_ics")} == {"cnn"}  # quick unchanged


def test_standard_rows_never_enter_a_run_key(hydra_ctx):
    # The standard rows of the per-profile tables were added after quick runs were stored: a
    # quick run's key must not depend on them (nor on the per-profile sweep values).
    job = experiment_jobs(master("quick", "bn_small_batch"))[-1][1]
    changed = {
        **job,
        "scale": {**job["scale"], "standard": {"n_train": 1}},
        "protocol": {**job["protocol"], "profiles": {**job["protocol"]["profiles"], "standard": 1}},
    }
    changed["scale"]["quick"] = {**job["scale"]["quick"], "sweep": {"batch_sizes": "2"}}
    assert run_key(changed) == run_key(job)
    assert run_key({**job, "seed": job["seed"] + 1}) != run_key(job)


def test_profile_cost_prices_what_run_sweep_runs_and_the_grid_apart():
    # The frozen time model (normexp/bench/cost.py) on 2 workers: pure arithmetic over the jobs.
    # `make run-sweep` leaves out the grid (`make run-grid`) and the GPU bundle's experiments.
    # Standard only: each profile costs tens of seconds of composing, and quick's projection
    # (about 78 min, over its hour) is printed by `python -m normexp.bench.cost --profile quick`.
    standard = whole_sweep_cost("standard")
    assert set(standard.index) == set(sweep_experiments())
    left_out = set(makefile_list("GRID_EXPERIMENTS")) | set(gpu_experiments())
    assert left_out and set(sweep_experiments()) == set(experiment_names()) - left_out
    assert all(name.startswith("gpu_") for name in gpu_experiments())
    assert gpu_experiments() == sorted(e for part in gpu_bundle.PARTS.values() for e in part)
    assert standard.loc["bn_small_batch", "select"] > 0  # the LR selection runs are counted
    assert (standard["run_min"] > 0).all()  # every experiment is priced, the LSTM ones included
    grid = profile_cost("smoke", experiments=makefile_list("GRID_EXPERIMENTS"))  # one seed
    assert set(grid.index) == set(makefile_list("GRID_EXPERIMENTS")) and grid["record"].sum() > 0
    assert {"mlp_small_batch", "norm_position", "rnn_small_batch"} <= set(grid.index)


def test_standard_sweep_and_grid_fit_twelve_hours_with_their_ladders():
    # With the ladders, the LR selected at every cell's own batch size, C7 under the protocol and
    # the batch-2 cells checked, GN's grouping decided first (gn_grouping), C4's extras at
    # bn_small_batch's scale and C6's Gram-loss stylization, priced as the suite runs (packed
    # small-batch groups, the test set once per run): docs/profiles.md has the numbers.
    grid = profile_cost("standard", experiments=makefile_list("GRID_EXPERIMENTS"))
    sweep = whole_sweep_cost("standard")
    assert sweep["ladder"].sum() > 0  # priced with its ladders
    assert sweep["wall_min"].sum() + grid["wall_min"].sum() <= STANDARD_BUDGET_MIN


def test_a_job_patched_from_its_cell_is_the_job_composed(hydra_ctx):
    # JobRecords composes one job per cell and patches the seed and LR multiplier in: each
    # patched config must be the one composing gives (a fresh JobRecords per job), key included.
    master_config = master("quick", "bn_small_batch")
    records = JobRecords(master_config, machine=False)
    cell = ("norm=group", "train.batch_size=8", "protocol.stage=select")
    jobs = [(*cell, "optim.lr_mult=0.5", "seed=100"), (*cell, "optim.lr_mult=2", "seed=101"),
            (*cell, "optim.lr_mult=1.0", "seed=100")]  # fmt: skip
    for job in jobs:
        config, record = records(job)
        composed, composed_record = JobRecords(master_config, machine=False)(job)
        assert config == composed and record.key == composed_record.key
    assert records(jobs[1])[0]["optim"]["lr_mult"] == 2 and records(jobs[1])[0]["seed"] == 101
    assert len(records.cells) == 1  # composed once
    with pytest.raises(ConfigError, match=r"^seed: "):
        records((*cell, "optim.lr_mult=0.5", "seed=-1"))
