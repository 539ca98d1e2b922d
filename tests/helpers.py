"""Plain helpers shared by tests/unit and tests/e2e (fixtures live in tests/conftest.py): where
the repository, its configs and the real data are, and how to call a command in a subprocess."""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import NamedTuple

from normexp.data import cifar10, ptb
from normexp.data.paths import resolve_data_dir

REPO = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO / "configs"


def real_data_dir() -> Path | None:
    """The configured real data directory (CI sets NORMEXP_DATA_DIR), if it holds CIFAR-10."""
    configured = os.environ.get("NORMEXP_DATA_DIR")
    if configured and (Path(configured) / cifar10.FOLDER / "data_batch_1").exists():
        return Path(configured)
    return None


def real_ptb() -> Path | None:
    """The configured real data directory, if it holds Penn Treebank."""
    if not os.environ.get("NORMEXP_DATA_DIR"):
        return None
    path = resolve_data_dir(None)
    return path if (path / ptb.FOLDER / "ptb.char.train.txt").is_file() else None


def cli_env(results_dir: Path, data_dir: Path) -> dict[str, str]:
    """The environment of a command under test: the store and the data under tmp, and none of
    the developer's verbosity switches (the tests read the one-line errors)."""
    env = {**os.environ, "NORMEXP_RESULTS_DIR": str(results_dir), "NORMEXP_DATA_DIR": str(data_dir)}
    env.pop("HYDRA_FULL_ERROR", None)
    env.pop("NORMEXP_VERBOSE", None)
    return env


def run_cli(args: list[str], results_dir: Path, data_dir: Path, timeout: int = 600):
    """Run ``python -m <args>`` from the repo root with the store and Hydra logs under tmp."""
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO,
        env=cli_env(results_dir, data_dir),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Call(NamedTuple):
    """One command of a batch: ``python -m <args>`` with this store and data."""

    args: list[str]
    results_dir: Path
    data_dir: Path


# Runs each command of a batch as `python -m` would, one after another in this one process:
# sys.argv and the environment set, the module run as __main__, its stdout and stderr captured
# and its exit status taken from SystemExit (or 1 and the traceback for an uncaught exception, as
# the interpreter does). Between commands, Hydra's global state is cleared and the warnings'
# once-per-place registry reset, so each command starts as a fresh process would. Python, Hydra
# and torch start once for the whole batch instead of once per command (seconds each). What
# launcher workers print is not a command's: it goes to the batch's own stdout and stderr.
BATCH_DRIVER = """
import contextlib, io, json, os, runpy, sys, traceback, warnings
from hydra.core.global_hydra import GlobalHydra
calls, out, filters = json.load(sys.stdin), sys.argv[1], list(warnings.filters)
results = []
for call in calls:
    os.environ.clear()
    os.environ.update(call["env"])
    warnings.resetwarnings()
    warnings.filters[:] = filters
    stdout, stderr, code = io.StringIO(), io.StringIO(), 0
    sys.argv = list(call["args"])
    sys.modules.pop(call["args"][0], None)  # run afresh, as `python -m` does
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            runpy.run_module(call["args"][0], run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) or exc.code is None else 1
            if not isinstance(exc.code, int | None):
                print(exc.code, file=sys.stderr)
        except BaseException:
            traceback.print_exc()
            code = 1
    GlobalHydra.instance().clear()
    streams = {"stdout": stdout.getvalue(), "stderr": stderr.getvalue()}
    results.append({"returncode": code or 0, **streams})
with open(out, "w") as file:
    json.dump(results, file)
"""


def run_cli_batch(calls: list[Call], timeout: int = 900) -> list[subprocess.CompletedProcess]:
    """Run ``python -m <args>`` for each call in ONE subprocess (see BATCH_DRIVER): what
    run_cli returns for each, at a fraction of the start-up cost. A sweep's launcher workers
    outlive the command that started them and keep the environment they started with, so the
    sweeps of one batch must share their store and data."""
    sweeps = {(c.results_dir, c.data_dir) for c in calls if "-m" in c.args}
    assert len(sweeps) <= 1, "the sweeps of one batch must share their store and data"
    payload = [{"args": c.args, "env": cli_env(c.results_dir, c.data_dir)} for c in calls]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "results.json"
        proc = subprocess.run(
            [sys.executable, "-c", BATCH_DRIVER, str(out)],
            cwd=REPO,
            env=cli_env(calls[0].results_dir, calls[0].data_dir),
            input=json.dumps(payload, default=str),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert proc.returncode == 0 and out.exists(), proc.stderr[-3000:]
        results = json.loads(out.read_text())
    return [
        subprocess.CompletedProcess(c.args, r["returncode"], r["stdout"], r["stderr"])
        for c, r in zip(calls, results, strict=True)
    ]
