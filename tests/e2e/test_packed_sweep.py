"""End to end: a smoke sweep whose small-batch cells train packed writes the store the same sweep
writes with packing off (statuses, configs, metrics within float32 rounding, the same LR
choice), through the LR protocol's rounds (selection runs packed by multiplier, record runs by
seed) and without it."""

import json
from pathlib import Path

import pytest

from tests.helpers import Call, run_cli_batch

pytestmark = [pytest.mark.slow]
SWEEP = [
    "normexp.run", "-m", "experiment=bn_small_batch", "profile=smoke", "runtime.progress=false",
    "tracking.mode=disabled", "hydra.sweeper.params.norm=batch",
    "scale.smoke.sweep.batch_sizes='2'", "hydra.sweeper.params.seed='0,1'",
]
PROTOCOL = ["protocol.lr_grid=[0.5,2.0]", "protocol.max_widen=0", "protocol.check=null"]
ALONE = "bn_small_batch_alone"  # the unpacked sweep's store folder (claim.name), beside it


def store(results: Path, folder: str, protocol: bool = True) -> dict[tuple, dict]:
    """Each run of a smoke store folder (with or without the LR protocol) by (stage, seed,
    multiplier): its status, config and summary."""
    out = {}
    for run in sorted((results / "smoke" / "runs" / folder).iterdir()):
        if not (run / "status.json").exists():
            continue  # selection.json and such
        names = ("status", "config", "summary")
        files = {n: json.loads((run / f"{n}.json").read_text()) for n in names}
        config = files["config"]
        if (config["protocol"]["lr_grid"] is not None) == protocol:
            out[config["protocol"]["stage"], config["seed"], config["optim"]["lr_mult"]] = files
    return out


def test_a_packed_sweep_writes_the_store_an_unpacked_one_does(tmp_path, cifar_data):
    # One process, one store: the packed sweeps with and without the protocol (their keys
    # differ), and the unpacked one under its own claim name (the same runs, another folder).
    data_dir, extra = cifar_data
    packed, plain, alone = run_cli_batch(
        [Call([*SWEEP, *PROTOCOL, *extra], tmp_path, data_dir),
         Call([*SWEEP, *extra], tmp_path, data_dir),
         Call([*SWEEP, *PROTOCOL, *extra, "runtime.pack=off", f"claim.name={ALONE}"],
              tmp_path, data_dir)]
    )  # fmt: skip
    for result in (packed, plain, alone):
        assert result.returncode == 0, result.stderr[-3000:]
    ours, theirs = store(tmp_path, "bn_small_batch"), store(tmp_path, ALONE)
    assert set(ours) == set(theirs) and len(ours) == 2 + 2  # 2 selection runs, 2 of record
    for key, run in ours.items():
        other = theirs[key]
        assert run["status"]["status"] == other["status"]["status"] == "ok"
        # the same config but how it ran and where it is filed (neither is what it computed)
        def same(config: dict) -> dict:
            return {**config, "runtime": None, "claim": config["claim"]["id"]}

        assert same(run["config"]) == same(other["config"])
        assert (run["config"]["runtime"]["pack"], other["config"]["runtime"]["pack"]) == (
            "auto", "off")  # fmt: skip
        assert run["summary"]["packed_replicas"] == 2 and "packed_replicas" not in other["summary"]
        for metric in ("train_loss", "val_loss", "test_loss"):
            assert run["summary"][metric] == pytest.approx(other["summary"][metric], rel=1e-3)
        for metric in ("val_acc", "test_acc", "train_acc"):
            assert run["summary"][metric] == pytest.approx(other["summary"][metric], abs=2 / 128)
    chosen = [json.loads((tmp_path / "smoke" / "runs" / f / "selection.json").read_text())
              for f in ("bn_small_batch", ALONE)]
    picks = [{c: (v["grid"], v["chosen"]) for c, v in sel["cells"].items()} for sel in chosen]
    assert picks[0] == picks[1]  # the same choice (its scores agree to float32 rounding)
    # Without the protocol (no LR grid) the sweep's seeds pack the same way.
    runs = store(tmp_path, "bn_small_batch", protocol=False)
    assert len(runs) == 2 and {seed for _, seed, _ in runs} == {0, 1}
    assert all(r["summary"]["packed_replicas"] == 2 for r in runs.values())
    assert "2 ok" in plain.stderr
