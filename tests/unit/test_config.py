"""Hydra configs composed with the compose API, validated by resolve_config; one-line errors."""

from pathlib import Path

import hydra
import pytest

import normexp
from normexp.errors import ConfigError, DataError, one_line_errors
from normexp.sweep import SweepCallback, compose_jobs, sweep_overrides
from normexp.validate import resolve_config

CONFIG_DIR = Path(normexp.__file__).parent.parent / "configs"
EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
NORM_CHOICES = ("batch", "group", "instance", "layer", "none")


pytestmark = pytest.mark.usefixtures("results_in_tmp")


def compose(*overrides: str):
    return hydra.compose("config", overrides=list(overrides), return_hydra_config=True)


def resolve(*overrides: str) -> dict:
    return resolve_config(compose(*overrides))


# --- profiles and experiments ----------------------------------------------------------


SCALE_KEYS = ("n_train", "n_val", "n_test", "epochs", "widths", "hidden")


def scale_of(config: dict) -> dict:
    return {
        "n_train": config["data"]["n_train"],
        "n_val": config["data"]["n_val"],
        "n_test": config["data"]["n_test"],
        "epochs": config["train"]["epochs"],
        "val_every": config["train"]["val_every"],
        "widths": config["model"]["widths"],
    }


@pytest.mark.parametrize("profile", ["smoke", "quick", "paper"])
def test_profiles_compose_and_take_their_values_from_the_scale_block(hydra_ctx, profile):
    cfg = compose(f"profile={profile}")
    config = resolve_config(cfg)
    assert config["profile"] == profile
    assert "hydra" not in config
    block = dict(cfg.scale[profile])
    assert set(SCALE_KEYS) <= set(block)
    expected = {
        k: (list(v) if k == "widths" else v)
        for k, v in block.items()
        if k not in ("hidden", "resnet", "sweep")  # sweep: values of experiments' grids
    }
    assert scale_of(config) == expected
    assert resolve(f"profile={profile}", "model=mlp")["model"]["hidden"] == block["hidden"]
    resnet = resolve(f"profile={profile}", "model=resnet")["model"]
    assert {k: resnet[k] for k in ("depth", "width_mult")} == dict(block["resnet"])


def test_smoke_profile_values(hydra_ctx):
    config = resolve("profile=smoke")
    assert scale_of(config) == {
        "n_train": 256,
        "n_val": 128,
        "n_test": 256,
        "epochs": 1,
        "val_every": 1,
        "widths": [4, 8, 8],
    }


def test_profiles_grow_from_smoke_to_paper(hydra_ctx):
    smoke, quick, paper = (scale_of(resolve(f"profile={p}")) for p in ("smoke", "quick", "paper"))
    assert smoke["epochs"] < quick["epochs"] < paper["epochs"]
    assert smoke["n_val"] < quick["n_val"] <= paper["n_val"]
    assert smoke["n_train"] < quick["n_train"]
    assert paper["n_train"] is None and paper["n_test"] is None  # all of the data
    assert sum(smoke["widths"]) < sum(quick["widths"]) < sum(paper["widths"])


def test_default_profile_is_quick(hydra_ctx):
    assert resolve()["profile"] == "quick"


def test_a_profile_changes_scale_only(hydra_ctx):
    smoke, paper = resolve("profile=smoke"), resolve("profile=paper")
    for group in ("optim", "norm", "tracking", "claim"):
        assert smoke[group] == paper[group], group
    assert smoke["train"]["batch_size"] == paper["train"]["batch_size"]


def test_override_wins_over_the_profile(hydra_ctx):
    config = resolve("profile=smoke", "data.n_train=200", "model.widths=[8,8]")
    assert config["data"]["n_train"] == 200
    assert config["data"]["n_val"] == 128  # the rest still from the profile
    assert config["model"]["widths"] == [8, 8]


