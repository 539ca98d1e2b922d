"""C7 rnn_norm (slow): the smoke sweep end to end: store, figure, verdict, resume. On the real
PTB the sweep is the session's smoke store's (tests/e2e/conftest.py); else it runs here on fake
PTB files."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from normexp.analysis.claims import load_analyses
from normexp.data import ptb
from tests.fake_data import write_fake_ptb
from tests.helpers import REPO, cli_env, real_ptb

# `make test` runs tests on every core (pytest-xdist, --dist loadgroup); a group stays on one
# worker, so the fixture its tests share is built once.
pytestmark = pytest.mark.xdist_group("smoke_store")
CELLS = ("none", "layer", "batch_per_step", "batch_shared", "rms")


# --- end to end -------------------------------------------------------------------------------

# Runs normexp.run in one process (hydra.launcher.n_jobs=1) with PTB's md5s patched to those of
# tiny fake files: the real data is not needed, and patching does not reach worker processes.
FAKE_RUNNER = """
import json, runpy, sys
from normexp.analysis.claims import load_analyses
from normexp.data import ptb
ptb.MD5 = json.loads(sys.argv[1])
sys.argv = ["normexp.run", *sys.argv[2:]]
runpy.run_module("normexp.run", run_name="__main__")
"""


def run(args: list[str], results: Path, data_dir: Path, md5: dict | None):  # noqa: ANN201
    env = cli_env(results, data_dir)
    if md5 is None:
        cmd = [sys.executable, "-m", *args]
    else:
        cmd = [sys.executable, "-c", FAKE_RUNNER, json.dumps(md5), *args[1:]]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_smoke_sweep_writes_runs_figure_and_verdict_then_resumes(tmp_path, request):
    if real_ptb() is not None:  # the session's smoke store holds the sweep and `figures`
        store = request.getfixturevalue("smoke_store")
        results, data_dir, md5 = store.results, real_ptb(), None
        sweep, first = store.sweep_args("rnn_norm"), store.sweeps["rnn_norm"]
        figures = store.figures
    else:  # tiny fake PTB files, in one process (above)
        data_dir = tmp_path / "data"
        md5 = write_fake_ptb(data_dir)
        results = tmp_path / "results"
        sweep = [
            "normexp.run", "-m", "experiment=rnn_norm", "profile=smoke", "tracking.mode=disabled",
            "runtime.progress=false", f"hydra.sweep.dir={tmp_path / 'hydra'}",
            "hydra.launcher.n_jobs=1",
        ]  # fmt: skip
        first, figures = run(sweep, results, data_dir, md5), None
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

    if figures is None:
        figures = run(
            ["normexp.analysis.figures", "--results-dir", str(results), "--profile", "smoke"],
            results,
            data_dir,
            None,
        )
    assert figures.returncode == 0, figures.stderr
    # C7 reads rnn_norm's runs and those of the LSTM experiments reported beside it (in the
    # session's store: rnn_small_batch, rnn_words), every one of them at one smoke seed.
    reads = next(a for a in load_analyses() if a.name == "rnn_norm").reads
    read = sum(len(list((results / "smoke" / "runs" / e).glob("*/status.json"))) for e in reads)
    assert "rnn_norm" in reads and read >= len(CELLS)
    assert f"C7 rnn_norm: {read} runs" in figures.stdout
    assert (results / "smoke" / "figures" / "rnn_norm.png").stat().st_size > 20_000
    verdict = json.loads((results / "smoke" / "verdicts" / "rnn_norm.json").read_text())
    assert verdict["verdict"] == "inconclusive"  # one smoke seed: no spread to judge
    table = pd.read_parquet(results / "smoke" / "collected" / "rnn_norm.parquet")
    assert set(table["norm.name"]) == set(CELLS)

    second = run(sweep, results, data_dir, md5)  # a fresh process either way
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"({len(CELLS)} finished before, skipped)" in second.stderr
    ptb.clear_cache()
