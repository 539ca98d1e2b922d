"""The language-model task: configs of the rnn_norm, rnn_small_batch and rnn_words experiments,
the training loop on tiny PTB files in the real format (and on the real data when configured),
metrics (bits per character, perplexity), the step budget, divergence, resume."""

import math
from pathlib import Path

import hydra
import pytest
import torch
from omegaconf import DictConfig

from normexp.data import ptb
from normexp.errors import ConfigError
from normexp.models.lstm_cells import CELLS
from normexp.sweep import compose_jobs, sweep_overrides
from normexp.tracking.store import run_key
from normexp.train import Diverged
from normexp.train import language_model as lm
from normexp.validate import resolve_config
from tests.helpers import REPO, real_ptb

pytestmark = pytest.mark.usefixtures("results_in_tmp")


NEW_EXPERIMENTS = ("rnn_small_batch", "rnn_words")


def config(*overrides: str, experiment: str = "rnn_norm") -> dict:
    cfg = hydra.compose(
        "config",
        overrides=[
            f"experiment={experiment}",
            "profile=smoke",
            "runtime.progress=false",
            *overrides,
        ],
        return_hydra_config=True,
    )
    return resolve_config(cfg)


def master(experiment: str, profile: str) -> DictConfig:
    return hydra.compose(
        "config",
        overrides=[f"experiment={experiment}", f"profile={profile}"],
        return_hydra_config=True,
    )


def jobs(experiment: str, profile: str, seeds: tuple[int, ...] | None = None) -> list[list[str]]:
    """The overrides of an experiment's sweep jobs at ``profile`` (of ``seeds`` only, if given)."""
    every = sweep_overrides(master(experiment, profile))
    if seeds is None:
        return every
    return [job for job in every if {f"seed={s}" for s in seeds} & set(job)]


def job_configs(experiment: str, profile: str, seeds: tuple[int, ...]) -> list[dict]:
    """The resolved configs of those jobs, composed as the launcher composes them."""
    return [
        resolve_config(job)
        for job in compose_jobs(master(experiment, profile), jobs(experiment, profile, seeds))
    ]


def train(cfg: dict, checkpoint: Path | None = None) -> tuple[dict, list[dict]]:
    logged: list[dict] = []
    summary = lm.train_language_model(cfg, logged.append, checkpoint=checkpoint)
    return summary, logged


# --- configs ----------------------------------------------------------------------------------


