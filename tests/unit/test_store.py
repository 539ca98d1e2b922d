"""Results store (run keys, records, atomic writes, locks) and collecting runs into a table."""

import copy
import json
import logging
import math
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from normexp.tracking import lease
from normexp.tracking.collect import collect_runs, experiments_in_store, write_collected
from normexp.tracking.store import (
    RunLocked,
    RunRecord,
    atomic_write_json,
    atomic_write_text,
    iter_records,
    profile_dir,
    read_json,
    run_key,
)


def make_config(seed: int = 0, norm: str = "batch", batch: int = 8, results: str = "/r") -> dict:
    return {
        "claim": {"id": "C4", "name": "bn_small_batch"},
        "seed": seed,
        "profile": "smoke",
        "norm": {"name": norm, "position": "pre"},
        "model": {"name": "cnn", "widths": [4, 8], "activation": "relu"},
        "train": {"batch_size": batch, "epochs": 1},
        "optim": {"name": "sgd", "lr_per_128": 0.2},
        "scale": {"smoke": {"n_train": 256}},
        "paths": {"results_dir": results, "data_dir": None},
        "tracking": {"mode": "disabled", "project": "normexp"},
        "runtime": {"threads": 1, "progress": False},
    }


def reversed_keys(tree):
    if isinstance(tree, dict):
        return {k: reversed_keys(tree[k]) for k in reversed(list(tree))}
    return tree


def full_summary(record: RunRecord, status: str, epochs: int, **values) -> dict:
    """A summary as the job writes it (the store's check needs these keys)."""
    return {**values, "epochs": epochs, "status": status, "run_key": record.key}


def no_temp_files(folder) -> bool:
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# --- run_key ---------------------------------------------------------------------------


def test_run_key_is_stable_under_key_order():
    config = make_config()
    reordered = reversed_keys(config)
    assert list(reordered) != list(config)
    assert list(reordered["norm"]) != list(config["norm"])
    key = run_key(config)
    assert run_key(reordered) == key
    assert len(key) == 16 and all(c in "0123456789abcdef" for c in key)
    assert run_key(copy.deepcopy(config)) == key


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("tracking", {"mode": "online", "project": "other"}),
        ("paths", {"results_dir": "/elsewhere", "data_dir": "/data"}),
        ("runtime", {"threads": 8, "progress": True}),
        ("hydra", {"job": {"num": 3}}),
    ],
)
def test_run_key_ignores_output_and_tracking_fields(field, value):
    config = make_config()
    changed = {**config, field: value}
    assert run_key(changed) == run_key(config)


@pytest.mark.parametrize(
    "changed",
    [
        make_config(seed=1),
        make_config(norm="group"),
        make_config(batch=16),
    ],
    ids=["seed", "norm", "batch"],
)
def test_run_key_changes_with_what_is_computed(changed):
    assert run_key(changed) != run_key(make_config())


def test_test_every_epoch_at_its_neutral_value_keeps_stored_run_keys():
    # Runs stored before the field existed were tested every epoch; their final metrics are
    # the ones a run that tests once computes, so they keep their keys. Asking for the per-epoch
    # test curve is another run: it records more.
    config = make_config()
    once = {**config, "train": {**config["train"], "test_every_epoch": False}}
    every = {**config, "train": {**config["train"], "test_every_epoch": True}}
    assert run_key(once) == run_key(config) != run_key(every)


def test_run_key_changes_with_nested_values():
    config = make_config()
    changed = copy.deepcopy(config)
    changed["model"]["widths"] = [4, 16]
    assert run_key(changed) != run_key(config)


def test_no_profiles_lookup_row_reaches_a_key_but_the_values_it_sets_do():
    # Every profile's scale and protocol rows sit in every config; editing one (here smoke's
    # and quick's) must leave the keys of runs stored at any profile as they are, while the
    # value a run reads from its own row reaches its key through the field it sets.
    config = {**make_config(), "protocol": {"lr_grid": [1.0], "profiles": {"quick": {"x": 1}}}}
    edited = copy.deepcopy(config)
    edited["scale"] = {"smoke": {"n_train": 512}, "quick": {"n_train": 9}}
    edited["protocol"]["profiles"] = {"quick": {"x": 2}, "smoke": {}}
    assert run_key(edited) == run_key(config)
    edited["model"]["widths"] = [4, 16]  # what the row's edit would set through an interpolation
    assert run_key(edited) != run_key(config)


