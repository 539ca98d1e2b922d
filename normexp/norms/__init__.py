"""Normalization layers: the registry (``make_norm``, ``make_norm_factory``, ``norm_spec``) and,
imported here so that it is filled, every registered norm."""

from normexp.norms import batch_variants, layers, recurrent  # noqa: F401
from normexp.norms.registry import (
    NORMS,
    NormFactory,
    make_norm,
    make_norm_factory,
    norm_spec,
    norms_for,
)
from normexp.norms.validity import check_norm

__all__ = [
    "NORMS",
    "NormFactory",
    "check_norm",
    "make_norm",
    "make_norm_factory",
    "norm_spec",
    "norms_for",
]
