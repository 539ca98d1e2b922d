"""A sweep killed with SIGKILL at an arbitrary moment loses nothing: rerunning the same command
finishes it, every run exactly once, and runs that had finished are not trained again."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from normexp.tracking.collect import collect_runs
from tests.helpers import REPO, cli_env, run_cli

pytestmark = pytest.mark.slow
# 8 runs: a kill once 3 are finished lands mid-sweep (the sweep waits on the store, not a timer).
GRID = ["norm=none,batch", "train.batch_size=8,32", "seed=0,1"]
RUNS = 2 * 2 * 2


def sweep_args(tmp_path, extra, grid=GRID):
    return [
        "normexp.run",
        "-m",
        "experiment=bn_small_batch",
        "profile=smoke",
        "tracking.mode=disabled",
        "runtime.progress=false",
        "train.epochs=2",
        f"hydra.sweep.dir={tmp_path / 'hydra'}",
        *grid,
        *extra,
    ]


def finished(runs_dir):
    done = {}
    for status in runs_dir.glob("*/status.json"):
        if json.loads(status.read_text())["status"] == "ok":
            done[status.parent.name] = (status.parent / "summary.json").stat().st_mtime_ns
    return done


def sweep_until(tmp_path, cifar_data, runs_dir, runs: int, stderr) -> subprocess.Popen:
    """The sweep started in a process group of its own, returned once ``runs`` runs are ok. Its
    jobs run in its own process (a run killed mid-way leaves its lock as a killed worker's
    would); the resume below starts workers."""
    data_dir, extra = cifar_data
    proc = subprocess.Popen(
        [sys.executable, "-m", *sweep_args(tmp_path, extra), "hydra.launcher.n_jobs=1"],
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
    proc = sweep_until(tmp_path, cifar_data, runs_dir, 3, stderr=subprocess.DEVNULL)
    os.killpg(proc.pid, signal.SIGKILL)  # the sweep and its process group, mid-run
    proc.wait()
    before = finished(runs_dir)
    assert 3 <= len(before) < RUNS, "kill the sweep while it is still running"

    # Resumed with more workers than before: concurrent writers must not lose or tear records.
    rerun = run_cli(
        [*sweep_args(tmp_path, extra), "hydra.launcher.n_jobs=2"], tmp_path / "results", data_dir
    )
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    after = finished(runs_dir)
    assert len(after) == RUNS
    assert {k: after[k] for k in before} == before  # finished runs were not retrained
    assert f"({len(before)} finished before, skipped)" in rerun.stderr
    assert not list(runs_dir.glob("*/run.lock")) and not list(runs_dir.glob("*/.*.tmp"))

    table = collect_runs(tmp_path / "results" / "smoke", "bn_small_batch")
    assert len(table) == RUNS and table["run_key"].is_unique
    assert set(table["status"]) == {"ok"}
    cells = table.groupby(["norm.name", "train.batch_size", "seed"]).size()
    assert (cells == 1).all()


# SIGTERM at each moment of a sweep's life, reached by state, never by a timer: the first three
# by tests/stop_at.py (a Hydra callback), mid-epoch once a run holds its lock (to the whole process
# group, as a scheduler or a terminal sends it).
MOMENTS = ["planned", "jobs_start", "mid_epoch", "closing"]
SHORT = ["norm=none,batch", "train.batch_size=32", "seed=0,1"]  # 4 runs


def group_alive(pgid: int) -> list[int]:
    """The processes of a process group still running (zombies are dead)."""
    alive = []
    for proc in Path("/proc").iterdir():
        try:
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(stat[2]) == pgid and stat[0] != "Z":
            alive.append(int(proc.name))
    return alive


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
@pytest.mark.parametrize("moment", MOMENTS)
def test_sigterm_at_any_moment_exits_143_with_its_sitting_and_leaves_nothing(
    tmp_path, cifar_data, moment
):
    """SIGTERM (a scheduler's, or `kill`) to a sweep: exit 128 + 15 with no traceback, its
    sweeps.jsonl line marked interrupted, no process of the sweep left running and no run lock
    left in the store; the same command then finishes the sweep."""
    data_dir, extra = cifar_data
    runs_dir = tmp_path / "results" / "smoke" / "runs" / "bn_small_batch"
    args = sweep_args(tmp_path, extra, SHORT)
    if moment == "mid_epoch":
        args.append("train.epochs=3")  # a run holds its lock for a second: polling sees it
    if moment != "jobs_start":  # the workers' own stop: jobs_start (and the SIGKILL test's resume)
        args.append("hydra.launcher.n_jobs=1")
    if moment != "mid_epoch":
        args += ["+hydra.callbacks.stop_at._target_=tests.stop_at.StopAt"]
        args += [f"+hydra.callbacks.stop_at.moment={moment}"]
    proc = subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=REPO,
        env=cli_env(tmp_path / "results", data_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    if moment == "mid_epoch":
        while proc.poll() is None and not list(runs_dir.glob("*/run.lock")):
            time.sleep(0.01)
        os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=600)  # a hang, not a slow machine, reaches this
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    [line] = (tmp_path / "results" / "smoke" / "sweeps.jsonl").read_text().splitlines()
    sitting = json.loads(line)
    assert sitting["interrupted"] is True and sitting["runs"] == 4
    if moment == "closing":
        assert sitting["counts"] == {"ok": 4}
    assert "interrupted (rerun the same command to resume)" in err
    deadline = time.monotonic() + 120  # Python's resource trackers end once their pipe closes
    while group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not group_alive(proc.pid)
    assert not list(runs_dir.glob("*/run.lock"))

    if moment == "mid_epoch":  # resumed in process (workers resuming: the SIGKILL test above)
        rerun = run_cli(args, tmp_path / "results", data_dir)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert len(finished(runs_dir)) == 4
