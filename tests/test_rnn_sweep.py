"""C7 rnn_norm: the verdict on synthetic tables whose answer is known, the figure, and (slow) the
smoke sweep end to end in a subprocess: store, figure, verdict, resume."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import REPO
from test_language_model import real_ptb, write_fake_ptb

from normexp.analysis import rnn_norm
from normexp.analysis.claims import load_analyses
from normexp.data import ptb

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


# --- end to end -------------------------------------------------------------------------------

# Runs normexp.run in one process (hydra.launcher.n_jobs=1) with PTB's md5s patched to those of
# tiny fake files: the real data is not needed, and patching does not reach worker processes.
FAKE_RUNNER = """
import json, runpy, sys
from normexp.data import ptb
ptb.MD5 = json.loads(sys.argv[1])
sys.argv = ["normexp.run", *sys.argv[2:]]
runpy.run_module("normexp.run", run_name="__main__")
"""


def run(args: list[str], results: Path, data_dir: Path, md5: dict | None):  # noqa: ANN201
    env = {**os.environ, "NORMEXP_RESULTS_DIR": str(results), "NORMEXP_DATA_DIR": str(data_dir)}
    env.pop("HYDRA_FULL_ERROR", None)
    if md5 is None:
        cmd = [sys.executable, "-m", *args]
    else:
        cmd = [sys.executable, "-c", FAKE_RUNNER, json.dumps(md5), *args[1:]]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_smoke_sweep_writes_runs_figure_and_verdict_then_resumes(tmp_path):
    data_dir, md5 = real_ptb(), None
    if data_dir is None:
        data_dir = tmp_path / "data"
        md5 = write_fake_ptb(data_dir)
    results = tmp_path / "results"
    sweep = [
        "normexp.run", "-m", "experiment=rnn_norm", "profile=smoke", "tracking.mode=disabled",
        "runtime.progress=false", f"hydra.sweep.dir={tmp_path / 'hydra'}",
        *(["hydra.launcher.n_jobs=1"] if md5 else []),
    ]  # fmt: skip
    first = run(sweep, results, data_dir, md5)
    assert first.returncode == 0, first.stderr[-3000:]
    runs = sorted((results / "smoke" / "runs" / "rnn_norm").iterdir())
    assert len(runs) == len(CELLS)
    seen = set()
    for folder in runs:
        assert json.loads((folder / "status.json").read_text())["status"] == "ok"
        config = json.loads((folder / "config.json").read_text())
        seen.add(config["norm"]["name"])
        summary = json.loads((folder / "summary.json").read_text())
        assert {"test_bpc", "test_bpc_long", "valid_bpc", "tokens_per_s"} <= set(summary)
        epochs = (folder / "metrics.jsonl").read_text().splitlines()
        assert len(epochs) == summary["epochs"] == config["train"]["epochs"]
    assert seen == set(CELLS)

    figures = run(
        ["normexp.analysis.figures", "--results-dir", str(results), "--profile", "smoke"],
        results,
        data_dir,
        None,
    )
    assert figures.returncode == 0, figures.stderr
    assert "C7 rnn_norm: 5 runs" in figures.stdout
    assert (results / "smoke" / "figures" / "rnn_norm.png").stat().st_size > 20_000
    verdict = json.loads((results / "smoke" / "verdicts" / "rnn_norm.json").read_text())
    assert verdict["verdict"] == "inconclusive"  # one smoke seed: no spread to judge
    table = pd.read_parquet(results / "smoke" / "collected" / "rnn_norm.parquet")
    assert set(table["norm.name"]) == set(CELLS)

    second = run(sweep, results, data_dir, md5)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"({len(CELLS)} finished before, skipped)" in second.stderr
    ptb.clear_cache()
