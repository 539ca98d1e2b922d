"""Launchers beyond the local default: SLURM through submitit (its sbatch file, without a
cluster), the same submitit code path on this machine (hydra/launcher=slurm_local), and the
GPU options of a run (bf16 autocast, deterministic cuDNN) as far as a CPU can check them."""

import json
import os
import pickle
import threading
from pathlib import Path

import hydra
import pytest
import torch
from hydra.utils import instantiate

import normexp
from normexp.errors import ConfigError
from normexp.run import preflight
from normexp.sweep import SweepCallback
from normexp.train.device import autocast, check_amp, seed_everything
from tests.helpers import run_cli

CONFIG_DIR = Path(normexp.__file__).parent.parent / "configs"


@pytest.fixture
def compose(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMEXP_RESULTS_DIR", str(tmp_path / "results"))
    with hydra.initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        yield lambda *o: hydra.compose("config", overrides=list(o), return_hydra_config=True)


# --- SLURM: the sbatch file submitit would submit ---------------------------------------


class _Submitted(Exception):
    """Raised instead of calling sbatch."""


def sbatch_text(cfg, monkeypatch, n_jobs: int = 3) -> str:
    """The launcher's own launch(), stopped where submitit would call sbatch: the sbatch file
    of the job array, from the real parameter mapping of hydra-submitit-launcher and submitit."""
    import submitit
    from submitit.slurm.slurm import SlurmExecutor

    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # no srun here
    captured = {}

    def map_array(self, fn, *args):
        captured["executor"] = self._executor
        raise _Submitted

    monkeypatch.setattr(submitit.AutoExecutor, "map_array", map_array)
    launcher = instantiate(cfg.hydra.launcher)
    launcher.config = cfg
    with pytest.raises(_Submitted):
        launcher.launch([[f"seed={i}"] for i in range(n_jobs)], initial_job_idx=0)
    executor = captured["executor"]
    executor.parameters["map_count"] = n_jobs  # as submitit sets it for an array
    return executor._make_submission_file_text("python -u -m submitit.core._submit x", "uid")


def test_slurm_launcher_writes_an_sbatch_array_from_the_config(compose, tmp_path, monkeypatch):
    cfg = compose(
        "experiment=bn_small_batch",
        "profile=paper",
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        "hydra.launcher.array_parallelism=8",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    lines = set(sbatch_text(cfg, monkeypatch, n_jobs=10).splitlines())
    for flag in (
        "--partition=gpu",
        "--gpus-per-node=1",
        "--cpus-per-task=1",  # runtime.threads
        "--time=720",
        "--mem=16GB",
        "--job-name=normexp-bn_small_batch",
        "--array=0-9%8",  # array_parallelism
        "--signal=USR2@120",
    ):
        assert f"#SBATCH {flag}" in lines, (flag, sorted(lines))
    assert (tmp_path / "sweep").is_dir()


def test_slurm_cpu_partition_follows_runtime_threads(compose, tmp_path, monkeypatch):
    cfg = compose(
        "hydra/launcher=slurm",
        "hydra.launcher.gpus_per_node=null",
        "runtime.threads=4",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    )
    text = sbatch_text(cfg, monkeypatch, n_jobs=1)
    assert "#SBATCH --cpus-per-task=4" in text
    assert "gpus" not in text and "--partition" not in text  # cluster defaults


@pytest.mark.parametrize("launcher", ["slurm", "slurm_local", "local"])
def test_preflight_accepts_launcher_choices_and_their_fields(launcher):
    preflight(["-m", "profile=smoke", f"hydra/launcher={launcher}", "norm=batch,group"])


def test_preflight_refuses_a_misspelt_launcher_field_in_one_line():
    argv = ["-m", "hydra/launcher=slurm", "hydra.launcher.partiton=gpu"]
    with pytest.raises(ConfigError, match=r"^hydra\.launcher\.partiton: no such setting"):
        preflight(argv)


# --- the sweep callback across processes ------------------------------------------------


def test_sweep_callback_pickles_without_its_progress_thread():
    callback = SweepCallback()
    callback.watcher = threading.Thread(target=callback.stop.wait, daemon=True)
    callback.watcher.start()
    try:
        copy = pickle.loads(pickle.dumps(callback))
        assert copy.watcher is None and copy.records == [] and copy.start == callback.start
        assert callback.watcher.is_alive()  # the parent's bar keeps running
    finally:
        callback.stop.set()
        callback.watcher.join()


@pytest.mark.slow
def test_submitit_sweep_writes_the_store_then_skips_everything(tmp_path, cifar_data):
    """The SLURM code path on this machine: jobs pickled by hydra-submitit-launcher, each run
    in its own process by submitit's local executor; the callback stays in the parent."""
    data_dir, extra = cifar_data

    def sweep(name: str):
        return run_cli(
            [
                "normexp.run",
                "-m",
                "experiment=bn_small_batch",
                "profile=smoke",
                "hydra/launcher=slurm_local",
                "norm=batch",
                "train.batch_size=8",  # one run: each is a process of its own (torch)
                "tracking.mode=disabled",
                "runtime.progress=false",
                f"hydra.sweep.dir={tmp_path / name}",
                *extra,
            ],
            tmp_path / "results",
            data_dir,
        )

    first = sweep("first")
    assert first.returncode == 0, first.stderr[-3000:]
    assert "normexp: sweep of 1 runs (0 finished before, skipped)" in first.stderr
    assert ": 1 ok; store: " in first.stderr
    runs = sorted((tmp_path / "results" / "smoke" / "runs" / "bn_small_batch").iterdir())
    cells = set()
    for run in runs:
        assert json.loads((run / "status.json").read_text())["status"] == "ok"
        config = json.loads((run / "config.json").read_text())
        cells.add((config["norm"]["name"], config["train"]["batch_size"]))
    assert cells == {("batch", 8)}
    job_logs = list((tmp_path / "first" / ".submitit").glob("*/*_log.out"))
    assert len(job_logs) == 1  # a process of its own, not the parent

    stamps = {run.name: (run / "summary.json").stat().st_mtime_ns for run in runs}
    second = sweep("second")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "normexp: sweep of 1 runs (1 finished before, skipped)" in second.stderr
    assert "so no job was started" in second.stderr  # decided from the store, nothing submitted
    assert not list((tmp_path / "second" / ".submitit").glob("*/*.out"))
    assert {run.name: (run / "summary.json").stat().st_mtime_ns for run in runs} == stamps


# --- GPU options, checked on the CPU ------------------------------------------------------


def test_amp_is_off_by_default_and_refused_with_an_explicit_cpu(compose):
    for train in ("classification", "instrumented"):
        assert compose(f"train={train}").train.amp is False
    check_amp({"amp": True, "device": "auto"})  # no hardware check: a login node has no GPU
    check_amp({"amp": True, "device": "cuda"})
    check_amp({"device": "cpu"})  # a config stored before train.amp existed
    with pytest.raises(ConfigError, match=r"^train\.amp: bf16 autocast is CUDA-only"):
        check_amp({"amp": True, "device": "cpu"})
    with pytest.raises(ConfigError, match=r"^train\.amp: 'yes' is not allowed"):
        check_amp({"amp": "yes", "device": "auto"})


def test_autocast_is_nothing_without_amp_and_refused_on_the_cpu():
    with autocast(torch.device("cpu"), False):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    with pytest.raises(ConfigError, match=r"^train\.amp: .*device is cpu"):
        autocast(torch.device("cpu"), True)


def test_amp_run_without_a_gpu_is_refused_before_training(compose, cifar_data, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible: amp is allowed here")
    from normexp.train.classification import train_classifier
    from normexp.validate import resolve_config

    data_dir, extra = cifar_data
    monkeypatch.setenv("NORMEXP_DATA_DIR", str(data_dir))
    config = resolve_config(compose("profile=smoke", "train.amp=true", *extra))
    epochs = []
    with pytest.raises(ConfigError, match=r"^train\.amp: "):
        train_classifier(config, epochs.append)
    assert epochs == []


@pytest.fixture
def _restore_torch_flags():
    saved = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
    )
    yield
    torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[2:]


@pytest.mark.usefixtures("_restore_torch_flags")
def test_deterministic_turns_cudnn_autotuning_off(monkeypatch):
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")  # recorded, so that teardown restores it
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    seed_everything(0, deterministic=False)
    assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
    seed_everything(0, deterministic=True)
    assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
    assert torch.are_deterministic_algorithms_enabled()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
