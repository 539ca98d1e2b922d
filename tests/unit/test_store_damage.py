"""A store that notices damage: a damaged finished run is retrained by the next job, left out
of the collected tables and named in the report; verdicts equal those without the run; a stale
lock of a dead process on this host is removed."""

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from normexp.analysis.claims import load_analyses
from normexp.analysis.figures import write_figures_and_verdicts
from normexp.job import run_job
from normexp.tracking.collect import collect_runs
from normexp.tracking.store import RECORD_PROFILE, RunDamaged, RunRecord, profile_dir
from tests.helpers import REPO

COMMITTED = profile_dir(REPO / "results", RECORD_PROFILE)  # the committed reproduction


def finished(results: Path, key: str, epochs: int = 2, status: str = "ok") -> RunRecord:
    """A run as the job leaves it: config, `epochs` metrics lines, summary, status."""
    record = RunRecord(results, "exp", key)
    record.start({"seed": 0, "claim": {"name": "exp"}, "profile": "smoke"})
    for epoch in range(1, epochs + 1):
        record.append_metrics({"epoch": epoch, "val_acc": 0.1 * epoch})
    summary = {"epochs": epochs, "status": status, "run_key": key, "test_acc": 0.5}
    record.finish(status, summary, None if status == "ok" else "boom")
    return record


def truncate(path: Path) -> None:
    text = path.read_text()
    path.write_text(text[: len(text) // 2])  # a copy cut short


def edit_json(path: Path, change: Callable[[dict], None]) -> None:
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))


def drop_last_line(path: Path) -> None:
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:-1]))


DAMAGES = {
    "truncated summary": (lambda p: truncate(p / "summary.json"), "summary.json: unreadable JSON"),
    "empty summary": (lambda p: (p / "summary.json").write_text("{}"), "summary.json incomplete"),
    "summary not an object": (
        lambda p: (p / "summary.json").write_text("[1]"),
        "summary.json: not a JSON object",
    ),
    "missing summary": (lambda p: (p / "summary.json").unlink(), "summary.json missing"),
    "summary of another run": (
        lambda p: edit_json(p / "summary.json", lambda s: s.update(run_key="0" * 16)),
        "summary.json is of run",
    ),
    "summary disagrees with status": (
        lambda p: edit_json(p / "summary.json", lambda s: s.update(status="failed")),
        "summary.json says 'failed', status.json 'ok'",
    ),
    "garbage metrics": (
        lambda p: (p / "metrics.jsonl").write_text('{"epoch": 1}\n\x00\x17garbage\n'),
        "metrics.jsonl line 2: not JSON",
    ),
    "metrics short of the summary": (
        lambda p: drop_last_line(p / "metrics.jsonl"),
        "metrics.jsonl has 1 epochs, summary says 2",
    ),
    "metrics epochs out of order": (
        lambda p: (p / "metrics.jsonl").write_text('{"epoch": 2}\n{"epoch": 1}\n'),
        "metrics.jsonl line 1: epoch 2, expected 1",
    ),
    "binary metrics": (
        lambda p: (p / "metrics.jsonl").write_bytes(b"\xff\xfe\x00"),
        "metrics.jsonl: unreadable (UnicodeDecodeError)",
    ),
    "missing metrics": (lambda p: (p / "metrics.jsonl").unlink(), "metrics.jsonl missing"),
    "missing status": (lambda p: (p / "status.json").unlink(), "status.json missing"),
    "truncated status": (lambda p: truncate(p / "status.json"), "status.json: unreadable JSON"),
    "unknown status": (
        lambda p: edit_json(p / "status.json", lambda s: s.update(status="done")),
        "status.json: unknown status 'done'",
    ),
    "missing config": (lambda p: (p / "config.json").unlink(), "config.json missing"),
    "truncated config": (lambda p: truncate(p / "config.json"), "config.json: unreadable JSON"),
}


# --- the check -------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["ok", "diverged", "failed"])
def test_an_intact_run_passes_the_check(tmp_path, status):
    record = finished(tmp_path, "k1", status=status)
    assert record.check() == []
    assert record.is_finished() == (status != "failed")  # a failed run is retried, as before
    assert record.metrics()[-1]["epoch"] == 2


