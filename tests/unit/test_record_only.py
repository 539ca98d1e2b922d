"""Runs of record only, wherever a user reads numbers: a store whose collected table holds the
fair protocol's other runs too (LR selection on seed 100, a budget-ladder rung, the convergence
check's doubled budget, all far off on purpose) gives the notebook's helpers and the W&B
dashboards' groups the report's numbers."""

from pathlib import Path

import pandas as pd
import pytest
from wandb_workspaces.expr import Filters, expr_to_filters

from normexp.analysis import columns as col
from normexp.analysis import explore
from normexp.analysis.claims import bn_small_batch
from normexp.analysis.figures import of_record_for, verdict_of_record
from normexp.analysis.report import dashboards
from normexp.analysis.verdict.record import declared_seeds
from normexp.tracking.wandb_mirror import run_identity, wandb_key
from tests.unit.test_regime import c4_table

PROFILE = "standard"
EXPERIMENT = "bn_small_batch"
SEEDS = declared_seeds(PROFILE)


def store_table() -> pd.DataFrame:
    """C4's runs of record on the declared seeds (BN clearly worse at batch 2), then the other
    stages' runs of the same cells, whose test error would move every cell's mean."""
    record = c4_table()
    assert tuple(sorted(record[col.SEED].unique())) == SEEDS  # the profile's seeds of record
    first = record[record[col.SEED] == SEEDS[0]]
    others = [
        first.assign(**{col.SEED: 100, col.STAGE: "select", col.LR_MULT: 4.0, "test_err": 0.9}),
        first.assign(**{col.STAGE: "ladder", col.EPOCHS: 2, "test_err": 0.8}),
        first.assign(**{col.STAGE: "check", col.EPOCHS: 8, "test_err": 0.05, "val_acc": 0.9}),
    ]
    df = pd.concat([record, *others], ignore_index=True)
    df[col.PROFILE] = PROFILE
    df["claim.name"], df["claim.id"] = EXPERIMENT, "C4"
    df["norm.position"], df["model.name"] = "pre", "cnn"
    df[col.RUN_KEY] = [f"run{i}" for i in range(len(df))]
    return df


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tuple[Path, dict]:
    """A profile folder whose collected table is ``store_table``, and the report's C4 verdict
    decided from it."""
    folder = tmp_path_factory.mktemp("results") / PROFILE
    (folder / "collected").mkdir(parents=True)
    store_table().to_parquet(folder / "collected" / f"{EXPERIMENT}.parquet")
    tables = explore.load_tables(folder)
    verdict = verdict_of_record(
        bn_small_batch.ANALYSIS, *of_record_for(bn_small_batch.ANALYSIS, tables, folder), tables
    )
    return folder, verdict


def _c4b(verdict: dict) -> float:
    return next(s for s in verdict["sub"] if s["id"] == "C4b")["estimate"]


def test_the_notebooks_cells_are_the_reports(store):
    folder, verdict = store
    tables = explore.load_tables(folder)
    everything = tables[EXPERIMENT]
    assert set(everything[col.STAGE]) == {"select", "record", "ladder", "check"}
    record = explore.runs_of_record(tables, folder)[EXPERIMENT]
    cells = explore.cell_means(explore.slice_runs(record), "test_err", ("norm", "batch"), 100)
    assert set(cells["seeds"]) == {len(SEEDS)}  # not the selection seed as a sixth
    bn_minus_gn = cells.loc[("batch", 2), "mean"] - cells.loc[("group", 2), "mean"]
    assert bn_minus_gn == pytest.approx(_c4b(verdict))  # C4b: BN − GN test error at batch 2
    # slicing the whole collected table keeps the runs of record alone as well
    assert len(explore.slice_runs(everything)) == len(record)
    assert len(explore.slice_runs(everything, stage="check")) == 4
    summary = explore.runs_table(tables, folder).loc[EXPERIMENT]
    assert (summary["runs"], summary["of record"], summary["seeds of record"]) == (32, 20, 5)
    assert (summary["LR selection"], summary["budget ladder"], summary["convergence check"]) == (
        4, 4, 4,
    )  # fmt: skip


def test_cell_means_refuses_runs_of_several_stages(store):
    folder, _ = store
    everything = explore.load_tables(folder)[EXPERIMENT]
    with pytest.raises(ValueError, match=r"stages \['check', 'ladder', 'record', 'select'\]"):
        explore.cell_means(explore.slice_runs(everything, stage=None), "test_err")
    with pytest.raises(ValueError, match="stage: unknown 'final'; allowed: select, record"):
        explore.slice_runs(everything, stage="final")


# --- the W&B dashboards, their run sets evaluated offline as W&B does -------------------------


