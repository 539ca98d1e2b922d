"""A sweep killed with SIGKILL at an arbitrary moment loses nothing: rerunning the same command
finishes it, every run exactly once, and runs that had finished are not trained again."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from tests.helpers import REPO, cli_env, run_cli

pytestmark = pytest.mark.slow
# 18 runs: a kill after 5 lands mid-sweep; the 7 batch sizes of the smoke grid would only
# make it longer.
GRID = ["norm=none,batch,group", "train.batch_size=8,32,128", "seed=0,1"]
RUNS = 3 * 3 * 2


def sweep_args(tmp_path, extra):
    return [
        "normexp.run",
        "-m",
        "experiment=bn_small_batch",
        "profile=smoke",
        "tracking.mode=disabled",
        "runtime.progress=false",
        "train.epochs=2",
        f"hydra.sweep.dir={tmp_path / 'hydra'}",
        *GRID,
        *extra,
    ]


def finished(runs_dir):
    done = {}
    for status in runs_dir.glob("*/status.json"):
        if json.loads(status.read_text())["status"] == "ok":
            done[status.parent.name] = (status.parent / "summary.json").stat().st_mtime_ns
    return done


def sweep_until(tmp_path, cifar_data, runs_dir, runs: int, stderr) -> subprocess.Popen:
    """The sweep started in a process group of its own, returned once ``runs`` runs are ok."""
    data_dir, extra = cifar_data
    proc = subprocess.Popen(
        [sys.executable, "-m", *sweep_args(tmp_path, extra)],
        cwd=REPO,
        env=cli_env(tmp_path / "results", data_dir),
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 300
    while len(finished(runs_dir)) < runs and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    return proc


def test_sigkill_midway_then_rerun_finishes_every_run_once(tmp_path, cifar_data):
    data_dir, extra = cifar_data
    runs_dir = tmp_path / "results" / "smoke" / "runs" / "bn_small_batch"
    proc = sweep_until(tmp_path, cifar_data, runs_dir, 5, stderr=subprocess.DEVNULL)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and all of its workers, mid-run
    proc.wait()
    before = finished(runs_dir)
    assert 5 <= len(before) < RUNS, "kill the sweep while it is still running"

    # Resumed with more workers than before: concurrent writers must not lose or tear records.
    rerun = run_cli(
        [*sweep_args(tmp_path, extra), "hydra.launcher.n_jobs=3"], tmp_path / "results", data_dir
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    after = finished(runs_dir)
    assert len(after) == RUNS
    assert {k: after[k] for k in before} == before  # finished runs were not retrained
    assert f"({len(before)} finished before, skipped)" in rerun.stderr
    assert not list(runs_dir.glob("*/run.lock")) and not list(runs_dir.glob("*/.*.tmp"))

    figures = run_cli(
        ["normexp.analysis.figures", "--results-dir", str(tmp_path / "results")]
        + ["--profile", "smoke"],
        tmp_path / "results",
        data_dir,
    )
    assert figures.returncode == 0, figures.stderr
    table = pd.read_parquet(tmp_path / "results" / "smoke" / "collected" / "bn_small_batch.parquet")
    assert len(table) == RUNS and table["run_key"].is_unique
    assert set(table["status"]) == {"ok"}
    cells = table.groupby(["norm.name", "train.batch_size", "seed"]).size()
    assert (cells == 1).all()


def test_sigterm_midway_records_the_sitting_as_interrupted_and_exits_143(tmp_path, cifar_data):
    """SIGTERM (a scheduler's, or `kill`) to the sweep's process group: the sweep unwinds,
    writes its sweeps.jsonl line marked interrupted with the counts so far, and exits 128 + 15."""
    data_dir, extra = cifar_data
    runs_dir = tmp_path / "results" / "smoke" / "runs" / "bn_small_batch"
    proc = sweep_until(tmp_path, cifar_data, runs_dir, 2, stderr=subprocess.PIPE)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    [line] = (tmp_path / "results" / "smoke" / "sweeps.jsonl").read_text().splitlines()
    sitting = json.loads(line)
    assert sitting["interrupted"] is True and sitting["runs"] == RUNS
    assert 2 <= sitting["counts"].get("ok", 0) < RUNS
    assert "interrupted (rerun the same command to resume)" in err
