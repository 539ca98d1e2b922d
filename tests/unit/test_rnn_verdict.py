"""C7 rnn_norm: the verdict on synthetic tables whose answer is known, and the figure."""

import json

import numpy as np
import pandas as pd
import pytest

from normexp.analysis import rnn_norm
from normexp.analysis.claims import load_analyses

CELLS = ("none", "layer", "batch_per_step", "batch_shared", "rms")


def table(bpc: dict[str, float], seeds: int = 3, noise: float = 0.005, **extra) -> pd.DataFrame:
    """One finished run per cell and seed; seed s adds a per-seed offset shared by all cells (as
    pairing by seed expects) plus a little independent noise."""
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(seeds):
        shared = 0.03 * (seed - 1)
        for cell, value in bpc.items():
            v = value + shared + noise * rng.standard_normal()
            rows.append(
                {
                    "norm.name": cell,
                    "seed": seed,
                    "status": "ok",
                    "data.level": "char",
                    "test_bpc": v,
                    "test_bpc_long": v + (0.02 if cell == "batch_per_step" else 0.0),
                    "run_key": f"{cell}-{seed}",
                    "seq_len": 50,
                    "long_eval_len": 100,
                    "profile": "quick",
                    **extra,
                }
            )
    return pd.DataFrame(rows)


def decide(df: pd.DataFrame) -> dict:
    v = rnn_norm.verdict(df)
    assert v == rnn_norm.verdict({"rnn_norm": df})  # a table or the registry's tables
    json.dumps(v, allow_nan=False)  # valid JSON, no NaN
    return v


def test_supported_when_ln_beats_bn_and_plain_and_bn_does_not_help():
    v = decide(
        table(
            {"none": 1.50, "layer": 1.40, "batch_per_step": 1.55, "batch_shared": 1.52, "rms": 1.41}
        )
    )
    assert v["verdict"] == "supported"
    assert v["estimate"] == pytest.approx(0.15, abs=0.02)  # BN per-step minus LN
    assert v["ci"][0] > 0
    assert v["claim"] == "C7" and "1.32" in v["anchor"]


def test_contradicted_when_bn_helps_as_in_cooijmans():
    # BN-LSTM beats the plain LSTM and is as good as LN: BN is not useless in RNNs.
    v = decide(table({"none": 1.38, "layer": 1.33, "batch_per_step": 1.32, "batch_shared": 1.40}))
    assert v["verdict"] == "contradicted"
    assert abs(v["estimate"]) < 0.02


def test_contradicted_when_bn_beats_ln():
    v = decide(table({"none": 1.50, "layer": 1.50, "batch_per_step": 1.40, "batch_shared": 1.55}))
    assert v["verdict"] == "contradicted"
    assert v["ci"][1] < 0


def test_contradicted_when_bn_helps_even_if_ln_helps_more():
    v = decide(table({"none": 1.50, "layer": 1.30, "batch_per_step": 1.40, "batch_shared": 1.42}))
    assert v["verdict"] == "contradicted"
    assert v["details"]["ln_best"] and v["details"]["bn_helps"]["batch_per_step"]
    assert "LN-LSTM beats the plain LSTM and every BN cell" in v["effect"]


def test_inconclusive_when_differences_drown_in_noise():
    v = decide(
        table(
            {"none": 1.50, "layer": 1.49, "batch_per_step": 1.50, "batch_shared": 1.50}, noise=0.05
        )
    )
    assert v["verdict"] == "inconclusive"


def test_one_seed_is_inconclusive():
    v = decide(table({"none": 1.50, "layer": 1.40, "batch_per_step": 1.55}, seeds=1))
    assert v["verdict"] == "inconclusive"


@pytest.mark.parametrize(
    "df",
    [
        pd.DataFrame(),
        table({"none": 1.5}),
        table({"none": 1.5, "layer": 1.4}),  # no BN cell
        table({"none": 1.5, "layer": 1.4, "batch_per_step": 1.6}).drop(columns=["test_bpc"]),
    ],
    ids=["empty", "plain only", "no BN", "no scores"],
)
def test_missing_runs_mean_not_run_yet(df):
    assert decide(df)["verdict"] == "not run yet"


def test_failed_runs_drop_their_seed_and_are_noted():
    df = table({"none": 1.50, "layer": 1.40, "batch_per_step": 1.55, "batch_shared": 1.55})
    bad = (df["norm.name"] == "batch_per_step") & (df["seed"] == 2)
    df.loc[bad, "status"] = "diverged"
    df.loc[bad, "test_bpc"] = np.nan
    v = decide(df)
    assert v["verdict"] == "supported"
    assert "1 diverged" in v["notes"]
    cells = {c["cell"]: c for c in v["details"]["cells"]}
    assert cells["batch_per_step"]["seeds"] == 2 and cells["batch_per_step"]["failed"] == 1


def test_word_level_is_judged_in_bits_per_word():
    rows = table({"none": 7.0, "layer": 6.8, "batch_per_step": 7.1, "batch_shared": 7.1})
    rows = rows.assign(
        **{
            "data.level": "word",
            "test_ppl": 2 ** rows["test_bpc"],
            "test_ppl_long": 2 ** rows["test_bpc_long"],
        }
    ).drop(columns=["test_bpc", "test_bpc_long"])
    v = decide(rows)
    assert v["verdict"] == "supported" and "bits/word" in v["effect"]


def test_details_give_the_longer_window_penalty_per_cell():
    v = decide(table({"none": 1.5, "layer": 1.4, "batch_per_step": 1.55, "batch_shared": 1.55}))
    long = v["details"]["long_minus_trained"]
    assert long["batch_per_step"]["mean"] == pytest.approx(0.02)
    assert long["layer"]["mean"] == pytest.approx(0.0)


@pytest.mark.parametrize(
    "df", [pd.DataFrame(), table({"none": 1.5, "layer": 1.4, "batch_per_step": 1.6})]
)
def test_figure_is_drawn_with_or_without_runs(tmp_path, df):
    out = rnn_norm.draw({"rnn_norm": df}, tmp_path / "figures" / "rnn_norm.png")
    assert out.exists() and out.stat().st_size > 20_000


def test_the_claim_registry_knows_c7():
    names = {a.name: a for a in load_analyses()}
    assert names["rnn_norm"].claim == "C7" and names["rnn_norm"].reads == ("rnn_norm",)
