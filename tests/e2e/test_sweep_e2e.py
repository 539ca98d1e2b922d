"""End to end: the smoke sweep of bn_small_batch (in the session's smoke store), its store,
table, figure and W&B offline runs; then the same command again, in a fresh process, trains
nothing."""

import json

import pandas as pd
import pytest

from tests.helpers import run_cli

# `make test` runs tests on every core (pytest-xdist, --dist loadgroup); a group stays on one
# worker, so the fixture its tests share is built once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("smoke_store")]
NORMS, BATCHES = 5, 5  # the grid of experiments/bn_small_batch.yaml at one smoke seed


def bn_small_batch_sittings(results) -> list[dict]:
    lines = (results / "smoke" / "sweeps.jsonl").read_text().splitlines()
    return [s for s in map(json.loads, lines) if s["experiment"] == "bn_small_batch"]


def test_smoke_sweep_writes_store_table_figure_and_wandb_then_resumes(smoke_store, monkeypatch):
    # The sweep and `figures` ran once for the session's smoke store (tests/e2e/conftest.py),
    # beside the other experiments'; the resume below is a fresh process.
    results, data_dir = smoke_store.results, smoke_store.data_dir
    first = smoke_store.sweeps["bn_small_batch"]
    assert first.returncode == 0, first.stderr[-3000:]
    runs = sorted((results / "smoke" / "runs" / "bn_small_batch").iterdir())
    assert len(runs) == NORMS * BATCHES
    seen = set()
    for run in runs:
        status = json.loads((run / "status.json").read_text())
        assert status["status"] == "ok", status
        config = json.loads((run / "config.json").read_text())
        seen.add((config["norm"]["name"], config["train"]["batch_size"]))
        epochs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert [m["epoch"] for m in epochs] == [1]
        summary = json.loads((run / "summary.json").read_text())
        assert 0.0 <= summary["test_err"] <= 1.0 and "wandb_error" not in summary
        assert ("test_acc_batch_stats" in summary) == (config["norm"]["name"] == "batch")
    assert len(seen) == NORMS * BATCHES  # every grid cell once
    mirrored = sorted((results / "smoke" / "runs" / "bn_position_control").glob("*/status.json"))
    assert mirrored  # the sweep that went to W&B offline (tests/e2e/conftest.py WANDB_OFFLINE)
    for run in (status.parent for status in mirrored):
        assert "wandb_error" not in json.loads((run / "summary.json").read_text())
        assert list((run / "wandb").glob("offline-run-*")), f"no W&B offline run in {run}"
    sittings = bn_small_batch_sittings(results)
    sitting = sittings[0]
    assert len(sittings) == 1
    assert sitting["counts"] == {"ok": NORMS * BATCHES} and sitting["skipped"] == 0
    assert sitting["wall_s"] > 0 and "experiment=bn_small_batch" in sitting["command"]

    figures = smoke_store.figures
    assert figures.returncode == 0, figures.stderr
    table = pd.read_parquet(results / "smoke" / "collected" / "bn_small_batch.parquet")
    assert len(table) == NORMS * BATCHES and set(table["status"]) == {"ok"}
    assert {"norm.name", "train.batch_size", "seed", "test_err"} <= set(table.columns)
    assert table["finished_at"].notna().all()  # each run's finish time, from its status.json
    figure = results / "smoke" / "figures" / "bn_small_batch.png"
    assert figure.stat().st_size > 20_000
    report = (results / "smoke" / "REPORT.md").read_text()
    assert "| C4a `bn_small_batch`" in report and "| C4b `bn_small_batch`" in report
    n = NORMS * BATCHES
    assert f"from `bn_small_batch` ({n})," in report  # C4's section: its runs, beside others'
    wall_min = sitting["wall_s"] / 60
    assert f"| `bn_small_batch` | smoke | {n} ({n} ok) | 1 | {wall_min:.1f} |" in report
    provenance = json.loads((results / "smoke" / "provenance.json").read_text())
    compute = {row["experiment"]: row for row in provenance["compute"]}
    assert compute["bn_small_batch"]["wall_source"] == "1 sweep sitting(s)"
    report_run = results / "smoke" / "wandb"  # the report's W&B run
    assert list(report_run.glob("offline-run-*"))
    assert (results / "smoke" / "report.html").stat().st_size > 50_000

    # The exploration notebook: executed on the committed results (tests/e2e/test_notebook.py).

    # Determinism across processes: a run trained by the sweep's process equals the same config
    # trained again here.
    from normexp.train.classification import train_classifier

    monkeypatch.setenv("NORMEXP_DATA_DIR", str(data_dir))
    batch_run = next(
        r
        for r in runs
        if json.loads((r / "config.json").read_text())["norm"]
        == {"name": "batch", "position": "pre"}
        and json.loads((r / "config.json").read_text())["train"]["batch_size"] == 32
    )
    stored = json.loads((batch_run / "summary.json").read_text())
    again = train_classifier(json.loads((batch_run / "config.json").read_text()), lambda m: None)
    for key in ("train_loss", "val_loss", "test_loss", "test_acc_batch_stats"):
        assert again[key] == stored[key], key

    stamps = {run.name: (run / "summary.json").stat().st_mtime_ns for run in runs}
    second = run_cli(smoke_store.sweep_args("bn_small_batch"), results, data_dir)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"({NORMS * BATCHES} finished before, skipped)" in second.stderr
    # Every run finished: decided from the store in this process, no job started.
    assert "so no job was started" in second.stderr
    assert (second.stdout + second.stderr).count("skip ") == 0
    assert {run.name: (run / "summary.json").stat().st_mtime_ns for run in runs} == stamps
    sittings = bn_small_batch_sittings(results)
    assert len(sittings) == 2 and sittings[1]["skipped"] == NORMS * BATCHES