def test_folders_of_jobs_killed_before_start_are_not_runs(tmp_path):
    record = RunRecord(tmp_path, "exp", "k1")
    assert record.check() == [] and not record.is_started()
    record.path.mkdir(parents=True)
    (record.path / "run.lock").write_text("elsewhere 1\n")
    assert record.check() == [] and not record.is_started()


@pytest.mark.parametrize("damage", DAMAGES, ids=list(DAMAGES))
def test_each_damage_is_named_and_the_run_is_not_finished(tmp_path, damage):
    record = finished(tmp_path, "k1")
    make_damage, problem = DAMAGES[damage]
    make_damage(record.path)
    problems = record.check()
    assert any(problem in p for p in problems), problems
    assert not record.is_finished()


def test_a_running_run_needs_no_summary(tmp_path):
    record = RunRecord(tmp_path, "exp", "k1")
    record.start({"seed": 0})
    record.append_metrics({"epoch": 1})
    assert record.check() == []
    (record.path / "metrics.jsonl").write_text("not json\n")
    assert record.check() == ["metrics.jsonl line 1: not JSON"]


def test_metrics_of_a_damaged_file_raise_naming_the_line(tmp_path):
    record = finished(tmp_path, "k1")
    (record.path / "metrics.jsonl").write_text('{"epoch": 1}\n{"epoch": \n')
    with pytest.raises(RunDamaged, match="line 2: not JSON"):
        record.metrics()
    (record.path / "metrics.jsonl").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(RunDamaged, match="not UTF-8"):
        record.metrics()


# --- collect ---------------------------------------------------------------------------


@pytest.mark.parametrize("damage", DAMAGES, ids=list(DAMAGES))
def test_collect_leaves_a_damaged_run_out_and_names_it(tmp_path, damage, caplog):
    store = profile_dir(tmp_path, "smoke")
    good = finished(store, "a_good")
    bad = finished(store, "b_bad")
    make_damage, problem = DAMAGES[damage]
    make_damage(bad.path)
    damaged = []
    with caplog.at_level(logging.WARNING, logger="normexp"):
        df = collect_runs(store, "exp", damaged)
    assert list(df["run_key"]) == [good.key]
    (d,) = damaged
    assert (d.experiment, d.run_key, d.path) == ("exp", bad.key, bad.path)
    assert any(problem in p for p in d.problems)
    assert f"left out damaged run {bad.path}" in caplog.text
    assert collect_runs(store, "exp")["run_key"].tolist() == [good.key]  # no list: same table


# --- the next job retrains a damaged run ------------------------------------------------

JOB_DAMAGES = (
    "truncated summary",
    "garbage metrics",
    "missing status",
    "metrics short of the summary",
)


@pytest.mark.parametrize("damage", JOB_DAMAGES)
def test_the_next_job_retrains_a_damaged_finished_run(tmp_path, smoke_cfg, damage, caplog):
    cfg = smoke_cfg("tracking.mode=disabled", "train.epochs=2")
    first = run_job(cfg)
    assert first["status"] == "ok"
    (run,) = (tmp_path / "res" / "smoke" / "runs" / "adhoc").iterdir()
    record = RunRecord(tmp_path / "res" / "smoke", "adhoc", run.name)
    assert record.is_finished() and run_job(cfg) is None  # intact: skipped
    make_damage, problem = DAMAGES[damage]
    make_damage(run)
    assert not record.is_finished()
    with caplog.at_level(logging.WARNING, logger="normexp"):
        again = run_job(cfg)
    assert again is not None and again["status"] == "ok" and again["epochs"] == 2
    assert f"retraining damaged run {run}" in caplog.text and problem in caplog.text
    assert record.check() == [] and record.is_finished()
    assert [m["epoch"] for m in record.metrics()] == [1, 2]
    assert run_job(cfg) is None  # repaired: skipped again


# --- stale locks -------------------------------------------------------------------------


def dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(proc.stdout)


