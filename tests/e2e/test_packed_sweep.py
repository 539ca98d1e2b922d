"""End to end: a smoke sweep whose small-batch cells train packed writes the store the same sweep
writes with packing off (run keys, statuses, metrics within float32 rounding), through the LR
protocol's rounds (selection runs packed by multiplier, record runs by seed) and without it."""

import json
from pathlib import Path

import pytest

from tests.helpers import Call, run_cli, run_cli_batch

pytestmark = [pytest.mark.slow]
SWEEP = [
    "normexp.run", "-m", "experiment=bn_small_batch", "profile=smoke", "runtime.progress=false",
    "tracking.mode=disabled", "hydra.sweeper.params.norm=batch",
    "scale.smoke.sweep.batch_sizes='2'", "hydra.sweeper.params.seed='0,1,2'",
]
PROTOCOL = ["protocol.lr_grid=[0.5,2.0]", "protocol.max_widen=0"]


def store(results: Path, protocol: bool = True) -> dict[str, dict]:
    """Each run of the smoke store by key (with or without the LR protocol): its status, config
    and summary."""
    out = {}
    for run in sorted((results / "smoke" / "runs" / "bn_small_batch").iterdir()):
        if not (run / "status.json").exists():
            continue  # selection.json and such
        names = ("status", "config", "summary")
        files = {n: json.loads((run / f"{n}.json").read_text()) for n in names}
        if (files["config"]["protocol"]["lr_grid"] is not None) == protocol:
            out[run.name] = files
    return out


def test_a_packed_sweep_writes_the_store_an_unpacked_one_does(tmp_path, cifar_data):
    # One store holds the packed sweeps with and without the protocol (their keys differ), one
    # process runs both; the unpacked sweep needs a store of its own (the same keys).
    data_dir, extra = cifar_data
    packed_dir = tmp_path / "packed"
    packed, plain = run_cli_batch(
        [Call([*SWEEP, *PROTOCOL, *extra], packed_dir, data_dir),
         Call([*SWEEP, *extra], packed_dir, data_dir)]
    )  # fmt: skip
    assert packed.returncode == 0, packed.stderr[-3000:]
    alone = run_cli([*SWEEP, *PROTOCOL, *extra, "runtime.pack=off"], tmp_path / "alone", data_dir)
    assert alone.returncode == 0, alone.stderr[-3000:]
    ours, theirs = store(packed_dir), store(tmp_path / "alone")
    # 2 selection runs, 3 of record and the check's doubled run (bn_small_batch checks batch 2)
    assert set(ours) == set(theirs) and len(ours) == 2 + 3 + 1
    stages = {k: r["config"]["protocol"]["stage"] for k, r in ours.items()}
    assert sorted(stages.values()) == ["check", "record", "record", "record", "select", "select"]
    for key, run in ours.items():
        other = theirs[key]
        assert run["status"]["status"] == other["status"]["status"] == "ok"
        # the same config but how it ran (runtime: never part of a run key)
        assert {**run["config"], "runtime": None} == {**other["config"], "runtime": None}
        assert (run["config"]["runtime"]["pack"], other["config"]["runtime"]["pack"]) == (
            "auto", "off")  # fmt: skip
        alone_run = stages[key] == "check"  # one run: nothing to pack it with
        assert run["summary"].get("packed_replicas") == (None if alone_run else len(
            [s for s in stages.values() if s == stages[key]]))  # fmt: skip
        assert "packed_replicas" not in other["summary"]
        for metric in ("train_loss", "val_loss", "test_loss"):
            assert run["summary"][metric] == pytest.approx(other["summary"][metric], rel=1e-3)
        for metric in ("val_acc", "test_acc", "train_acc"):
            assert run["summary"][metric] == pytest.approx(other["summary"][metric], abs=2 / 128)
    chosen = [json.loads((r / "smoke" / "runs" / "bn_small_batch" / "selection.json").read_text())
              for r in (packed_dir, tmp_path / "alone")]
    picks = [{c: (v["grid"], v["chosen"]) for c, v in sel["cells"].items()} for sel in chosen]
    assert picks[0] == picks[1]  # the same choice (its scores agree to float32 rounding)
    # Without the protocol (no LR grid) the sweep's seeds pack the same way.
    assert plain.returncode == 0, plain.stderr[-3000:]
    runs = store(packed_dir, protocol=False)
    assert len(runs) == 3 and {r["config"]["seed"] for r in runs.values()} == {0, 1, 2}
    assert all(r["summary"]["packed_replicas"] == 3 for r in runs.values())
    assert "3 ok" in plain.stderr
