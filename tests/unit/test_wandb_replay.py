"""Replaying the store into W&B (``make wandb-sync``): a stored run without a W&B run gets an
offline one that a W&B reader parses as the live run's (id, name, group, tags, config, history
against the epoch, summary, exit code); a second call replays nothing; a replay cut short is
redone. The runs are written with the store's API (no training)."""

import json
import shutil

import pytest
import wandb

from normexp.tracking import wandb_replay
from normexp.tracking.store import RunRecord, run_key
from normexp.tracking.wandb_mirror import WandbMirror, exit_code, run_identity, wandb_metrics
from normexp.tracking.wandb_replay import (
    DONE,
    offline_runs,
    replay,
    replay_folder,
    replayed_run,
    to_replay,
)
from tests.unit.test_wandb_mirror import clean_env, config_for, parse_run  # noqa: F401 - fixture

# no W&B login or mode of the machine; W&B's files under tmp
pytestmark = pytest.mark.usefixtures("clean_env")
EXPERIMENT = "bn_small_batch"
W_AND_B_ONLY = ("_runtime", "_timestamp", "_wandb")  # W&B's own keys (time), and under them


def epochs(n: int, seed: int) -> list[dict]:
    return [
        {"epoch": e, "train_loss": 1.0 / e, "val_acc": 0.5 + e / 10 + seed / 100, "lr": 0.1 / e,
         "images_per_s": 100.0 + e}
        for e in range(1, n + 1)
    ]  # fmt: skip


def stored_run(folder, seed: int, status: str = "ok", n: int = 2) -> tuple[RunRecord, dict]:
    """A run of the store as a job leaves it (config, metrics, summary, status); the config
    is a committed run's of bn_small_batch, tracking disabled (as the tests train)."""
    config = config_for(**{"seed": seed, "tracking.mode": "disabled",
                           "tracking.project": "normexp-test"})  # fmt: skip
    record = RunRecord(folder, EXPERIMENT, run_key(config))
    record.start(config)
    for metrics in epochs(n, seed):
        record.append_metrics(metrics)
    summary = {**epochs(n, seed)[-1], "epochs": n, "status": status, "run_key": record.key,
               "test_acc": 0.6, "test_err": 0.4, "provenance": {"commit": "abc", "host": "vm"}}
    if status != "ok":
        summary["wandb_error"] = "wandb init failed: a live mirror's error, never replayed"
    record.finish(status, summary, error="Diverged: loss nan" if status != "ok" else None)
    return record, config


def _mine(values: dict) -> dict:
    return {k: v for k, v in values.items() if not k.startswith(W_AND_B_ONLY)}


def comparable(run: dict) -> dict:
    """A parsed W&B run without what differs between any two W&B runs (time, W&B's own)."""
    info = run["run"]
    return {
        "id": info.run_id, "name": info.display_name, "group": info.run_group,
        "tags": list(info.tags), "job_type": info.job_type, "project": info.project,
        "config": _mine(run["config"]), "rows": [_mine(r) for r in run["rows"]],
        "summary": _mine(run["summary_values"]),
        "metrics": run["metrics"], "exit_code": run["exit_code"],
    }  # fmt: skip


@pytest.fixture
def store(tmp_path):
    """A profile folder: a finished run, a diverged one, one still running, one damaged."""
    folder = tmp_path / "results" / "quick"
    ok, ok_config = stored_run(folder, seed=0)
    diverged, _ = stored_run(folder, seed=1, status="diverged", n=1)
    running = RunRecord(folder, EXPERIMENT, "running0000000a")
    running.start(config_for(seed=2))
    damaged, _ = stored_run(folder, seed=3)
    (damaged.path / "metrics.jsonl").write_text("{not json\n")
    return folder, {"ok": ok, "diverged": diverged}, ok_config