def _nested(row: pd.Series) -> dict:
    """A collected row as the config the store (and the W&B mirror) holds: dotted -> nested."""
    config: dict = {}
    for column, value in row.items():
        if "." not in column and column not in (col.SEED, col.PROFILE):
            continue
        *parents, leaf = column.split(".")
        node = config
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value.item() if hasattr(value, "item") else value
    return config


def _value(config: dict, path: str):
    node = config
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def shown(tree: Filters, config: dict) -> bool:
    """Whether W&B shows a run of this config in a run set with this filter tree."""
    if tree.op in ("AND", "OR"):
        parts = [shown(f, config) for f in tree.filters or [] if not f.disabled]
        return all(parts) if tree.op == "AND" else any(parts)
    assert tree.key.section == "config", tree  # the dashboards filter on config fields only
    value, wanted = _value(config, tree.key.name), tree.value
    compare = {
        "=": lambda: value == wanted, "!=": lambda: value != wanted,
        "IN": lambda: value in wanted, "NIN": lambda: value not in wanted,
        ">=": lambda: value >= wanted, "<=": lambda: value <= wanted,
        ">": lambda: value > wanted, "<": lambda: value < wanted,
    }  # fmt: skip
    return compare[tree.op]()


def test_the_dashboards_groups_are_the_reports(store):
    folder, verdict = store
    table = explore.load_tables(folder)[EXPERIMENT]
    # what the mirror logs for every stored run: its config (stage always set) and summary
    runs = [
        (run_identity(_nested(row), key)["config"], {wandb_key("test_err"): row["test_err"]})
        for key, (_, row) in zip(table[col.RUN_KEY], table.iterrows(), strict=True)
    ]
    report = dashboards.build_report(
        bn_small_batch.ANALYSIS, "e", "p", PROFILE, dashboards.read_store(folder)
    )
    grid_spec = dashboards.grids_of(bn_small_batch.ANALYSIS)[0]
    grid = [b for b in report.blocks if type(b).__name__ == "PanelGrid"][1]
    (runset,) = grid.runsets
    tree = expr_to_filters(runset.filters)
    groups: dict[tuple, list[float]] = {}
    for config, summary in runs:
        if shown(tree, config):
            key = tuple(_value(config, path) for path in grid_spec.group_by)
            groups.setdefault(key, []).append(summary["test/err"])
    assert {len(v) for v in groups.values()} == {len(SEEDS)}  # one run per seed of record
    mean = {k: 100 * sum(v) / len(v) for k, v in groups.items()}  # the bars: mean per group
    assert mean[("batch", 2)] - mean[("group", 2)] == pytest.approx(_c4b(verdict))
    every_stage = [c for c, _ in runs if _value(c, "protocol.stage") != "record"]
    assert every_stage and not [c for c in every_stage if shown(tree, c)]
    assert all(dashboards.passes(tree, lambda _, path, c=c: _value(c, path)) == shown(tree, c)
               for c, _ in runs)  # the dashboards' own evaluation of a run set: W&B's  # fmt: skip


def test_the_dashboards_cis_are_the_reports(store):
    """The table under a grid's bars: per group, the mean and 95% CI over seeds that the
    notebook's cells give (Student t, the report's), on the runs of record only."""
    folder, _ = store
    tables = explore.load_tables(folder)
    report = dashboards.build_report(
        bn_small_batch.ANALYSIS, "e", "p", PROFILE, dashboards.read_store(folder)
    )
    grid_spec = dashboards.grids_of(bn_small_batch.ANALYSIS)[0]
    (runset,) = [b for b in report.blocks if type(b).__name__ == "PanelGrid"][1].runsets
    record = explore.runs_of_record(tables, folder)
    cis = dashboards.group_cis(grid_spec, record, runset.filters)
    cis = cis.set_index(["norm.name", "train.batch_size"])
    cells = explore.cell_means(explore.slice_runs(record[EXPERIMENT]), "test_err")
    assert len(cis) == len(cells) and set(cis["seeds"]) == {len(SEEDS)}
    for cell, row in cells.iterrows():
        got = cis.loc[cell, ["test/err", "test/err low", "test/err high"]].tolist()
        assert got == pytest.approx([row["mean"], row["ci_low"], row["ci_high"]])
    texts = [getattr(b, "text", "") for b in report.blocks]
    table = next(t for t in texts if "test/err: mean [95% CI]" in t)
    low, high = cells.loc[("batch", 2), ["ci_low", "ci_high"]]
    assert f"| batch | 2 | {cells.loc[('batch', 2), 'mean']:.4g} [{low:.4g}, {high:.4g}] |" in table
