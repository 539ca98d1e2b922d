"""C7 rnn_norm: the verdict on synthetic tables whose answer is known, the batch grid and the
word level reported beside it, and the figure."""

import json

import numpy as np
import pandas as pd
import pytest

from normexp.analysis.claims import load_analyses, rnn_norm
from normexp.analysis.report import grid

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
    c7 = names["rnn_norm"]
    assert c7.claim == "C7" and c7.reads == ("rnn_norm", "rnn_small_batch", "rnn_words")
    assert set(c7.deciding({e: table({"none": 1.5}) for e in c7.reads})) == {"rnn_norm"}
    # the grid section's LSTM family is C7's small-batch grid, scored in test bits per character
    lstm = next(f for f in grid.FAMILIES if f.name == "LSTM")
    assert (lstm.experiment, lstm.metric) == (rnn_norm.SMALL_BATCH, "test_bpc")


def grid_table() -> pd.DataFrame:
    """rnn_small_batch: BN per step loses to LN by more at smaller batches, 3 seeds."""
    parts = []
    for batch in (4, 16, 64):
        gap = 0.4 / batch**0.5
        bpc = {"none": 2.0, "layer": 1.8, "batch_per_step": 1.8 + gap, "batch_shared": 1.9 + gap}
        parts.append(table(bpc, **{"train.batch_size": batch, "train.steps": 500}))
    return pd.concat(parts, ignore_index=True)


def word_table() -> pd.DataFrame:
    rows = table({"none": 8.0, "layer": 7.8, "batch_per_step": 8.1, "batch_shared": 8.1})
    return rows.assign(
        **{
            "data.level": "word",
            "test_ppl": 2 ** rows["test_bpc"],
            "test_ppl_long": 2 ** rows["test_bpc_long"],
        }
    ).drop(columns=["test_bpc", "test_bpc_long"])


def test_the_batch_grid_and_the_words_are_reported_but_do_not_decide():
    base = table({"none": 1.50, "layer": 1.40, "batch_per_step": 1.55, "batch_shared": 1.52})
    alone = rnn_norm.verdict({"rnn_norm": base})
    v = rnn_norm.verdict(
        {"rnn_norm": base, "rnn_small_batch": grid_table(), "rnn_words": word_table()}
    )
    json.dumps(v, allow_nan=False)
    assert {k: v[k] for k in ("verdict", "estimate", "ci")} == {
        k: alone[k] for k in ("verdict", "estimate", "ci")
    }
    assert [s["verdict"] for s in v["sub"]] == [s["verdict"] for s in alone["sub"]]
    grid = v["details"]["batch_grid"]
    assert list(grid) == ["4", "16", "64"]
    gaps = [grid[b]["differences"]["batch_per_step - layer"]["mean"] for b in grid]
    assert gaps == pytest.approx([0.2, 0.1, 0.05], abs=0.01)  # BN's penalty shrinks with batch
    assert grid["4"]["differences"]["layer - none"]["mean"] == pytest.approx(-0.2, abs=0.01)
    words = v["details"]["words"]
    ppl = {c["cell"]: c["ppl"] for c in words["cells"]}
    assert ppl["layer"] == pytest.approx(2**7.8, rel=0.02) and ppl["none"] > ppl["layer"]
    assert words["minus_none"]["layer"]["mean"] < 0
    assert words["anchor_zaremba_small"] == {"valid": 120.7, "test": 114.5}
    # Without them, the details have neither.
    assert "batch_grid" not in alone["details"] and "words" not in alone["details"]


def test_figure_with_the_batch_grid_and_the_words(tmp_path):
    tables = {
        "rnn_norm": table({"none": 1.5, "layer": 1.4, "batch_per_step": 1.6}),
        "rnn_small_batch": grid_table(),
        "rnn_words": word_table(),
    }
    out = rnn_norm.draw(tables, tmp_path / "figures" / "rnn_norm.png")
    assert out.exists() and out.stat().st_size > 20_000