def test_stale_lock_of_a_dead_process_here_is_removed(tmp_path, caplog):
    record = finished(tmp_path, "k1")
    lock = record.path / "run.lock"
    pid = dead_pid()
    lock.write_text(f"{socket.gethostname()} {pid}\n")
    with caplog.at_level(logging.WARNING, logger="normexp"):
        assert record.remove_stale_lock()
    assert not lock.exists()
    assert f"removed the stale lock of {record.path}" in caplog.text and str(pid) in caplog.text
    assert not record.remove_stale_lock()  # no lock: nothing to do


@pytest.mark.parametrize(
    "owner",
    ["live", "another host", "unreadable"],
)
def test_other_locks_are_respected(tmp_path, owner):
    record = finished(tmp_path, "k1")
    lock = record.path / "run.lock"
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        text = {
            "live": f"{socket.gethostname()} {proc.pid}\n",
            "another host": f"not-{socket.gethostname()} {dead_pid()}\n",
            "unreadable": "",  # maybe being written by the process that just created it
        }[owner]
        lock.write_text(text)
        assert not record.remove_stale_lock()
        assert lock.read_text() == text
    finally:
        proc.kill()
        proc.wait()


def test_a_job_removes_the_stale_lock_of_a_finished_run(tmp_path, smoke_cfg):
    cfg = smoke_cfg("tracking.mode=disabled")
    assert run_job(cfg)["status"] == "ok"
    (run,) = (tmp_path / "res" / "smoke" / "runs" / "adhoc").iterdir()
    lock = run / "run.lock"
    lock.write_text(f"{socket.gethostname()} {dead_pid()}\n")  # a job killed outright
    assert run_job(cfg) is None  # finished: skipped
    assert not lock.exists()
    lock.write_text(f"{socket.gethostname()} {os.getpid()}\n")  # a live holder
    assert run_job(cfg) is None
    assert lock.exists()


def test_a_damaged_run_locked_by_a_live_process_is_left_to_it(tmp_path, smoke_cfg):
    cfg = smoke_cfg("tracking.mode=disabled")
    assert run_job(cfg)["status"] == "ok"
    (run,) = (tmp_path / "res" / "smoke" / "runs" / "adhoc").iterdir()
    truncate(run / "summary.json")
    (run / "run.lock").write_text(f"{socket.gethostname()} {os.getpid()}\n")
    assert run_job(cfg) is None  # RunLocked: skipped, nothing rewritten
    record = RunRecord(tmp_path / "res" / "smoke", "adhoc", run.name)
    assert "unreadable JSON" in " ".join(record.check())


# --- verdicts and the report ---------------------------------------------------------------

EXPERIMENTS = (
    "bn_small_batch",
    "bn_small_batch_devices",
    "bn_small_batch_remedies",
    "bn_generation",
    "rnn_norm",
)


def committed_store(dest: Path, leave_out: tuple[Path, ...] = ()) -> Path:
    """A copy of the committed runs of EXPERIMENTS (without `leave_out`, relative paths)."""
    for experiment in EXPERIMENTS:
        shutil.copytree(COMMITTED / "runs" / experiment, dest / "runs" / experiment)
    for folder in leave_out:
        shutil.rmtree(dest / folder)
    return dest


def committed_run(experiment: str, norm: str | None = None, batch: int | None = None) -> Path:
    """The lowest-seed ok run of the committed store (of this norm and batch size, if given)."""
    found = []
    for folder in (COMMITTED / "runs" / experiment).iterdir():
        if not folder.is_dir():  # selection.json
            continue
        config = json.loads((folder / "config.json").read_text())
        if json.loads((folder / "status.json").read_text())["status"] == "ok" and (
            norm is None or (config["norm"]["name"], config["train"]["batch_size"]) == (norm, batch)
        ):
            found.append((config["seed"], folder.name))
    return Path("runs", experiment, min(found)[1])


