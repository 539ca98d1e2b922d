"""Storage faults are one line and lose nothing: a results directory that cannot be created, a
read-only one, and a disk that fills during a run. The last two mount a small tmpfs of their
own (root only; skipped elsewhere)."""

import contextlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from normexp.tracking.store import RunRecord, iter_records
from tests.helpers import Call, run_cli, run_cli_batch

pytestmark = pytest.mark.slow
RUN = ["normexp.run", "profile=smoke", "tracking.mode=disabled", "runtime.progress=false"]
# The jobs in the sweep's own process: the store's faults are the point, not the workers
# (tests/e2e/test_interrupt.py), and each worker is another start of torch.
SWEEP = ["normexp.run", "-m", *RUN[1:], "seed=0,1", "hydra.launcher.n_jobs=1"]
COMMANDS = (RUN, SWEEP)  # each refused the same way, whether a single run or a sweep


def single_error_line(result: subprocess.CompletedProcess, path: Path | str) -> str:
    """The one `normexp: error:` line of a refused command, which names the path."""
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("normexp: error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    assert errors[0].startswith("normexp: error: paths.results_dir: cannot write ")
    assert str(path) in errors[0]
    return errors[0]


@contextlib.contextmanager
def tmpfs(where: Path, size: str, *options: str):
    """A tmpfs of ``size`` mounted at ``where`` for the block; skips the test without root."""
    where.mkdir(parents=True, exist_ok=True)
    mount = ["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs"]
    if shutil.which("mount") is None or subprocess.run([*mount, str(where)]).returncode != 0:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def cli_args(args: list[str], tmp_path: Path, extra: list[str]) -> list[str]:
    hydra_dirs = [f"hydra.run.dir={tmp_path / 'run'}", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    return [*args, *hydra_dirs, *extra]


@pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs Linux's /proc")
def test_a_results_directory_that_cannot_be_created_is_one_line(tmp_path, cifar_data):
    data_dir, extra = cifar_data
    results = Path("/proc/normexp_cannot_be_created")
    # a single run and a sweep, one after the other in one process (tests.helpers.run_cli_batch)
    calls = [Call(cli_args(command, tmp_path, extra), results, data_dir) for command in COMMANDS]
    for result in run_cli_batch(calls):
        single_error_line(result, results)


def test_a_read_only_store_is_one_line_and_its_runs_stay(tmp_path, cifar_data):
    data_dir, extra = cifar_data
    with tmpfs(tmp_path / "store", "8m") as store:
        first = run_cli(cli_args(RUN, tmp_path, extra), store, data_dir)
        assert first.returncode == 0, first.stderr[-3000:]
        subprocess.run(["mount", "-o", "remount,ro", str(store)], check=True)
        calls = [Call(cli_args([*c, "seed=1"], tmp_path, extra), store, data_dir) for c in COMMANDS]
        for result in run_cli_batch(calls):
            assert "read-only" in single_error_line(result, store).lower()
        [record] = iter_records(store / "smoke", "adhoc")
        assert record.is_finished()


def test_a_disk_that_fills_during_a_run_is_one_line_and_a_rerun_finishes_it(tmp_path, cifar_data):
    """The run fails at its first write that finds no room (after it started: the lease and
    its first records fit); the finished run beside it is untouched, no temporary file is left,
    and once space is freed the same command finishes the run."""
    data_dir, extra = cifar_data
    with tmpfs(tmp_path / "store", "2m") as store:
        first = run_cli(cli_args(RUN, tmp_path, extra), store, data_dir)
        assert first.returncode == 0, first.stderr[-3000:]
        [done] = iter_records(store / "smoke", "adhoc")
        before = {p.name: p.read_bytes() for p in done.path.iterdir()}
        free = shutil.disk_usage(store).free
        filler = store / "filler"
        filler.write_bytes(b"\0" * (free - 64 * 1024))  # room to start, none for a checkpoint

        args = cli_args([*RUN, "seed=1"], tmp_path, extra)
        result = run_cli(args, store, data_dir)
        assert "No space left on device" in single_error_line(result, store)
        assert {p.name: p.read_bytes() for p in done.path.iterdir()} == before
        [cut] = [r for r in iter_records(store / "smoke", "adhoc") if r.key != done.key]
        assert json.loads((cut.path / "status.json").read_text())["status"] == "running"
        assert not list(cut.path.glob(".*")) and not (cut.path / "run.lock").exists()

        filler.unlink()
        rerun = run_cli(args, store, data_dir)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert RunRecord(store / "smoke", "adhoc", cut.key).is_finished()