def test_the_experiment_sweeps_every_cell_with_three_seeds_at_quick(hydra_ctx):
    cfg = hydra.compose("config", overrides=["experiment=rnn_norm"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert str(params.norm).split(",") == list(CELLS)
    assert len(str(params.seed).split(",")) >= 3
    jobs = sweep_overrides(cfg)
    assert len(jobs) == len(CELLS) * len(str(params.seed).split(","))
    config = resolve_config(cfg)
    assert config["claim"] == {"id": "C7", "name": "rnn_norm"}
    assert config["train"]["task"] == "language_model"
    assert config["data"]["level"] == "char"


def test_paper_profile_is_cooijmans_at_char_level_and_zaremba_at_word_level(hydra_ctx):
    char = config("profile=paper")
    assert (char["model"]["hidden"], char["model"]["layers"]) == (1000, 1)
    assert (char["train"]["batch_size"], char["train"]["seq_len"]) == (64, 100)
    assert (char["optim"]["name"], char["optim"]["lr_per_128"]) == ("adam", 2e-3)
    assert char["data"]["train_tokens"] is None  # all of PTB
    # Zaremba et al. 2014's small model: 2 x 200, unrolled 20 steps, batch 20, SGD at 1, clip 5,
    # 13 epochs, no dropout.
    word = config("profile=paper", experiment="rnn_words")
    assert word["data"]["level"] == "word" and word["data"]["train_tokens"] is None
    assert (word["model"]["hidden"], word["model"]["layers"], word["model"]["emb"]) == (200, 2, 200)
    assert (word["train"]["batch_size"], word["train"]["seq_len"]) == (20, 20)
    assert (word["optim"]["name"], word["optim"]["lr_per_128"]) == ("sgd", 1.0)
    assert word["optim"]["clip_grad_norm"] == 5.0 and word["model"]["dropout"] == 0.0
    assert word["train"]["epochs"] == 13 and word["train"]["steps"] is None


def test_rnn_norm_runs_keep_their_committed_keys(hydra_ctx):
    """The word-level entries and the new experiments leave rnn_norm's config as it was: the
    committed quick runs (seeds 0-2) are still the runs their configs describe, but for the LR
    protocol declared since (their record runs now carry it: a new, declared run)."""
    committed = REPO / "results" / "quick" / "runs" / "rnn_norm"
    if not committed.is_dir():
        pytest.skip("no committed store")
    configs = job_configs("rnn_norm", "quick", (0, 1, 2))
    assert all(c["protocol"]["select_on"] == "valid_bpc" for c in configs)
    before = [{**c, "protocol": {**c["protocol"], "lr_grid": None}} for c in configs]
    keys = {run_key(c) for c in before}
    assert len(keys) == len(CELLS) * 3
    assert keys <= {p.name for p in committed.iterdir()}


@pytest.mark.parametrize("profile", ["smoke", "quick", "paper"])
def test_the_small_batch_grid_has_one_step_budget_at_every_batch_size(hydra_ctx, profile):
    # every cell x 5 batch sizes x the seeds rnn_norm runs (the profile's)
    assert len(jobs("rnn_small_batch", profile)) == 5 * len(jobs("rnn_norm", profile))
    # Seeds never change the budget: one job per cell and batch size keeps this fast.
    configs = job_configs("rnn_small_batch", profile, (0,))
    assert {c["norm"]["name"] for c in configs} == set(CELLS)
    assert sorted({c["train"]["batch_size"] for c in configs}) == [4, 8, 16, 32, 64]
    budgets = {c["train"]["steps"] for c in configs}
    assert len(budgets) == 1 and None not in budgets  # equal steps, not equal epochs
    # Everything but the cell, the batch size and the seed is the same in every run.
    rest = {
        str({k: v for k, v in c.items() if k not in ("norm", "seed", "train")}) for c in configs
    }
    trains = {str({k: v for k, v in c["train"].items() if k != "batch_size"}) for c in configs}
    assert len(rest) == 1 and len(trains) == 1
    assert {(c["data"]["level"], c["claim"]["name"]) for c in configs} == {
        ("char", "rnn_small_batch")
    }
    if profile == "quick":  # the whole split: no batch size reads a token twice
        biggest = max(configs, key=lambda c: c["train"]["batch_size"])
        assert biggest["data"]["train_tokens"] is None
        assert 64 * biggest["train"]["seq_len"] * biggest["train"]["steps"] < 5_000_000


@pytest.mark.parametrize("profile", ["smoke", "quick", "paper"])
def test_the_word_experiment_sweeps_every_cell_at_word_level(hydra_ctx, profile):
    configs = job_configs("rnn_words", profile, (0,))
    assert sorted({c["norm"]["name"] for c in configs}) == sorted(CELLS)
    assert {c["data"]["level"] for c in configs} == {"word"}
    assert {c["optim"]["name"] for c in configs} == {"sgd"}
    assert {c["claim"]["id"] for c in configs} == {"C7"}
    quick = config("profile=quick", experiment="rnn_words")
    smoke = config("profile=smoke", experiment="rnn_words")
    assert (quick["model"]["layers"], quick["model"]["hidden"]) == (1, 128)
    assert quick["train"]["steps"] == 600 and smoke["train"]["steps"] is None
    assert smoke["model"]["hidden"] < quick["model"]["hidden"]


def test_profiles_change_the_scale_only(hydra_ctx):
    smoke, quick, paper = (config(f"profile={p}") for p in ("smoke", "quick", "paper"))
    for group in ("optim", "norm", "claim"):
        assert smoke[group] == quick[group] == paper[group], group
    assert smoke["model"]["hidden"] < quick["model"]["hidden"] < paper["model"]["hidden"]
    assert smoke["train"]["epochs"] < quick["train"]["epochs"] < paper["train"]["epochs"]
    assert smoke["data"]["train_tokens"] < quick["data"]["train_tokens"]


@pytest.mark.parametrize(
    ("overrides", "field", "match"),
    [
        (["norm=instance"], "norm.name", "one neuron"),
        (["norm=group"], "norm.name", "allowed: none, layer, batch_per_step, batch_shared, rms"),
        (["data.valid_tokens=10"], "data.valid_tokens", ">= 100"),
        # Checked before the scale entries it selects are read (normexp/schema.py KEY_FIELDS).
        (["data.level=byte"], "data.level", "allowed: char, word"),
        (["train.long_eval_factor=0"], "train.long_eval_factor", ">= 1"),
        (["optim.clip_grad_norm=0"], "optim.clip_grad_norm", "> 0"),
        (["norm=batch_per_step", "train.batch_size=1"], "train.batch_size", "batch_size >= 2"),
        (["model.tie_weights=true"], "model.tie_weights", "equals"),
    ],
)
def test_bad_values_are_refused_naming_the_field(hydra_ctx, overrides, field, match):
    with pytest.raises(ConfigError, match=match) as info:
        config(*overrides)
    assert info.value.field == field
    assert "\n" not in str(info.value)


# --- training on tiny PTB files -----------------------------------------------------------------

SUMMARY_KEYS = {
    "test_bpc",
    "test_bpc_long",
    "valid_bpc",
    "valid_bpc_long",
    "train_bpc",
    "tokens_per_s",
    "wall_time_s",
    "epochs",
    "best_valid_bpc",
    "n_params",
}


@pytest.mark.parametrize("cell", CELLS)
def test_every_cell_trains_and_reports_bits_per_character(hydra_ctx, fake_ptb, cell):
    cfg = config(f"norm={cell}", f"paths.data_dir={fake_ptb}")
    summary, logged = train(cfg)
    assert set(summary) >= SUMMARY_KEYS
    assert [m["epoch"] for m in logged] == [1, 2] and summary["epochs"] == 2
    for m in logged:  # validation every epoch; the test split once, in the summary
        assert "valid_bpc_long" in m and not [k for k in m if k.startswith("test_")], m
    vocab = summary["vocab_size"]
    for key in ("test_bpc", "test_bpc_long", "valid_bpc"):
        assert 0 < summary[key] < math.log2(vocab) + 0.5, (key, summary[key])
    assert summary["tokens_per_s"] > 0 and summary["long_eval_len"] == 2 * summary["seq_len"]
    if cell != "batch_per_step":  # nothing depends on the position in the window
        assert summary["test_bpc_long"] == pytest.approx(summary["test_bpc"], abs=1e-5)


def test_word_level_reports_perplexity(hydra_ctx, fake_ptb):
    cfg = config("data.level=word", "optim=sgd_lm", "norm=layer", f"paths.data_dir={fake_ptb}")
    summary, _ = train(cfg)
    assert {"test_ppl", "test_ppl_long", "valid_ppl", "train_ppl"} <= set(summary)
    assert "test_bpc" not in summary
    assert 1 < summary["test_ppl"] < 2 * summary["vocab_size"]
    # Perplexity is exp of the mean negative log-likelihood per word.
    assert summary["test_ppl"] == pytest.approx(math.exp(summary["test_loss"]))
    assert summary["test_ppl_long"] == pytest.approx(math.exp(summary["test_loss_long"]))


def test_perplexity_and_bits_from_nats():
    assert lm.from_nats(math.log(10_000), "word") == pytest.approx(10_000)  # uniform guess
    assert lm.from_nats(math.log(50), "char") == pytest.approx(math.log2(50))
    assert lm.from_nats(1e6, "word") < math.inf  # a diverging model still gives a number
    assert lm.metric_name("word") == "ppl" and lm.metric_name("char") == "bpc"


@pytest.mark.parametrize(
    ("experiment", "overrides", "unit"),
    [
        ("rnn_small_batch", ["norm=batch_per_step", "train.batch_size=4"], "bpc"),
        ("rnn_small_batch", ["norm=layer", "train.batch_size=64"], "bpc"),
        *(("rnn_words", [f"norm={cell}"], "ppl") for cell in CELLS),
    ],
)
def test_a_job_of_each_new_experiment_trains_at_smoke(
    hydra_ctx, fake_ptb, experiment, overrides, unit
):
    cfg = config(*overrides, f"paths.data_dir={fake_ptb}", experiment=experiment)
    summary, logged = train(cfg)
    for key in (f"test_{unit}", f"test_{unit}_long", f"valid_{unit}"):
        assert math.isfinite(summary[key]), key
    train_cfg = cfg["train"]
    if train_cfg["steps"] is not None:  # the budget in steps: batch x window tokens per step
        assert summary["train_tokens_read"] == (
            train_cfg["steps"] * train_cfg["batch_size"] * train_cfg["seq_len"]
        )
    else:
        assert len(logged) == train_cfg["epochs"]


def test_tokens_read_counts_whole_epochs_then_windows():
    # 3 rows of 11 steps: 10 targets per row and epoch, in windows of 4, 4, 2.
    assert lm.tokens_read((3, 11), 4, 3) == 30  # one epoch
    assert lm.tokens_read((3, 11), 4, 2) == 24
    assert lm.tokens_read((3, 11), 4, 5) == 30 + 24


def test_same_seed_same_metrics(hydra_ctx, fake_ptb):
    cfg = config("norm=batch_per_step", f"paths.data_dir={fake_ptb}", "train.epochs=1")
    first, _ = train(cfg)
    second, _ = train(cfg)
    assert first["test_bpc"] == second["test_bpc"]
    third, _ = train({**cfg, "seed": 1})
    assert third["test_bpc"] != first["test_bpc"]


def test_the_test_split_every_epoch_on_request_changes_no_metric(hydra_ctx, fake_ptb):
    cfg = config("norm=layer", f"paths.data_dir={fake_ptb}")
    once, _ = train(cfg)
    every, logged = train({**cfg, "train": {**cfg["train"], "test_every_epoch": True}})
    assert all("test_bpc" in m and "test_loss_long" in m for m in logged)
    for key in ("test_bpc", "test_bpc_long", "test_loss", "valid_bpc", "train_bpc"):
        assert once[key] == every[key] == logged[-1][key], key


def test_non_finite_loss_raises_diverged(hydra_ctx, fake_ptb, monkeypatch):
    cfg = config("norm=layer", f"paths.data_dir={fake_ptb}")

    def nan_loss(logits, target, *args, **kwargs):  # noqa: ANN001, ANN202
        return (logits.sum() * float("nan")).reshape(())

    monkeypatch.setattr(lm.F, "cross_entropy", nan_loss)
    with pytest.raises(Diverged, match="non-finite training loss in epoch 1"):
        train(cfg)


def test_a_killed_run_resumes_after_its_last_epoch(hydra_ctx, fake_ptb, tmp_path):
    ckpt = tmp_path / "checkpoint.pt"
    cfg = config("norm=layer", f"paths.data_dir={fake_ptb}")
    straight, _ = train(cfg)
    one = {**cfg, "train": {**cfg["train"], "epochs": 1}}
    train(one, checkpoint=ckpt)  # "killed" after epoch 1: the checkpoint holds it
    assert ckpt.exists()
    resumed, logged = train(cfg, checkpoint=ckpt)
    assert resumed["resumed_at_epoch"] == 1 and [m["epoch"] for m in logged] == [1, 2]
    # The LR schedule of a 1-epoch run differs from the 2-epoch run's, so compare shapes only.
    assert resumed["epochs"] == straight["epochs"] == 2


def test_evaluation_reads_every_token_once():
    class Uniform(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.seen = 0

        def forward(self, tokens, state=None):  # noqa: ANN001, ANN202
            self.seen += tokens.numel()
            return torch.zeros(*tokens.shape, 7), state

    model = Uniform()
    data = torch.randint(0, 7, (4, 23))
    nats = lm.evaluate_lm(model, data, 5)
    assert nats == pytest.approx(math.log(7))
    assert model.seen == 4 * 22  # every input position, the last one only as a target


# --- the real data ------------------------------------------------------------------------------


@pytest.mark.real_data
@pytest.mark.skipif(real_ptb() is None, reason="NORMEXP_DATA_DIR does not hold PTB")
def test_smoke_run_on_real_ptb_characters(hydra_ctx):
    ptb.clear_cache()
    summary, _ = train(config("norm=layer", f"paths.data_dir={real_ptb()}"))
    assert summary["vocab_size"] == 50
    assert summary["n_train_tokens"] == 16000
    assert summary["test_bpc"] < math.log2(50)  # learned something beyond uniform guessing