def test_results_dir_is_made_absolute(hydra_ctx, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NORMEXP_RESULTS_DIR", "rel/results")
    config = resolve("profile=smoke")
    assert config["paths"]["results_dir"] == str(tmp_path.resolve() / "rel" / "results")


def test_without_experiment_the_claim_is_adhoc(hydra_ctx):
    cfg = compose()
    assert cfg.claim.name == "adhoc"
    assert set(cfg.hydra.sweeper.params) == {"seed"}


@pytest.mark.parametrize(("profile", "min_seeds"), [("smoke", 1), ("quick", 3), ("paper", 3)])
def test_experiment_sets_claim_and_grid_and_profile_sets_seeds(hydra_ctx, profile, min_seeds):
    cfg = compose("experiment=bn_small_batch", f"profile={profile}")
    assert cfg.claim.name == "bn_small_batch"
    assert cfg.claim.id == "C4"
    params = cfg.hydra.sweeper.params
    seeds = [int(s) for s in str(params.seed).split(",")]
    assert len(seeds) >= min_seeds and len(set(seeds)) == len(seeds)
    if profile == "smoke":
        assert seeds == [0]
    assert set(str(params.norm).split(",")) == set(NORM_CHOICES)
    # The batch sizes are a per-profile sweep value (scale.<profile>.sweep.batch_sizes): the
    # whole range at paper, quick's and smoke's cost cut to some of them.
    expected = {"quick": [2, 8, 32, 128], "smoke": [2, 16, 32, 64, 128]}.get(
        profile, [2, 4, 8, 16, 32, 64, 128]
    )
    assert [int(b) for b in str(params["train.batch_size"]).split(",")] == expected
    assert resolve_config(cfg)["claim"]["name"] == "bn_small_batch"


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_job_of_every_experiment_resolves(hydra_ctx, experiment):
    """What the sweep callback checks before a sweep starts, at the default (quick) profile."""
    cfg = compose(f"experiment={experiment}")
    # Seeds never change validity: one job per other grid point keeps this fast.
    every = sweep_overrides(cfg)
    jobs = {tuple(o for o in job if not o.startswith("seed=")) for job in every}
    assert len(every) > 1 and jobs  # a grid (of seeds at least)
    # Composed as the callback composes them (normexp.compose: once per set of group choices).
    names = {resolve_config(job)["claim"]["name"] for job in compose_jobs(cfg, sorted(jobs))}
    assert names == {cfg.claim.name}


# --- refusals --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        (["train.batch_size=0"], "train.batch_size"),
        (["train.batch_size=true"], "train.batch_size"),
        (["train.batch_size=2.5"], "train.batch_size"),
        (["train.epochs=-1"], "train.epochs"),
        (["train.eval_batch_size=0"], "train.eval_batch_size"),
        (["data.n_val=0"], "data.n_val"),
        (["data.n_train=0"], "data.n_train"),
        (["data.n_val=???"], "data.n_val"),
        (["optim.lr_per_128=0"], "optim.lr_per_128"),
        (["optim.lr_per_128=-0.1"], "optim.lr_per_128"),
        (["optim.schedule=bogus"], "optim.schedule"),
        (["optim.lr_scaling=bogus"], "optim.lr_scaling"),
        (["optim.warmup_frac=1.0"], "optim.warmup_frac"),
        (["optim.weight_decay=-1"], "optim.weight_decay"),
        (["tracking.mode=bogus"], "tracking.mode"),
        (["runtime.channels_last=maybe"], "runtime.channels_last"),
        (["model.widths=[]"], "model.widths"),
        (["norm=instance", "model=mlp"], "norm.name"),
        (["norm=group", "norm.num_groups=3"], "norm.num_groups"),
        (["norm=group", "norm.num_groups=3", "profile=smoke"], "norm.num_groups"),
        (["model=mlp", "norm=batch", "train.batch_size=1"], "train.batch_size"),
        (["norm.position=middle"], "norm.position"),
        (["+norm.momentum=0.1", "norm=layer"], "norm.momentum"),
        (["train.device=tpu"], "train.device"),
        (["seed=-1"], "seed"),
        (["runtime.threads=0"], "runtime.threads"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else v,
)
def test_bad_values_are_refused_naming_the_field(hydra_ctx, overrides, field):
    with pytest.raises(ConfigError) as info:
        resolve(*overrides)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}:")
    assert "\n" not in str(info.value)


