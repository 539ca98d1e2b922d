"""The claim analyses, in claim order. Each module under normexp.analysis that tests a claim
defines ``ANALYSIS = ClaimAnalysis(...)``: which collected tables it reads, how it draws its
figure and how it decides its verdict (both from those tables only)."""

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

Tables = dict[str, pd.DataFrame]  # experiment name -> collected table (empty: not run yet)

# Claim order C1..C11; a module listed here but not written yet is skipped.
MODULES = (
    "norm_sets",
    "weight_side",
    "bn_position",
    "bn_small_batch",
    "bn_train_test",
    "bn_generation",
    "rnn_norm",
    "ln_in_cnn",
    "not_ics",
    "smoothness",
    "recommendations",
)


@dataclass(frozen=True)
class ClaimAnalysis:
    claim: str  # "C4"
    name: str  # figure / verdict file name
    title: str  # the claim in a few words
    reads: tuple[str, ...]  # experiments whose collected tables it needs
    draw: Callable[[Tables, Path], Path]
    verdict: Callable[[Tables], dict]


def load_analyses() -> list[ClaimAnalysis]:
    analyses = []
    for name in MODULES:
        try:
            module = importlib.import_module(f"normexp.analysis.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"normexp.analysis.{name}":
                raise
            continue
        analyses.append(module.ANALYSIS)
    return analyses
