"""Every experiment runs at the smoke profile (as lightning-hydra-template's test_sweeps does),
then `figures` turns the store into all eleven verdicts, the figures and both report files."""

import json
import os
from pathlib import Path

import pytest

from tests.helpers import REPO, real_data_dir, run_cli

pytestmark = pytest.mark.slow
EXPERIMENTS = sorted(p.stem for p in (REPO / "experiments").glob("*.yaml"))
NEEDS_PTB = {"rnn_norm", "gpu_rnn_cooijmans"}


def has_ptb() -> bool:
    configured = os.environ.get("NORMEXP_DATA_DIR")
    return bool(configured) and (Path(configured) / "ptb" / "ptb.char.train.txt").exists()


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return tmp_path_factory.mktemp("all_experiments")


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_runs_at_smoke(experiment, store, cifar_data):
    if experiment in NEEDS_PTB and not has_ptb():
        pytest.skip("needs the real PTB under NORMEXP_DATA_DIR")
    data_dir, extra = cifar_data
    if experiment in NEEDS_PTB:
        data_dir, extra = Path(os.environ["NORMEXP_DATA_DIR"]), []
    result = run_cli(
        [
            "normexp.run",
            "-m",
            f"experiment={experiment}",
            "profile=smoke",
            "tracking.mode=disabled",
            "runtime.progress=false",
            f"hydra.sweep.dir={store / 'hydra' / experiment}",
            *extra,
        ],
        store / "results",
        data_dir,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = list((store / "results" / "smoke" / "runs").glob("*/*/status.json"))
    assert runs, "the sweep wrote no run"


def test_figures_give_every_verdict_and_both_reports(store):
    if real_data_dir() is None:
        pytest.skip("the verdicts are read on the real data (CI configures it)")
    result = run_cli(
        [
            "normexp.analysis.figures",
            "--results-dir",
            str(store / "results"),
            "--profile",
            "smoke",
            "--wandb-mode",
            "disabled",
        ],
        store / "results",
        store,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = (store / "results" / "smoke" / "verdicts").glob("*.json")
    verdicts = [json.loads(p.read_text()) for p in found]
    assert sorted(v["claim"] for v in verdicts) == sorted(f"C{i}" for i in range(1, 12))
    for verdict in verdicts:
        assert verdict["verdict"] in ("supported", "contradicted", "inconclusive", "not run yet")
        assert (store / "results" / "smoke" / "figures" / f"{verdict['experiment']}.png").exists()
    assert (store / "results" / "smoke" / "REPORT.md").exists() and (
        store / "results" / "smoke" / "report.html"
    ).exists()
