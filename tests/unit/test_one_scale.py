"""One scale per figure and statistic (normexp/analysis/one_scale.py): a run records what its
profile sets for it, and a panel or statistic refuses to combine two such scales."""

import pandas as pd
import pytest

from normexp.analysis import columns as col
from normexp.analysis.one_scale import MixedScaleError, difference_text, one_scale, same_scale
from normexp.tracking.collect import scale_signature

QUICK = {"n_train": 4000, "epochs": 4, "widths": [16, 32, 64], "sweep": {"batch_sizes": "2,32"}}
STANDARD = {"n_train": 10000, "epochs": 8, "widths": [16, 32, 64], "sweep": {"batch_sizes": "2"}}


def runs(scale: dict | None, n: int = 2) -> pd.DataFrame:
    """``n`` finished runs at the scale of ``scale`` (a profile's row) as collect records it."""
    config = {"profile": "standard", "scale": {"standard": scale}} if scale else {}
    return pd.DataFrame(
        {"status": ["ok"] * n, "seed": range(n), col.SCALE: [scale_signature(config)] * n}
    )


def test_a_run_records_its_own_profiles_row_without_the_sweep_values():
    config = {"profile": "standard", "scale": {"quick": QUICK, "standard": STANDARD}}
    mine = scale_signature(config)
    assert '"n_train": 10000' in mine and "sweep" not in mine
    # an experiment that sets `standard: ${scale.quick}` resolves to quick's row: another scale
    assert scale_signature({**config, "scale": {"standard": QUICK}}) != mine
    # a different sweep value (another batch-size grid) is the same scale
    assert scale_signature({**config, "scale": {"standard": {**STANDARD, "sweep": {}}}}) == mine
    assert scale_signature({"profile": "standard"}) is None


def test_one_scale_refuses_two_naming_what_combines_them_and_the_entries_that_differ():
    pair = {"bn_small_batch_devices": runs(QUICK), "bn_small_batch": runs(STANDARD)}
    assert not same_scale(pair)
    with pytest.raises(MixedScaleError) as refused:
        one_scale("C4's GN-paper-protocol panel", pair)
    line = str(refused.value)
    assert "\n" not in line and line.startswith("C4's GN-paper-protocol panel: ")
    assert "bn_small_batch_devices: epochs 4, n_train 4000" in line
    assert "bn_small_batch: epochs 8, n_train 10000" in line
    assert "widths" not in difference_text(pair)  # only the entries that differ


def test_one_scale_passes_one_scale_and_tables_that_record_none():
    same = {"a": runs(STANDARD), "b": runs(STANDARD), "empty": pd.DataFrame()}
    assert one_scale("a panel", same) == scale_signature(
        {"profile": "standard", "scale": {"standard": STANDARD}}
    )
    assert one_scale("a panel", {"by hand": runs(None), "b": runs(STANDARD)}) is not None
    assert one_scale("a panel", {"by hand": runs(None)}) is None


def test_the_runs_of_record_of_one_experiment_are_refused_at_two_scales():
    mixed = pd.concat([runs(QUICK), runs(STANDARD)], ignore_index=True)
    with pytest.raises(MixedScaleError, match="the runs of record of bn_small_batch"):
        col.table({"bn_small_batch": mixed}, "bn_small_batch")
    # a selection run is not of record: it never enters a statistic
    select = runs(QUICK).assign(**{col.STAGE: "select"})
    record = runs(STANDARD).assign(**{col.STAGE: "record"})
    both = pd.concat([select, record], ignore_index=True)
    assert len(col.table({"e": both}, "e")) == len(record)
