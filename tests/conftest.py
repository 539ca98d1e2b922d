"""Shared fixtures of tests/unit and tests/e2e: the data (real or fake), Hydra configs composed
once a session and copied per test, the results store under tmp, torch's threads and seed.
Plain helpers (paths, the subprocess runner) are in tests/helpers.py, fake data writers in
tests/fake_data.py."""

import copy
import os
from collections.abc import Callable
from pathlib import Path

import hydra
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, open_dict

from normexp.data import ptb
from tests.fake_data import write_cifar, write_fake_ptb
from tests.helpers import CONFIG_DIR, real_data_dir

E2E = Path(__file__).resolve().parent / "e2e"
# Every figure a test draws, in this process or a command it starts, keeps the house rules
# (page width, 9 pt text, the registry's palette: normexp/analysis/style.py) or fails.
os.environ.setdefault("NORMEXP_FIGURE_CHECK", "strict")
# PNGs only: a vector copy redraws every figure (the tests that check it ask for it).
os.environ.setdefault("NORMEXP_FIGURE_FORMATS", "png")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # `-m "not e2e"` keeps to the in-process tests; `slow` still marks the long sweeps.
    for item in items:
        if E2E in item.path.parents:
            item.add_marker(pytest.mark.e2e)


# --- data -------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def cifar_data(tmp_path_factory) -> tuple[Path, list[str]]:
    """(data dir, extra overrides): the real CIFAR-10 when configured, else a tiny fake copy
    (random pixels; fingerprints cannot match, so verification is switched off for it). Read
    only: one copy serves the whole session."""
    real = real_data_dir()
    if real is not None:
        return real, []
    root = tmp_path_factory.mktemp("fake_cifar")
    write_cifar(root, per_batch=300)
    return root, ["data.verify=false"]


@pytest.fixture
def fake_ptb(tmp_path, monkeypatch) -> Path:
    """A data dir holding all six PTB files in the real format, with ptb.MD5 patched to them."""
    ptb.clear_cache()
    monkeypatch.setattr(ptb, "MD5", write_fake_ptb(tmp_path))
    yield tmp_path
    ptb.clear_cache()


# --- Hydra configs ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hydra_ctx():
    """Hydra's compose API initialized on configs/ for the tests of one module."""
    with hydra.initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        yield


@pytest.fixture
def results_in_tmp(tmp_path, monkeypatch) -> Path:
    """The store ($NORMEXP_RESULTS_DIR) under this test's tmp_path, never the repo's results/."""
    results = tmp_path / "results"
    monkeypatch.setenv("NORMEXP_RESULTS_DIR", str(results))
    return results


def _compose(overrides: list[str]) -> DictConfig:
    if GlobalHydra.instance().is_initialized():  # inside a module's hydra_ctx: same configs/
        return hydra.compose("config", overrides=overrides)
    with hydra.initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra.compose("config", overrides=overrides)


@pytest.fixture(scope="session")
def compose_global() -> Callable[..., DictConfig]:
    """Compose `config` with these overrides, each list once a session (composing is the slow
    part); callers get a deep copy, so no test sees another's changes. The session half of
    lightning-hydra-template's cfg_train_global / cfg_train pair."""
    composed: dict[tuple[str, ...], DictConfig] = {}

    def compose(*overrides: str) -> DictConfig:
        if overrides not in composed:
            composed[overrides] = _compose(list(overrides))
        return copy.deepcopy(composed[overrides])

    return compose


@pytest.fixture
def smoke_cfg(compose_global, cifar_data, tmp_path) -> Callable[..., DictConfig]:
    """A smoke-profile job config for this test: a copy of the one composed for these overrides,
    with the store under tmp_path/"res" and the (real or fake) CIFAR-10 as its data."""
    data_dir, extra = cifar_data

    def make(*overrides: str) -> DictConfig:
        cfg = compose_global("profile=smoke", "runtime.progress=false", *extra, *overrides)
        with open_dict(cfg):
            cfg.paths.data_dir = str(data_dir)
            cfg.paths.results_dir = str(tmp_path / "res")
        return cfg

    return make


# --- torch ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_torch_thread():
    # Tiny tensors: a thread pool only adds contention on a busy 2-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def torch_seed() -> None:
    torch.manual_seed(0)