def test_unknown_activation_is_refused_at_config_time(hydra_ctx):
    with pytest.raises(ConfigError) as info:
        resolve("model.activation=swish")
    assert info.value.field == "model.activation"


def test_valid_edge_values_pass(hydra_ctx):
    resolve("model=mlp", "norm=batch", "train.batch_size=2")
    resolve("model=mlp", "norm=layer", "train.batch_size=1")
    resolve("optim.warmup_frac=0")
    resolve("data.n_train=null", "data.n_test=null")
    resolve("norm=group", "norm.num_groups=null", "+norm.channels_per_group=4")


# --- group choices in a sweep ------------------------------------------------------------


def test_unknown_choice_inside_a_sweep_list_is_named_before_any_job(hydra_ctx, capsys):
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    cfg = GlobalHydra.instance().hydra.compose_config(
        "config", ["experiment=nope,bn_small_batch"], run_mode=RunMode.MULTIRUN
    )
    with pytest.raises(SystemExit) as info:
        SweepCallback().on_multirun_start(cfg)
    assert info.value.code == 2
    line = capsys.readouterr().err.strip()
    assert line.startswith("normexp: error: experiment: unknown 'nope'; allowed:"), line
    assert "bn_small_batch" in line and "\n" not in line


# --- one-line errors -------------------------------------------------------------------


@pytest.fixture
def quiet_env(monkeypatch):
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.delenv("NORMEXP_VERBOSE", raising=False)
    return monkeypatch


@pytest.mark.parametrize(
    ("exc", "line"),
    [
        (
            ConfigError("train.batch_size", "0 is not allowed"),
            "normexp: error: train.batch_size: 0 is not allowed",
        ),
        (DataError("no CIFAR-10 under /data"), "normexp: error: no CIFAR-10 under /data"),
    ],
)
def test_user_error_prints_one_line_and_exits_2(quiet_env, capsys, exc, line):
    with pytest.raises(SystemExit) as info, one_line_errors():
        raise exc
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert captured.err == line + "\n"
    assert captured.out == ""


def test_verbose_prints_the_traceback_too(quiet_env, capsys):
    quiet_env.setenv("NORMEXP_VERBOSE", "1")
    with pytest.raises(SystemExit) as info, one_line_errors():
        raise ConfigError("optim.schedule", "unknown 'x'")
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert err.rstrip("\n").splitlines()[-1] == "normexp: error: optim.schedule: unknown 'x'"


def test_verbose_zero_is_not_verbose(quiet_env, capsys):
    quiet_env.setenv("NORMEXP_VERBOSE", "0")
    with pytest.raises(SystemExit), one_line_errors():
        raise ConfigError("seed", "bad")
    assert capsys.readouterr().err == "normexp: error: seed: bad\n"


def test_other_exceptions_pass_through(quiet_env, capsys):
    with pytest.raises(ValueError, match="a bug"), one_line_errors():
        raise ValueError("a bug")
    assert capsys.readouterr().err == ""
    with one_line_errors():
        pass  # no error: nothing printed, no exit
    assert capsys.readouterr().err == ""


# --- near misses --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "field", "suggested"),
    [
        ("norm=grop", "norm", "'group'"),
        ("experiment=bn_smal_batch", "experiment", "'bn_small_batch'"),
        ("train.batch_sise=8", "train.batch_sise", "'train.batch_size'"),
        ("norm.position=pree", "norm.position", "'pre'"),
    ],
)
def test_a_typo_is_answered_with_the_setting_meant(hydra_ctx, override, field, suggested):
    from normexp.validate import composition_errors

    with pytest.raises(ConfigError) as info, composition_errors():
        resolve(override)
    message = str(info.value)
    assert info.value.field == field and f"(did you mean {suggested}?)" in message, message
    assert "+train" not in message  # a typo's fix is the key meant, not a new key


def test_a_value_far_from_every_option_gets_no_suggestion(hydra_ctx):
    from normexp.validate import composition_errors

    with pytest.raises(ConfigError) as info, composition_errors():
        resolve("norm=foo")
    assert "did you mean" not in str(info.value) and "allowed: batch" in str(info.value)
