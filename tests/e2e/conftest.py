"""The smoke store that several end-to-end tests read: every experiment's smoke sweep, then
`figures` on the whole store, trained once a session. Each command runs as `python -m` would,
and the commands one after another in one process (tests.helpers.run_cli_batch), each sweep's
jobs in that process (n_jobs=1): Python, Hydra and torch start once instead of once per
experiment. The tests that need a fresh process (resuming a sweep, killing one) start their
own."""

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from normexp.catalogue import experiment_names
from tests.helpers import REPO, Call, real_ptb, run_cli_batch

# make run-sweep's order: gn_grouping's decision before the sweeps whose GN jobs take it
EXPERIMENTS = experiment_names()
FILES = [REPO / "experiments" / f"{e}.yaml" for e in EXPERIMENTS]
# The LSTM experiments read Penn Treebank: run where the real one is configured.
NEEDS_PTB = {p.stem for p in FILES if "override /data: ptb" in p.read_text()}
# Its runs (and the report's) also go to W&B, offline: the smallest sweep, as an offline run
# costs about 0.4 s of CPU on top of each run.
WANDB_OFFLINE = {"bn_position_control"}


@dataclass
class SmokeStore:
    root: Path  # results/ and each sweep's hydra folder are under it
    data_dir: Path  # CIFAR-10's (real or fake)
    extra: list[str]  # the overrides that data needs
    sweeps: dict[str, subprocess.CompletedProcess]  # by experiment; PTB's only when present
    figures: subprocess.CompletedProcess  # `normexp.analysis.figures` on the whole store

    @property
    def results(self) -> Path:
        return self.root / "results"

    def sweep_args(self, experiment: str) -> list[str]:
        """The command line of this experiment's sweep (rerun it to resume)."""
        mode = "offline" if experiment in WANDB_OFFLINE else "disabled"
        return [
            "normexp.run",
            "-m",
            f"experiment={experiment}",
            "profile=smoke",
            f"tracking.mode={mode}",
            "runtime.progress=false",
            f"hydra.sweep.dir={self.root / 'hydra' / experiment}",
            # The jobs run in the batch's own process, one after another: smoke runs are mostly
            # start-up, and launcher workers (two imports of torch each) are what the interrupt,
            # store-fault and CLI tests exercise.
            "hydra.launcher.n_jobs=1",
            *([] if experiment in NEEDS_PTB else self.extra),
        ]

    def data_of(self, experiment: str) -> Path:
        return real_ptb() if experiment in NEEDS_PTB else self.data_dir


@pytest.fixture(scope="session")
def smoke_store(tmp_path_factory, cifar_data) -> SmokeStore:
    data_dir, extra = cifar_data
    store = SmokeStore(tmp_path_factory.mktemp("smoke_store"), data_dir, extra, {}, None)
    experiments = [e for e in EXPERIMENTS if e not in NEEDS_PTB or real_ptb() is not None]
    by_data: dict[Path, list[str]] = {}  # a batch's sweeps share their data (run_cli_batch)
    for experiment in experiments:
        by_data.setdefault(store.data_of(experiment), []).append(experiment)
    # PNGs only (tests/conftest.py: NORMEXP_FIGURE_FORMATS=png; the vector copies are checked
    # on their own), each checked against the house rules (NORMEXP_FIGURE_CHECK=strict)
    figures = ["normexp.analysis.figures", "--results-dir", str(store.results)]
    figures += ["--profile", "smoke", "--wandb-mode", "offline"]
    for i, (data, group) in enumerate(by_data.items()):
        calls = [Call(store.sweep_args(e), store.results, data) for e in group]
        if i == len(by_data) - 1:  # after every sweep, in the last batch
            calls.append(Call(figures, store.results, store.root))
        done = run_cli_batch(calls, timeout=1800)
        store.sweeps |= dict(zip(group, done, strict=False))
    store.figures = done[-1]
    return store
