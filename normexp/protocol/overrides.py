"""A job as Hydra's launcher takes it (its overrides), and the two operations the LR protocol's
planner and the packed groups read it with."""

from collections.abc import Sequence

Job = tuple[str, ...]  # one job's overrides


def key_of(override: str) -> str:
    """The setting an override sets: ``+norm.eps=1e-5`` -> ``norm.eps``."""
    return override.split("=", 1)[0].lstrip("+~")


def without(job: Sequence[str], *keys: str) -> Job:
    """``job`` with its overrides of ``keys`` left out."""
    return tuple(o for o in job if key_of(o) not in keys)