def test_migrate_renames_runs_to_their_current_keys_once(tmp_path, capsys):
    from normexp.tracking import migrate

    results = tmp_path / "results"
    fresh = RunRecord(profile_dir(results, "smoke"), "bn_small_batch", run_key(make_config(seed=1)))
    fresh.start(make_config(seed=1))
    old = results / "smoke" / "runs" / "bn_small_batch" / "0123456789abcdef"  # an old rule's name
    old.mkdir(parents=True)
    atomic_write_json(old / "config.json", make_config())
    atomic_write_json(old / "summary.json", {"run_key": old.name, "test_acc": 0.5})
    taken = results / "quick" / "runs" / "bn_small_batch"
    (taken / "fedcba9876543210").mkdir(parents=True)  # renamed, its key's folder is taken
    atomic_write_json(taken / "fedcba9876543210" / "config.json", make_config(batch=4))
    (taken / run_key(make_config(batch=4))).mkdir()

    assert migrate.main(["--results-dir", str(results)]) == 1
    new = old.with_name(run_key(make_config()))
    assert not old.exists() and read_json(new / "summary.json") == {
        "run_key": new.name,
        "test_acc": 0.5,
    }
    assert fresh.path.is_dir() and (taken / "fedcba9876543210").is_dir()
    out = capsys.readouterr()
    assert "1 run(s) renamed" in out.out and "fedcba9876543210: its key's folder" in out.err
    shutil.rmtree(taken)
    assert migrate.main(["--results-dir", str(results)]) == 0
    assert "0 run(s) renamed" in capsys.readouterr().out


# --- RunRecord -------------------------------------------------------------------------


def test_record_round_trip(tmp_path):
    config = make_config(results=str(tmp_path))
    record = RunRecord(tmp_path, "exp", run_key(config))
    assert record.path == tmp_path / "runs" / "exp" / run_key(config)
    assert record.status is None and not record.is_finished()
    assert record.metrics() == []

    record.start(config)
    stored = read_json(record.path / "config.json")
    assert stored == {**config, "paths": dict.fromkeys(config["paths"])}  # no machine paths
    assert config["paths"]["results_dir"] == str(tmp_path)  # the caller's config untouched
    assert record.status["status"] == "running"
    assert not record.is_finished()
    assert record.metrics() == []

    record.append_metrics({"epoch": 1, "train_loss": 2.0})
    record.append_metrics({"epoch": 2, "train_loss": 1.5})
    assert record.metrics() == [{"epoch": 1, "train_loss": 2.0}, {"epoch": 2, "train_loss": 1.5}]

    record.finish("ok", full_summary(record, "ok", 2, test_acc=0.5))
    assert read_json(record.path / "summary.json") == full_summary(record, "ok", 2, test_acc=0.5)
    status = record.status
    assert status["status"] == "ok" and "error" not in status
    assert status["host"] == socket.gethostname()
    assert record.is_finished()
    assert no_temp_files(tmp_path)


def test_restart_drops_metrics_and_summary_of_an_unfinished_try(tmp_path):
    record = RunRecord(tmp_path, "exp", "k1")
    record.start(make_config())
    record.append_metrics({"epoch": 1})
    record.finish("failed", {"epochs": 1}, error="RuntimeError: boom")
    assert record.status == {**record.status, "status": "failed", "error": "RuntimeError: boom"}
    assert not record.is_finished()  # a failed run is tried again
    record.start(make_config())
    assert record.metrics() == []
    assert not (record.path / "summary.json").exists()
    assert record.status["status"] == "running"


def test_diverged_counts_as_finished(tmp_path):
    record = RunRecord(tmp_path, "exp", "k1")
    record.start(make_config())
    record.finish("diverged", full_summary(record, "diverged", 0), error="loss is nan")
    assert record.is_finished()
    assert record.status["error"] == "loss is nan"


def test_unknown_status_is_refused(tmp_path):
    record = RunRecord(tmp_path, "exp", "k1")
    record.start(make_config())
    with pytest.raises(AssertionError):
        record.write_status("done")
    assert record.status["status"] == "running"


def test_atomic_write_replaces_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "a.json"
    atomic_write_json(path, {"b": 1, "a": [1, 2]})
    atomic_write_json(path, {"c": 3})
    assert json.loads(path.read_text()) == {"c": 3}
    atomic_write_text(tmp_path / "t.txt", "hello\n")
    assert (tmp_path / "t.txt").read_text() == "hello\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "t.txt"]


def test_read_json_of_missing_or_torn_file_is_none(tmp_path):
    assert read_json(tmp_path / "missing.json") is None
    (tmp_path / "torn.json").write_text('{"a": ')
    assert read_json(tmp_path / "torn.json") is None


# --- lock ------------------------------------------------------------------------------


def test_lock_is_exclusive_and_released(tmp_path):
    record = RunRecord(tmp_path, "exp", "k1")
    lock_file = record.path / "run.lock"
    with record.lock():
        assert lock_file.read_text().split()[:2] == [socket.gethostname(), str(os.getpid())]
        with pytest.raises(RunLocked), record.lock():
            pass
        assert lock_file.exists()  # the failed attempt did not remove the holder's lock
    assert not lock_file.exists()
    assert not list(record.path.glob(".*"))  # nor a temporary file of the lock beside it
    with record.lock():
        pass