@pytest.mark.skipif(
    not (COMMITTED / "runs" / "rnn_norm").is_dir(), reason="no committed store"
)
def test_verdicts_with_a_damaged_run_equal_those_without_it(tmp_path):
    # Kept with empty summary fields, as the store used to, this run moved C4's verdict.
    bad_summary = committed_run("bn_small_batch", "batch", 2)  # C4, C5, C8, C11 read it
    bad_metrics = committed_run("rnn_norm")  # C7 draws its epoch curves from metrics.jsonl
    damaged_store = committed_store(profile_dir(tmp_path / "damaged", RECORD_PROFILE))
    truncate(damaged_store / bad_summary / "summary.json")
    (damaged_store / bad_metrics / "metrics.jsonl").write_text("\x00garbage\n")
    without = committed_store(
        profile_dir(tmp_path / "without", RECORD_PROFILE), (bad_summary, bad_metrics)
    )

    def tables(results: Path) -> tuple[dict, list]:
        damaged = []
        read = {e for a in load_analyses() for e in a.reads}  # some not in the store: empty
        return {e: collect_runs(results, e, damaged) for e in {*EXPERIMENTS, *read}}, damaged

    with_damage, damaged = tables(damaged_store)
    clean, none = tables(without)
    touched = [a for a in load_analyses() if {"bn_small_batch", "rnn_norm"} & set(a.reads)]
    assert {a.claim for a in touched} >= {"C4", "C5", "C7", "C11"}
    for analysis in touched:
        mine = {e: with_damage[e] for e in analysis.reads}
        verdict = analysis.verdict(mine)
        assert verdict == analysis.verdict({e: clean[e] for e in analysis.reads}), analysis.claim
        assert "nan" not in json.dumps(verdict).lower(), analysis.claim
    assert none == []
    assert sorted(str(d.path.relative_to(damaged_store)) for d in damaged) == sorted(
        str(p) for p in (bad_summary, bad_metrics)
    )
    rnn = next(a for a in touched if a.name == "rnn_norm")
    figure = rnn.draw({"rnn_norm": with_damage["rnn_norm"]}, damaged_store / "figures" / "c7.png")
    assert figure.stat().st_size > 10_000  # drawn, the damaged run's metrics never read


def test_make_figures_names_damaged_runs_and_never_uses_them(tmp_path, capsys):
    results = profile_dir(tmp_path / "results", "smoke")
    good = finished(results, "a_good")
    bad = finished(results, "b_bad")
    (bad.path / "metrics.jsonl").write_text("garbage\n")
    capsys.readouterr()
    verdicts = write_figures_and_verdicts(results, wandb_mode="disabled")
    assert "1 damaged run(s) left out" in capsys.readouterr().out
    md = (results / "REPORT.md").read_text()
    page = (results / "report.html").read_text()
    collected = (results / "collected" / "exp.csv").read_text()
    assert good.key in collected and bad.key not in collected
    shutil.rmtree(bad.path)
    assert write_figures_and_verdicts(results, wandb_mode="disabled") == verdicts
    without_md = (results / "REPORT.md").read_text()
    assert "Damaged runs" not in without_md  # a clean store: no section
    section = md.removeprefix(without_md)  # the report without the run, then the section
    assert section.startswith("\n## Damaged runs (left out)\n\n1 run of the store failed")
    assert "| `exp` | no claim | `b_bad` | metrics.jsonl line 1: not JSON |" in section
    without_page = (results / "report.html").read_text()
    assert "Damaged runs" not in without_page
    # the section closes the page, and its contents link it
    assert page.split('<nav id="contents"')[0] == without_page.split('<nav id="contents"')[0]
    assert page.index('<h2 id="damaged">Damaged runs (left out)</h2>') > page.index("</pre>")
    assert page.rstrip().endswith("</table></body>\n</html>") and "b_bad" in page
    assert 'href="#damaged"' in page and 'href="#damaged"' not in without_page


def test_a_sweep_counts_a_run_still_damaged_at_its_end_as_not_done(tmp_path, capsys):
    from normexp.sweep import SweepCallback

    callback = SweepCallback()
    callback.records = [finished(tmp_path, "a_ok"), finished(tmp_path, "b_bad")]
    truncate(callback.records[1].path / "summary.json")  # e.g. skipped: locked elsewhere
    with pytest.raises(SystemExit) as info:
        callback.on_multirun_end(None)
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "1 damaged, 1 ok" in err and "some runs did not finish" in err
