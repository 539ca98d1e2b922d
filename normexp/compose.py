"""Composing a sweep's jobs fast: once per distinct set of config-group choices.

The launcher composes every job from scratch (``load_sweep_config``, about 0.3 s each); a sweep
of seeds, arms or learning rates differs only in value overrides, which Hydra applies after
composing. So a job is composed once per set of group choices (``norm=group``) and the value
overrides (``seed=3``, ``arm={...}``) are applied to a copy, as Hydra applies them.
"""

import copy
from collections.abc import Sequence
from typing import Any

from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf


class JobComposer:
    """``composer(overrides)`` -> the job's config, as the launcher would compose it."""

    def __init__(self, config: DictConfig) -> None:
        self.config = config
        self.loader = GlobalHydra.instance().config_loader()
        self.parser = OverridesParser.create(config_loader=self.loader)
        self.composed: dict[tuple[str, ...], DictConfig] = {}

    def __call__(self, overrides: Sequence[str]) -> DictConfig:
        parsed = self.parser.parse_overrides(list(overrides))
        groups = tuple(o.input_line for o in parsed if _selects_config(o, self.loader))
        if groups not in self.composed:
            self.composed[groups] = self.loader.load_configuration(
                config_name=self.config.hydra.job.config_name,
                overrides=list(self.config.hydra.overrides.hydra) + list(groups),
                run_mode=RunMode.RUN,
            )
        job = copy.deepcopy(self.composed[groups])
        values = [o for o in parsed if not _selects_config(o, self.loader)]
        ConfigLoaderImpl._apply_overrides_to_config(values, job)
        OmegaConf.copy_cache(from_config=self.config, to_config=job)  # as load_sweep_config does
        return job


def _selects_config(override: Override, loader: Any) -> bool:
    """Whether Hydra's defaults list takes ``override`` (a group choice, ``~group``), rather
    than applying it to the composed config (hydra/_internal/defaults_list.py: Overrides)."""
    return loader.repository.group_exists(override.key_or_group) and not isinstance(
        override.value(), dict
    )