def test_a_replayed_run_is_the_live_run(store, tmp_path):
    """Replayed and live, the same W&B run but for time: id (the run key), name, group, tags,
    config (with protocol.stage), one history row per epoch under W&B's metric names, the
    summary, the metrics plotted against the epoch, the exit code (1: diverged)."""
    folder, records, config = store
    assert [r.key for r in to_replay(folder)] == sorted(r.key for r in records.values())
    assert replay(folder, workers=1, progress=False) == (2, [])
    runs = {name: parse_run(replayed_run(r)) for name, r in records.items()}
    ok, record = runs["ok"], records["ok"]
    ident = run_identity(config, record.key)
    assert ok["run"].run_id == record.key and ok["run"].display_name == ident["name"]
    assert ok["run"].run_group == EXPERIMENT and list(ok["run"].tags) == ident["tags"]
    assert ok["config"]["protocol"]["stage"] == "record" and ok["config"]["run_key"] == record.key
    assert ok["config"]["seed"] == 0 and ok["config"]["paths"]["results_dir"] is None
    assert [{k: v for k, v in r.items() if not k.startswith("_")} for r in ok["rows"]] == [
        wandb_metrics(m) for m in epochs(2, 0)
    ]  # one row per epoch, the store's values under W&B's names
    assert ok["summary_values"]["test/acc"] == 0.6 and ok["summary_values"]["run/status"] == "ok"
    assert ok["metrics"]["train/*"] == "epoch" and ok["exit_code"] == 0
    assert runs["diverged"]["exit_code"] == 1
    assert "run/wandb_error" not in runs["diverged"]["summary"]  # the live mirror's, not W&B's
    assert not ok["output"]  # the store keeps no console output: nothing of the replay's own

    # the live run of the same stored run, written by the job's mirror
    live_dir = tmp_path / "live"
    mirror = WandbMirror.for_run(config, record.key, live_dir, mode="offline")
    for metrics in record.metrics():
        mirror.log(metrics)
    summary = json.loads((record.path / "summary.json").read_text())
    mirror.finish(summary, exit_code(record.status["status"]), run_dir=record.path)
    wandb.teardown()  # let W&B's service finish writing the live run's file
    (live,) = (live_dir / "wandb").glob("offline-run-*")
    expected = comparable(ok)
    assert len(expected["rows"]) == 2 and "norm" in expected["config"]  # something to compare
    assert comparable(parse_run(live)) == expected


def test_a_second_call_replays_nothing_and_a_cut_replay_is_redone(store):
    folder, records, _ = store
    assert replay(folder, workers=1, progress=False)[0] == 2
    assert to_replay(folder) == [] and replay(folder, workers=1, progress=False) == (0, [])
    cut = records["ok"]
    (replay_folder(cut) / DONE).unlink()  # killed before W&B's file was complete
    assert [r.key for r in to_replay(folder)] == [cut.key]
    assert not [p for p in offline_runs(folder) if cut.key in p.name]  # never synced half-done
    assert replay(folder, workers=1, progress=False) == (1, [])
    (again,) = replay_folder(cut).glob("wandb/offline-run-*")  # the cut one removed
    assert replayed_run(cut) == again and parse_run(again)["exit_code"] == 0
    assert len(offline_runs(folder)) == 2


def test_a_run_with_a_live_w_and_b_run_is_not_replayed(store):
    """A live run's W&B folder counts, unless its mirror failed (the summary's wandb_error)."""
    folder, records, _ = store
    for record in records.values():
        live = record.path / "wandb" / f"offline-run-20250101_000000-{record.key}"
        live.mkdir(parents=True)
        (live / f"run-{record.key}.wandb").write_bytes(b":W&B")
    assert [r.key for r in to_replay(folder)] == [records["diverged"].key]  # its mirror failed
    report = folder / "wandb" / "offline-run-20250101_000000-report"
    report.mkdir(parents=True)
    shutil.rmtree(records["diverged"].path / "wandb")
    assert [p.name for p in offline_runs(folder)] == sorted(
        [f"offline-run-20250101_000000-{records['ok'].key}", report.name]
    )


def test_replay_names_a_run_it_could_not_replay(store, monkeypatch):
    folder, records, _ = store
    monkeypatch.setattr(wandb_replay, "REPLAY_SETTINGS", {"console": "no-such-mode"})
    replayed, failed = replay(folder, workers=1, progress=False)
    assert replayed == 0 and len(failed) == 2
    assert all("wandb init failed" in error for _, error in failed)
    assert len(to_replay(folder)) == 2  # nothing marked done: the next call tries again
