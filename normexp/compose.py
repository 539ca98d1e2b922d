"""Composing a sweep's jobs fast: once per distinct set of config-group choices.

Hydra composes every job from scratch (``load_sweep_config``, about 0.1-0.3 s each): the
sweeper to check it, the launcher's worker to run it. A sweep of seeds, arms or learning rates
differs only in value overrides, which Hydra applies after composing. ``SweepConfigLoader``
composes once per set of group choices (``norm=group``), applies the value overrides (``seed=3``,
``arm={...}``) to a copy as Hydra applies them, and writes Hydra's record of the overrides as
Hydra does: the job's config is Hydra's, node for node (tests/unit/test_console.py compares
them). It also reads and parses each config file once (half of a composition's time), each
composition getting its own copy, as from the file. Copies are unpickled from bytes kept in
this process (OmegaConf pickles whole: node types, flags, parents), a tenth of
``copy.deepcopy``'s cost. The ProtocolSweeper hands this loader to the launcher, so a worker
reuses what it composed across the jobs it runs.
"""

import hashlib
import io
import os
import pickle
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra._internal.config_repository import CachingConfigRepository
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.types import HydraContext, RunMode
from omegaconf import DictConfig, OmegaConf, open_dict

# Compositions by (loader token, group choices), in this process: a launcher's worker unpickles
# a new loader with every job, so the cache cannot live on the instance. Bounded, oldest out.
_COMPOSED: "OrderedDict[tuple, _Frozen]" = OrderedDict()
_MAX_COMPOSED = 256
_FILES: "OrderedDict[tuple, _Frozen]" = OrderedDict()  # parsed files, by (token, path)
_MAX_FILES = 4096


class _Frozen:
    """A config (or a parsed config file) as pickled bytes, its classes kept aside as objects:
    the bytes never leave this process, and Hydra's plugin scan re-imports modules, leaving
    structured-config classes (the launcher's) that pickle cannot find by name."""

    def __init__(self, config: object) -> None:
        self.types: list[type] = []
        self._ids: dict[type, int] = {}
        buffer = io.BytesIO()
        pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
        pickler.persistent_id = self._type_id
        pickler.dump(config)
        self.data = buffer.getvalue()
        del self._ids

    def _type_id(self, obj: object) -> int | None:
        if not isinstance(obj, type):
            return None
        if obj not in self._ids:
            self._ids[obj] = len(self.types)
            self.types.append(obj)
        return self._ids[obj]

    def thaw(self) -> Any:
        unpickler = pickle.Unpickler(io.BytesIO(self.data))
        unpickler.persistent_load = self.types.__getitem__
        return unpickler.load()


