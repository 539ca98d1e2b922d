"""The console and CLI of a sweep: a finished sweep decided from the store, the sweep bar, log
lines above it, its ETA, per-run bar rows, the suite's --help."""

import contextlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import hydra
import pytest
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from omegaconf import OmegaConf

import normexp
import normexp.console as console
import normexp.run as run_module
import normexp.sweep as sweep_module
from normexp import stopping
from normexp.console import ProgressSlot, SweepProgress, launcher_workers, log_above_bars
from normexp.sweep import compose_jobs, sweep_overrides
from normexp.tracking.store import RunRecord, atomic_write_json, record_of, run_key
from normexp.validate import resolve_config

REPO = Path(normexp.__file__).resolve().parent.parent
EXPERIMENTS = sorted(p.stem for p in (REPO / "experiments").glob("*.yaml"))
SWEEP = ["norm=batch,group", "seed=0,1", "profile=smoke", "tracking.mode=disabled"]


@pytest.fixture(autouse=True)
def _results_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMEXP_RESULTS_DIR", str(tmp_path / "results"))


# --- composing a sweep's jobs once per group choice ---------------------------------------


def _multirun_config(overrides: list[str]):
    return GlobalHydra.instance().hydra.compose_config(
        "config", overrides, run_mode=RunMode.MULTIRUN
    )


