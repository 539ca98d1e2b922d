"""One scale per figure and per statistic (issue #29, item 5).

A run's *scale* is what its profile sets for it: its row of the resolved ``scale`` table,
``scale.<its profile>`` (training, validation and test images, epochs, widths, the ResNet's
depth, the language model's sizes, ...), less ``sweep`` (values of grid dimensions, which reach
a run as the fields they set: a batch size, a model). An experiment may set its own row
(``standard: ${scale.quick}``), so two experiments of one profile can run at different scales.
collect records each run's scale as the ``scale`` column
(``normexp.tracking.collect.scale_signature``: that row as canonical JSON).

Rule. A figure panel or a statistic never combines runs of different scales.
- The runs of record of one experiment are at one scale: ``columns.table`` refuses a table that
  is not (runs left in the store from an earlier scale of the experiment file).
- A panel or statistic that reads runs of two experiments checks them with ``one_scale``, which
  refuses to combine two scales with one line naming what would combine them, the experiments
  and the entries that differ.
- A claim whose profile runs such a pair at two scales drops that panel and statistic from the
  profile's report and says why (it asks ``same_scale`` first), rather than refuse the report.
Runs without the column (tables built by hand) have no scale to compare and pass.
"""

import json
from collections.abc import Mapping

import pandas as pd

from normexp.errors import NormexpError

SCALE = "scale"  # the collected column (collect.scale_signature)


class MixedScaleError(NormexpError):
    """Runs of different scales would enter one figure panel or one statistic."""


def scales_in(df: pd.DataFrame | None) -> list[str]:
    """The distinct scales of a table's runs ([] without runs or without the column)."""
    if df is None or df.empty or SCALE not in df:
        return []
    return sorted(df[SCALE].dropna().astype(str).unique())


def _by_scale(runs: Mapping[str, pd.DataFrame]) -> dict[str, list[str]]:
    """{scale: the names of ``runs`` that hold runs at it}."""
    found: dict[str, list[str]] = {}
    for name, df in runs.items():
        for scale in scales_in(df):
            found.setdefault(scale, []).append(name)
    return found


def same_scale(runs: Mapping[str, pd.DataFrame]) -> bool:
    """Whether every run of ``runs`` ({name: runs}) is at one scale."""
    return len(_by_scale(runs)) <= 1


def _flat(tree: Mapping, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        out.update(_flat(value, f"{name}.") if isinstance(value, Mapping) else {name: value})
    return out


def difference_text(runs: Mapping[str, pd.DataFrame]) -> str:
    """The entries in which the scales of ``runs`` differ, per scale: 'bn_small_batch_devices:
    epochs 4, n_train 4000; bn_small_batch: epochs 8, n_train 10000' ('' for one scale)."""
    found = _by_scale(runs)
    if len(found) <= 1:
        return ""
    flat = {scale: _flat(json.loads(scale)) for scale in found}
    keys = sorted(set().union(*flat.values()))
    values = {k: {json.dumps(f.get(k), default=str) for f in flat.values()} for k in keys}
    differ = [k for k in keys if len(values[k]) > 1]
    return "; ".join(
        f"{', '.join(found[scale])}: "
        + ", ".join(f"{k} {json.dumps(flat[scale].get(k), default=str)}" for k in differ)
        for scale in found
    )


def one_scale(what: str, runs: Mapping[str, pd.DataFrame]) -> str | None:
    """The one scale of ``runs`` ({name: runs}) that ``what`` (a panel, a statistic) combines,
    None when no run records one; MixedScaleError when they hold two or more."""
    found = _by_scale(runs)
    if len(found) > 1:
        raise MixedScaleError(
            f"{what}: runs of different scales ({difference_text(runs)}); a figure panel or a "
            "statistic reads runs of one scale (normexp/analysis/one_scale.py)"
        )
    return next(iter(found), None)