class SweepConfigLoader(ConfigLoaderImpl):
    """Hydra's config loader, with ``load_sweep_config`` composing once per group choice. The
    token names the config files it reads as they are now (their paths, sizes and times), so
    loaders over the same unchanged files share their compositions, and an edited file is
    read afresh."""

    def __init__(self, config_search_path, token: str | None = None) -> None:  # noqa: ANN001
        super().__init__(config_search_path=config_search_path)
        self.token = token or _files_token(config_search_path)

    @classmethod
    def like(cls, loader: ConfigLoaderImpl) -> "SweepConfigLoader":
        return cls(loader.config_search_path)

    def load_sweep_config(
        self, master_config: DictConfig, sweep_overrides: list[str]
    ) -> DictConfig:
        hydra_overrides = list(master_config.hydra.overrides.hydra)
        parser = OverridesParser.create(config_loader=self)
        parsed = parser.parse_overrides(hydra_overrides + list(sweep_overrides))
        own = parsed[len(hydra_overrides) :]
        groups = tuple(o.input_line for o in own if self._selects_config(o))
        name = master_config.hydra.job.config_name
        job = self._composed(name, hydra_overrides, groups).thaw()
        ConfigLoaderImpl._apply_overrides_to_config(
            [o for o in own if not self._selects_config(o)], job
        )
        # Hydra's record of the overrides: every one of them, in order (_load_configuration_impl).
        app = [o for o in parsed if not o.is_hydra_override()]
        with open_dict(job.hydra):
            job.hydra.overrides.hydra = [o.input_line for o in parsed if o.is_hydra_override()]
            job.hydra.overrides.task = [o.input_line for o in app]
            dirname = job.hydra.job.config.override_dirname
            job.hydra.job.override_dirname = get_overrides_dirname(
                overrides=app,
                kv_sep=dirname.kv_sep,
                item_sep=dirname.item_sep,
                exclude_keys=dirname.exclude_keys,
            )
        OmegaConf.copy_cache(from_config=master_config, to_config=job)  # as Hydra's does
        return job

    def _parse_overrides_and_create_caching_repo(
        self, config_name: str | None, overrides: list[str]
    ) -> tuple[list[Override], CachingConfigRepository]:
        # Hydra's own (config_loader_impl.py), with a repository that reads each file once.
        parsed = OverridesParser.create().parse_overrides(overrides=overrides)
        repository = _FilesReadOnce(self.repository, self.token)
        self._process_config_searchpath(config_name, parsed, repository)
        return parsed, repository

    def _composed(self, config_name: str, hydra_overrides: list[str], groups: tuple) -> _Frozen:
        key = (self.token, config_name, tuple(hydra_overrides), groups, os.getcwd())
        if key not in _COMPOSED:
            config = self.load_configuration(
                config_name=config_name,
                overrides=hydra_overrides + list(groups),
                run_mode=RunMode.RUN,
            )
            _COMPOSED[key] = _Frozen(config)
            _evict_oldest(_COMPOSED, _MAX_COMPOSED)
        _COMPOSED.move_to_end(key)
        return _COMPOSED[key]

    def _selects_config(self, override: Override) -> bool:
        """Whether Hydra's defaults list takes ``override`` (a group choice, ``~group``), rather
        than applying it to the composed config (hydra/_internal/defaults_list.py: Overrides)."""
        return self.repository.group_exists(override.key_or_group) and not isinstance(
            override.value(), dict
        )


class _FilesReadOnce(CachingConfigRepository):
    """Hydra's repository of one composition, its config files read once per loader token in
    this process: each load gets its own copy of the parsed file."""

    def __init__(self, delegate: Any, token: str) -> None:
        super().__init__(delegate)
        self.token = token

    def load_config(self, config_path: str) -> Any:
        key = (self.token, config_path, os.getcwd())
        if key not in _FILES:
            _FILES[key] = _Frozen(self.delegate.load_config(config_path=config_path))
            _evict_oldest(_FILES, _MAX_FILES)
        _FILES.move_to_end(key)
        return _FILES[key].thaw()


def _evict_oldest(cache: OrderedDict, size: int) -> None:
    while len(cache) > size:
        cache.popitem(last=False)


def _files_token(search_path: Any) -> str:
    """A name for the config files on ``search_path`` as they are now: each directory's files
    (links followed: configs/experiment is one) by path, size and time; a package's files
    (``pkg://``, installed) and ConfigStore's by the source's name alone."""
    state = []
    for element in search_path.get_path():
        state.append(str(element.path))
        root = Path(str(element.path).removeprefix("file://"))
        if "://" in str(element.path).removeprefix("file://") or not root.is_dir():
            continue
        for folder, _, files in sorted(os.walk(root, followlinks=True)):
            for name in sorted(files):
                stat = os.stat(os.path.join(folder, name))
                state.append(f"{folder}/{name} {stat.st_size} {stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(state).encode()).hexdigest()


def fast_context(context: HydraContext) -> HydraContext:
    """``context`` with its config loader composing once per group choice."""
    return HydraContext(SweepConfigLoader.like(context.config_loader), context.callbacks)


class JobComposer:
    """``composer(overrides)`` -> the job's config, as the launcher composes it."""

    def __init__(self, config: DictConfig) -> None:
        self.config = config
        self.loader = SweepConfigLoader.like(GlobalHydra.instance().config_loader())

    def __call__(self, overrides: Sequence[str]) -> DictConfig:
        return self.loader.load_sweep_config(self.config, list(overrides))
