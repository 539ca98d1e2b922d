"""One job: the store decides; a full disk is one clear line; W&B failing never loses a result."""

import errno
import json
from dataclasses import replace
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

import normexp
from normexp.errors import StoreError, one_line_errors
from normexp.job import run_job
from normexp.tracking import store

CONFIGS = str(Path(normexp.__file__).resolve().parent.parent / "configs")


def job_config(tmp_path, cifar_data, *overrides, hydra_node=False):
    # composed here, not by smoke_cfg: this one may need the hydra node
    data_dir, extra = cifar_data
    with initialize_config_dir(config_dir=CONFIGS, version_base="1.3"):
        return compose(
            "config",
            return_hydra_config=hydra_node,
            overrides=[
                "profile=smoke",
                f"paths.data_dir={data_dir}",
                f"paths.results_dir={tmp_path / 'res'}",
                "runtime.progress=false",
                *extra,
                *overrides,
            ],
        )


def run_dirs(tmp_path):
    return list((tmp_path / "res" / "smoke" / "runs" / "adhoc").glob("*"))


def test_disk_full_is_one_line_naming_the_results_dir(tmp_path, smoke_cfg, monkeypatch, capsys):
    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(store, "atomic_write_text", full)
    cfg = smoke_cfg("tracking.mode=disabled")
    with pytest.raises(SystemExit) as info, one_line_errors():
        run_job(cfg)
    assert info.value.code == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and line.startswith("normexp: error: paths.results_dir: cannot write")
    assert "No space left on device" in line
    # In a sweep the job logs it and returns, so the sweep's closing count shows it as not run.
    assert run_job(cfg, in_sweep=True) is None
    with pytest.raises(StoreError):
        run_job(cfg)


def test_wandb_failing_to_start_keeps_the_local_result(tmp_path, smoke_cfg, monkeypatch):
    import wandb

    def broken_init(*args, **kwargs):
        raise RuntimeError("wandb: network is unreachable")

    monkeypatch.setattr(wandb, "init", broken_init)
    summary = run_job(smoke_cfg("tracking.mode=online"))
    assert summary is not None and summary["status"] == "ok"
    assert "network is unreachable" in summary["wandb_error"]
    (run,) = run_dirs(tmp_path)
    assert json.loads((run / "status.json").read_text())["status"] == "ok"
    assert "wandb_error" in json.loads((run / "summary.json").read_text())


def test_finished_run_is_skipped_and_diverged_run_is_kept(tmp_path, smoke_cfg):
    cfg = smoke_cfg(
        "tracking.mode=disabled",
        "norm=none",
        "optim.lr_per_128=1e6",
        "optim.warmup_frac=0",
        "train.epochs=2",
    )
    summary = run_job(cfg)
    assert summary["status"] == "diverged"
    (run,) = run_dirs(tmp_path)
    status = json.loads((run / "status.json").read_text())
    assert status["status"] == "diverged" and "non-finite" in status["error"]
    assert not (run / "checkpoint.pt").exists()
    assert run_job(cfg) is None  # diverged counts as finished: never trained again


def test_a_single_run_that_fails_is_recorded_then_exits_1(tmp_path, cifar_data, monkeypatch):
    from hydra.core.hydra_config import HydraConfig

    from normexp import run, tasks

    def broken_train(*args, **kwargs):
        raise RuntimeError("a bug in training")

    task = tasks.get_task("classification")
    monkeypatch.setitem(tasks.all_tasks(), "classification", replace(task, train=broken_train))
    cfg = job_config(tmp_path, cifar_data, "tracking.mode=disabled", hydra_node=True)
    HydraConfig.instance().set_config(cfg)
    with pytest.raises(SystemExit) as info:
        run.main.__wrapped__(cfg)
    assert info.value.code == 1
    (run_dir,) = run_dirs(tmp_path)
    status = json.loads((run_dir / "status.json").read_text())
    assert status["status"] == "failed" and "a bug in training" in status["error"]


def test_a_runs_line_shows_its_test_metric_and_a_selection_run_the_one_it_is_read_on():
    from normexp.job import headline_metric

    summary = {"train_acc": 0.9, "val_acc": 0.7}
    record = {"protocol": {"stage": "record", "select_on": "train_acc"}}
    assert headline_metric(record, {**summary, "test_acc": 0.6}) == "test_acc"
    assert headline_metric(record, summary) == "val_acc"  # no test set: the validation metric
    for select_on in ("train_acc", "val_acc"):  # C9 selects on training accuracy, others on val
        selection = {"protocol": {"stage": "select", "select_on": select_on}}
        assert headline_metric(selection, summary) == select_on
    assert headline_metric({}, {"epochs": 1}) is None