def test_lock_released_when_the_body_raises(tmp_path):
    record = RunRecord(tmp_path, "exp", "k1")
    with pytest.raises(ValueError), record.lock():
        raise ValueError("training failed")
    assert not (record.path / "run.lock").exists()


def _lock_of(tmp_path, text: str, silent_s: float = 0.0) -> tuple[RunRecord, Path]:
    """A run whose lock holds ``text``, its heartbeat ``silent_s`` seconds old."""
    record = RunRecord(tmp_path, "exp", "k1")
    record.path.mkdir(parents=True)
    lock_file = record.path / "run.lock"
    lock_file.write_text(text)
    then = time.time() - silent_s
    os.utime(lock_file, (then, then))
    return record, lock_file


def test_stale_lock_of_a_dead_process_here_is_taken_over_with_a_note(tmp_path, caplog):
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    record, lock_file = _lock_of(tmp_path, f"{socket.gethostname()} {int(proc.stdout)} ab\n")
    with caplog.at_level(logging.WARNING, logger="normexp"), record.lock():
        assert lock_file.read_text().split()[:2] == [socket.gethostname(), str(os.getpid())]
    assert not lock_file.exists()
    [note] = [r.getMessage() for r in caplog.records]
    assert f"took over the stale lock of {record.path}" in note and proc.stdout.strip() in note