@pytest.mark.parametrize(
    "overrides",
    [[f"experiment={e}", "profile=smoke"] for e in EXPERIMENTS]
    + [SWEEP, ["model=cnn,mlp", "norm.position=pre,post", "train.batch_size=8"]],
    ids=[*EXPERIMENTS, "cli_grid", "cli_groups"],
)
def test_jobs_composed_once_per_group_choice_equal_hydras_own(overrides):
    """The fast composition must give each job exactly the config Hydra's own gives it (the
    run key decides what is skipped; the launcher's workers run it): compared with Hydra's
    load_sweep_config node for node, hydra's record of the overrides included, unresolved and
    resolved, on the first, middle and last job of every experiment and two command-line grids."""
    with hydra.initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = _multirun_config(overrides)
        jobs = sweep_overrides(cfg)
        picked = sorted({0, len(jobs) // 2, len(jobs) - 1})
        fast = compose_jobs(cfg, [jobs[i] for i in picked])
        loader = GlobalHydra.instance().config_loader()
        for i, job in zip(picked, fast, strict=True):
            slow = loader.load_sweep_config(master_config=cfg, sweep_overrides=jobs[i])
            raw = OmegaConf.to_container(job, resolve=False)
            assert raw == OmegaConf.to_container(slow, resolve=False), jobs[i]
            assert OmegaConf.is_struct(job) and not OmegaConf.is_readonly(job.hydra)
            assert resolve_config(job) == resolve_config(slow), jobs[i]


def test_an_edited_config_file_is_read_afresh_by_the_next_composer(tmp_path):
    """Composers over the same files share their compositions in a process; one made after a
    file changed reads it again."""
    (tmp_path / "g").mkdir()
    (tmp_path / "config.yaml").write_text("defaults:\n  - g: x\n  - _self_\nseed: 0\n")
    option = tmp_path / "g" / "x.yaml"
    option.write_text("v: 1\n")
    with hydra.initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
        cfg = _multirun_config(["seed=0,1"])
        assert [job.g.v for job in compose_jobs(cfg, [["g=x", "seed=1"]])] == [1]
        option.write_text("v: 22\n")  # another size, whatever the clock's resolution
        assert [job.g.v for job in compose_jobs(cfg, [["g=x", "seed=1"]])] == [22]


# --- a finished sweep is decided in this process -----------------------------------------


def _fake_job(calls: list):
    """Stands in for run_job: records the call and leaves the run finished in the store."""

    def run_job(cfg, row, in_sweep=False):
        config = resolve_config(cfg)
        calls.append(config["seed"])
        key = run_key(config)
        record = record_of(config)
        if record.is_finished():
            return None
        record.start(config)
        record.append_metrics({"epoch": 1, "val_acc": 0.5})
        record.finish("ok", {"epochs": 1, "status": "ok", "run_key": key})
        return {"status": "ok"}

    return run_job


def _sweep_in_process(tmp_path: Path, monkeypatch, name: str) -> int:
    """The command, run in this process with Hydra's basic launcher (jobs in this process too,
    so a launched job would call the patched run_job); returns the exit code."""
    argv = [run_module.__file__, "-m", *SWEEP, "hydra/launcher=basic"]
    argv += [f"hydra.sweep.dir={tmp_path / name}", "hydra/job_logging=none"]
    argv += ["hydra/hydra_logging=none"]
    monkeypatch.setattr(sys, "argv", argv)
    # run.main as cli() runs it, with the config folder given as a path (Hydra finds it from
    # the module's name otherwise, which works only as `python -m`).
    main = hydra.main(version_base="1.3", config_path=str(REPO / "configs"), config_name="config")
    try:
        run_module.preflight(argv[1:])
        main(run_module.main.__wrapped__)()
    except SystemExit as exc:
        return exc.code or 0
    finally:
        GlobalHydra.instance().clear()
    return 0


@pytest.fixture
def fake_jobs(monkeypatch):
    calls: list = []
    monkeypatch.setattr(run_module, "run_job", _fake_job(calls))
    monkeypatch.setattr(sweep_module, "prepare_data", lambda config: calls.append("data"))
    bars: list = []  # per sweep: its bar's first count, (runs, finished before)
    real_bar, real_count, real_jobs = (
        sweep_module.sweep_bar, sweep_module.count, sweep_module.protocol_jobs
    )

    def sweep_bar(total=None, initial=0):
        calls.append("bar")
        bars.append(None)
        return real_bar(total, initial)

    def count(bar, total, done, eta, running=None):
        if bars[-1] is None:
            bars[-1] = (total, done)
        return real_count(bar, total, done, eta, running)

    def protocol_jobs(config, records):
        calls.append("jobs composed")
        return real_jobs(config, records)

    monkeypatch.setattr(sweep_module, "sweep_bar", sweep_bar)
    monkeypatch.setattr(sweep_module, "count", count)
    monkeypatch.setattr(sweep_module, "protocol_jobs", protocol_jobs)
    return calls, bars


def _ran(calls: list) -> list:
    """The seeds of the jobs that ran, from ``fake_jobs``' calls."""
    return [c for c in calls if isinstance(c, int)]


def test_a_finished_sweep_starts_no_job_and_a_partial_one_does(
    tmp_path, monkeypatch, capsys, fake_jobs
):
    calls, bars = fake_jobs
    assert _sweep_in_process(tmp_path, monkeypatch, "first") == 0
    assert sorted(_ran(calls)) == [0, 0, 1, 1] and "data" in calls
    # the bar is up before the jobs are composed and checked, counting from 0 of 4
    assert calls.index("bar") < calls.index("jobs composed") and bars == [(4, 0)]
    capsys.readouterr()

    calls.clear()
    assert _sweep_in_process(tmp_path, monkeypatch, "second") == 0
    err = capsys.readouterr().err
    assert _ran(calls) == [] and "data" not in calls  # no job ran, no data was prepared
    assert bars[-1] == (4, 4)  # its bar says so
    assert "sweep of 4 runs (4 finished before, skipped)" in err
    assert "all 4 were finished already, so no job was started" in err
    sittings = (tmp_path / "results" / "smoke" / "sweeps.jsonl").read_text().splitlines()
    assert len(sittings) == 2 and '"skipped": 4' in sittings[1]

    # One run gone (or damaged): the sweep launches, its bar starting at the other three.
    runs = sorted((tmp_path / "results" / "smoke" / "runs" / "adhoc").iterdir())
    (runs[0] / "status.json").unlink()
    assert _sweep_in_process(tmp_path, monkeypatch, "third") == 0
    assert len(_ran(calls)) == 4 and "data" in calls
    assert bars[-1] == (4, 3)
    assert "sweep of 4 runs (3 finished before, skipped)" in capsys.readouterr().err


class Exited(BaseException):
    """stopping.exit_now, in this process: the exit status, without leaving pytest."""


def _stopped_sweep(tmp_path, monkeypatch, fake_jobs, stop) -> tuple[list, Path, list]:
    """A sweep of 4 runs whose third job calls ``stop()``; returns the exit hooks it
    registered, its sweeps.jsonl and the exit statuses a stop asked for."""
    calls, _ = fake_jobs
    finish = run_module.run_job

    def third_stops(cfg, row, in_sweep=False):
        if len(_ran(calls)) == 2:
            stop()
        return finish(cfg, row, in_sweep)

    exits: list = []

    def exit_now(code):
        exits.append(code)
        raise Exited

    monkeypatch.setattr(run_module, "run_job", third_stops)
    monkeypatch.setattr(stopping, "exit_now", exit_now)
    monkeypatch.setattr(stopping, "stop_children", lambda: None)  # pytest's own stay
    at_exit: list = []
    fake_atexit = SimpleNamespace(register=at_exit.append, unregister=lambda f: None)
    monkeypatch.setattr(sweep_module, "atexit", fake_atexit)
    with contextlib.suppress(Exited, KeyboardInterrupt):
        _sweep_in_process(tmp_path, monkeypatch, "stopped")
    for signum in stopping.STOP_SIGNALS:  # stop() ignored them: pytest's Ctrl-C comes back
        signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else 0)
    monkeypatch.setattr(run_module, "run_job", finish)
    return at_exit, tmp_path / "results" / "smoke" / "sweeps.jsonl", exits


def test_a_sigterm_stops_the_sweep_which_writes_its_line_marked_interrupted(
    tmp_path, monkeypatch, capsys, fake_jobs
):
    """SIGTERM in the middle of a sweep: the stop writes the sitting with its counts so far and
    exits 143 at once; the exit hook for errors, called after, adds nothing."""
    at_exit, sittings, exits = _stopped_sweep(
        tmp_path, monkeypatch, fake_jobs, lambda: stopping.stop(signal.SIGTERM)
    )
    assert exits == [143] and len(at_exit) == 1
    at_exit[0]()  # a second exit path: one line only
    [line] = [json.loads(s) for s in sittings.read_text().splitlines()]
    assert line["interrupted"] is True and "aborted" not in line and line["runs"] == 4
    assert line["counts"] == {"ok": 2, "not run": 2}
    assert "interrupted (rerun the same command to resume)" in capsys.readouterr().err

    # The resumed sitting runs the other two and ends normally: no mark.
    assert _sweep_in_process(tmp_path, monkeypatch, "resumed") == 0
    assert len(at_exit) == 2
    at_exit[1]()  # unregistered in a real exit; a call changes nothing
    lines = [json.loads(s) for s in sittings.read_text().splitlines()]
    assert len(lines) == 2 and lines[1]["skipped"] == 2
    assert not {"interrupted", "aborted"} & set(lines[1])


def test_a_sweep_ended_by_an_error_is_marked_aborted_not_interrupted(
    tmp_path, monkeypatch, capsys, fake_jobs
):
    def crash():
        raise KeyboardInterrupt  # not a stop: as any error that unwinds the sweep

    at_exit, sittings, exits = _stopped_sweep(tmp_path, monkeypatch, fake_jobs, crash)
    assert exits == []
    at_exit[0]()
    [line] = [json.loads(s) for s in sittings.read_text().splitlines()]
    assert line["aborted"] is True and "interrupted" not in line
    assert "aborted (rerun the same command to resume)" in capsys.readouterr().err


# --- the sweep bar's count and ETA ---------------------------------------------------------


def _ended(results: Path, key: str, status: str, began: float, ended: float) -> RunRecord:
    record = RunRecord(results, "exp", key)
    record.start({"seed": 0, "claim": {"name": "exp"}})
    record.append_metrics({"epoch": 1})
    record.finish(status, {"epochs": 1, "status": status, "run_key": key})
    atomic_write_json(record.path / "status.json", {"status": status, "time": ended})
    os.utime(record.path / "config.json", (began, began))
    return record


def test_eta_is_unknown_until_a_run_of_this_sitting_ends_then_from_their_times(tmp_path):
    start = time.time() - 1000
    before = [_ended(tmp_path, k, "ok", start - 90, start - 50) for k in ("a", "b")]
    waiting = [RunRecord(tmp_path, "exp", k) for k in ("e", "f", "g")]
    progress = SweepProgress([*before, *waiting], workers=2, start=start)
    assert progress.scan() == (2, None, 0)  # runs finished before this sitting say nothing

    this_sitting = [
        _ended(tmp_path, "c", "ok", start + 100, start + 130),  # 30 s
        _ended(tmp_path, "d", "failed", start + 100, start + 110),  # 10 s, failed: counted
    ]
    running = RunRecord(tmp_path, "exp", "e")
    running.start({"seed": 0, "claim": {"name": "exp"}})  # started in this sitting
    stale = RunRecord(tmp_path, "exp", "f")
    stale.start({"seed": 1, "claim": {"name": "exp"}})
    atomic_write_json(stale.path / "status.json", {"status": "running", "time": start - 10})
    progress = SweepProgress([*before, *this_sitting, *waiting], workers=2, start=start)
    done, eta, now_running = progress.scan()
    assert done == 4
    assert eta == pytest.approx(20 * 2)  # mean 20 s x ceil(3 left / 2 workers)
    assert now_running == 1  # a run left "running" by a killed sitting is not running now


def test_a_run_that_failed_before_this_sitting_is_not_counted_as_settled(tmp_path):
    start = time.time()
    old = _ended(tmp_path, "a", "failed", start - 100, start - 50)
    assert SweepProgress([old], workers=1, start=start).scan() == (0, None, 0)


def test_the_bar_shows_the_runs_finished_before_from_its_first_draw():
    stream = io.StringIO()
    bar = console.tqdm(total=5, initial=3, file=stream, bar_format=console.BAR_FORMAT)
    bar.set_postfix_str(console.format_eta(None), refresh=True)
    assert "3/5 runs" in stream.getvalue() and "eta ?" in stream.getvalue()
    bar.close()
    assert console.format_eta(75) == "eta 01:15"


def test_workers_of_each_launcher():
    assert launcher_workers({"n_jobs": 2}, 10) == 2
    assert launcher_workers({"n_jobs": -1}, 10) == os.cpu_count()
    assert launcher_workers({"array_parallelism": 64}, 10) == 10
    assert launcher_workers({}, 7) == 7


# --- log lines above the bars --------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_console_log_lines_go_through_tqdm_and_clear_the_bar_row(monkeypatch, tmp_path):
    logger = logging.getLogger("normexp.test_console")
    logger.propagate = False
    terminal = _Terminal()
    console_handler = logging.StreamHandler(terminal)
    monkeypatch.setattr(sys, "stderr", terminal)  # the stream a console handler writes to
    file_handler = logging.FileHandler(tmp_path / "job.log")
    logger.handlers = [console_handler, file_handler]
    try:
        log_above_bars(logger)
        swapped = logger.handlers[0]
        assert isinstance(swapped, console.TqdmLogHandler) and logger.handlers[1] is file_handler
        written = []
        monkeypatch.setattr(console.tqdm, "write", lambda s, file=None: written.append(s))
        logger.warning("two\nlines")
        # every line clears its row first, and the rest of the row it wraps onto after
        assert written == ["\r\x1b[Ktwo\x1b[K\n\r\x1b[Klines\x1b[K"]
        assert "two\nlines" in (tmp_path / "job.log").read_text()
    finally:
        logger.handlers = []
        file_handler.close()


def test_a_log_line_is_written_above_a_bar_of_this_process():
    stream = io.StringIO()
    logger = logging.getLogger("normexp.test_console_bar")
    logger.propagate = False
    logger.handlers = [console.TqdmLogHandler(stream)]
    bar = console.tqdm(total=3, file=stream, desc="run", mininterval=0)
    try:
        bar.update(1)
        before = len(stream.getvalue())
        logger.warning("a log line")
        after = stream.getvalue()[before:]
        # tqdm.write clears the bar, writes the line, then draws the bar again below it.
        assert after.index("a log line\n") < after.rindex("run:")
    finally:
        bar.close()
        logger.handlers = []


@pytest.fixture
def restored_logging():
    """The root's and the launchers' loggers as they were, after a test applies Hydra's."""
    names = ("", "hydra_plugins.hydra_joblib_launcher", "hydra_plugins.hydra_submitit_launcher")
    loggers = [logging.getLogger(n) for n in names]
    saved = [(lg.handlers[:], lg.level, lg.propagate) for lg in loggers]
    yield
    for lg, (handlers, level, propagate) in zip(loggers, saved, strict=True):
        for handler in lg.handlers:
            if handler not in handlers:
                handler.close()
        lg.handlers, lg.level, lg.propagate = handlers, level, propagate


def test_launch_lines_go_to_the_sweeps_log_file_not_the_terminal(tmp_path, restored_logging):
    """The launchers log a line per launched job (hundreds at standard): the suite's Hydra
    logging (configs/hydra/hydra_logging/normexp.yaml, applied again at every launch round)
    puts them in <sweep dir>/sweep.log; other lines stay on the terminal, through tqdm."""
    from hydra.core.utils import configure_log

    sweep_dir = tmp_path / "sweep"
    with hydra.initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        cfg = _multirun_config([f"hydra.sweep.dir={sweep_dir}", *SWEEP])
    terminal = _Terminal()
    with contextlib.redirect_stdout(terminal):
        for _ in range(2):  # each launch round applies it
            configure_log(cfg.hydra.hydra_logging, cfg.hydra.verbose)
        assert not sweep_dir.exists()  # made at the first launch line: a single run makes none
        root = logging.getLogger()
        assert [type(h) for h in root.handlers] == [console.TqdmLogHandler]
        for launcher in ("hydra_joblib_launcher._core", "hydra_submitit_launcher.x"):
            logging.getLogger(f"hydra_plugins.{launcher}").info("\t#7 : norm=group seed=1")
        logging.getLogger("normexp.sweep_test").info("normexp: a line for the terminal")
    assert "#7" not in terminal.getvalue() and "a line for the terminal" in terminal.getvalue()
    assert (sweep_dir / "sweep.log").read_text().count("#7 : norm=group seed=1") == 2


# --- per-run bar rows ----------------------------------------------------------------------


def test_progress_rows_go_to_the_lowest_free_row_and_come_back(tmp_path):
    with ProgressSlot(tmp_path, 2) as first, ProgressSlot(tmp_path, 2) as second:
        assert (first, second) == (1, 2)
        with ProgressSlot(tmp_path, 2) as third:
            assert third == 2  # more jobs than rows (never with joblib): the last row
    with ProgressSlot(tmp_path, 2) as again:
        assert again == 1
    with ProgressSlot(None, 4) as no_terminal:
        assert no_terminal == 1


# --- --help --------------------------------------------------------------------------------


def test_help_is_the_suites_own_and_lists_every_experiment():
    out = subprocess.run(
        [sys.executable, "-m", "normexp.run", "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.startswith("normexp: tests claims about normalization")
    for section in ("Usage:", "== Profiles", "== Experiments", "== Examples", "== Config groups"):
        assert section in text, section
    for profile in ("smoke", "quick", "paper"):
        assert f"\n  {profile} " in text
    assert "-m (--multirun)" in text and "make run-sweep" in text and "README.md" in text
    assert "--hydra-help" in text and "$NORMEXP_DATA_DIR" in text
    listed = text.split("== Experiments")[1].split("== Examples")[0]
    for name in EXPERIMENTS:
        assert f"\n  {name} " in listed, name