def test_lock_of_a_live_process_is_respected_however_old_its_heartbeat(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        text = f"{socket.gethostname()} {proc.pid} ab\n"
        record, lock_file = _lock_of(tmp_path, text, silent_s=10 * lease.LEASE_S)
        with pytest.raises(RunLocked), record.lock():
            pass
        assert lock_file.read_text() == text
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("text", [f"not-{socket.gethostname()} 1 ab\n", "", "garbage"])
def test_a_lock_no_pid_can_vouch_for_is_live_within_its_lease_and_taken_after(tmp_path, text):
    """Another host's lock (no pid can be checked across machines), or one that cannot be read:
    live while its heartbeat is younger than the lease, taken over once it is older."""
    record, lock_file = _lock_of(tmp_path, text, silent_s=lease.LEASE_S - 60)
    with pytest.raises(RunLocked), record.lock():
        pass
    assert lock_file.read_text() == text
    then = time.time() - lease.LEASE_S - 1
    os.utime(lock_file, (then, then))
    with record.lock():
        assert lock_file.read_text().split()[1] == str(os.getpid())
    assert not lock_file.exists()


def test_the_heartbeat_refreshes_the_lock_while_the_run_trains(tmp_path, monkeypatch):
    monkeypatch.setattr(lease, "HEARTBEAT_S", 0.01)
    record = RunRecord(tmp_path, "exp", "k1")
    lock_file = record.path / "run.lock"
    with record.lock():
        old = time.time() - lease.LEASE_S - 1
        os.utime(lock_file, (old, old))  # as if silent past its lease...
        while lock_file.stat().st_mtime == old:  # ...until the heartbeat thread touches it
            time.sleep(0.01)
        assert lease.read_owner(lock_file).silent_s < lease.LEASE_S
    assert not lock_file.exists()


def test_of_two_takers_of_one_stale_lock_only_one_wins(tmp_path):
    """The loser's rename finds the winner's fresh lock: it gives it back and takes nothing."""
    record, lock_file = _lock_of(tmp_path, f"not-{socket.gethostname()} 1 ab\n", 2 * lease.LEASE_S)
    stale = lease.read_owner(lock_file)
    assert lease._take_over(lock_file, stale)  # the winner moves it aside...
    with record.lock():  # ...and holds the run
        mine = lock_file.read_text()
        assert not lease._take_over(lock_file, stale)  # the loser acted on what it saw before
        assert lock_file.read_text() == mine
    assert not list(record.path.glob(".*"))


def test_a_stop_removes_the_locks_this_process_holds_and_no_other(tmp_path):
    record = RunRecord(tmp_path, "exp", "k1")
    other, other_lock = _lock_of(tmp_path / "o", f"not-{socket.gethostname()} 1 ab\n")
    with record.lock():
        lease.release_held()  # what a stop does before the process exits
        assert not (record.path / "run.lock").exists()
    assert other_lock.exists()


# --- iter_records ----------------------------------------------------------------------


def test_iter_records_lists_run_folders(tmp_path):
    for key in ("b2", "a1", "c3"):
        RunRecord(tmp_path, "exp", key).start(make_config())
    (tmp_path / "runs" / "exp" / ".hidden").mkdir()
    (tmp_path / "runs" / "exp" / "stray.txt").write_text("x")
    RunRecord(tmp_path, "other", "z9").start(make_config())
    records = list(iter_records(tmp_path, "exp"))
    assert [r.key for r in records] == ["a1", "b2", "c3"]
    assert all(r.experiment == "exp" and r.path.is_dir() for r in records)
    assert list(iter_records(tmp_path, "missing")) == []
    assert experiments_in_store(tmp_path) == ["exp", "other"]
    assert experiments_in_store(tmp_path / "nowhere") == []


# --- collect ---------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path):
    """The smoke profile's folder of a store: three runs and a folder that is not one."""
    folder = profile_dir(tmp_path, "smoke")
    runs = [
        (make_config(seed=0, norm="group", batch=8), "ok", {"test_acc": 0.4}, None),
        (make_config(seed=0, norm="batch", batch=16), "ok", {"test_acc": 0.6}, None),
        (make_config(seed=1, norm="batch", batch=2), "failed", {}, "RuntimeError: boom"),
    ]
    for config, status, summary, error in runs:
        key = run_key(config)
        record = RunRecord(folder, "bn_small_batch", key)
        record.start(config)
        record.append_metrics({"epoch": 1, "val_acc": 0.3})
        record.finish(status, full_summary(record, status, 1, **summary), error)
    # A folder without a config (a job killed before start) is not a run.
    (folder / "runs" / "bn_small_batch" / "0000000000000000").mkdir()
    return folder


def test_collect_runs_one_row_per_run_with_dotted_columns(store):
    df = collect_runs(store, "bn_small_batch")
    assert len(df) == 3
    for col in (
        "norm.name",
        "norm.position",
        "train.batch_size",
        "seed",
        "claim.name",
        "model.widths",
        "status",
        "error",
        "run_key",
        "test_acc",
    ):
        assert col in df.columns, col
    dropped = ("scale.", "paths.", "tracking.", "runtime.")
    assert not [c for c in df.columns if c.startswith(dropped)]
    by_batch = df.set_index("train.batch_size")
    assert by_batch.loc[2, "status"] == "failed"
    assert by_batch.loc[2, "error"] == "RuntimeError: boom"
    assert by_batch.loc[16, "status"] == "ok" and pd.isna(by_batch.loc[16, "error"])
    assert by_batch.loc[16, "test_acc"] == 0.6
    assert by_batch.loc[8, "norm.name"] == "group"
    assert by_batch.loc[8, "model.widths"] == "[4, 8]"
    assert math.isnan(by_batch.loc[2, "test_acc"])
    assert set(df["run_key"]) == {
        p.name
        for p in (store / "runs" / "bn_small_batch").iterdir()
        if (p / "config.json").exists()
    }


def test_collect_keeps_a_running_run(store):
    config = make_config(seed=5)
    record = RunRecord(store, "bn_small_batch", run_key(config))
    record.start(config)
    record.append_metrics({"epoch": 1, "val_acc": 0.2})
    damaged = []
    df = collect_runs(store, "bn_small_batch", damaged)
    assert len(df) == 4 and damaged == []
    assert df.set_index("seed").loc[5, "status"] == "running"


def test_write_collected_writes_parquet_and_csv(store):
    df = write_collected(store, "bn_small_batch")
    out = store / "collected"
    parquet = pd.read_parquet(out / "bn_small_batch.parquet")
    csv = pd.read_csv(out / "bn_small_batch.csv")
    assert len(parquet) == len(csv) == len(df) == 3
    assert list(parquet.columns) == list(df.columns) == list(csv.columns)
    # sorted by norm, then batch size
    assert list(zip(parquet["norm.name"], parquet["train.batch_size"], strict=True)) == [
        ("batch", 2),
        ("batch", 16),
        ("group", 8),
    ]
    assert list(csv["status"]) == ["failed", "ok", "ok"]
    assert not [c for c in parquet.columns if c.startswith(("scale.", "paths."))]
    assert no_temp_files(store)


def test_write_collected_of_an_empty_experiment(tmp_path):
    df = write_collected(tmp_path, "nothing")
    assert df.empty
    assert (tmp_path / "collected" / "nothing.csv").exists()
    assert (tmp_path / "collected" / "nothing.parquet").exists()


def test_restart_removes_temporary_files_of_a_killed_writer(tmp_path):
    from normexp.tracking.store import RunRecord

    record = RunRecord(tmp_path, "exp", "key")
    record.path.mkdir(parents=True)
    stray = record.path / ".config.json.99999.tmp"  # a writer killed between write and rename
    stray.write_text("{half")
    with record.lock():
        record.start({"seed": 0})
    assert not stray.exists()
    assert (record.path / "config.json").exists()
