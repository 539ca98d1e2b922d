"""End to end: a smoke sweep whose small-batch cells train packed writes the store the same sweep
writes with packing off (run keys, statuses, metrics within float32 rounding), through the LR
protocol's rounds (selection runs packed by multiplier, record runs by seed) and without it."""

import json
from pathlib import Path

import pytest

from normexp.tasks import get_task
from normexp.tracking.store import run_key
from tests.helpers import Call, run_cli_batch

pytestmark = [pytest.mark.slow]
SWEEP = [
    "normexp.run", "-m", "experiment=bn_small_batch", "profile=smoke", "runtime.progress=false",
    "tracking.mode=disabled", "hydra.sweeper.params.norm=batch",
    "scale.smoke.sweep.batch_sizes='2'", "hydra.sweeper.params.seed='0,1'",
    "hydra.launcher.n_jobs=1",  # a group job trains in the sweep's process as in a worker's
]
PROTOCOL = ["protocol.lr_grid=[0.5,2.0]", "protocol.max_widen=0", "protocol.check=null"]


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


def separate_summary(config: dict) -> dict:
    """The run ``config`` describes, trained on its own in this process (runtime.pack off): what
    the unpacked sweep's job for it writes as its summary."""
    alone = {**config, "runtime": {**config["runtime"], "pack": "off"}}
    return get_task(config["train"]["task"]).train(alone, lambda metrics: None)


def test_a_packed_sweep_writes_the_store_an_unpacked_one_does(tmp_path, cifar_data, monkeypatch):
    # One process runs the packed sweeps with and without the protocol (their keys differ); each
    # run of record and selection is then trained alone from its stored config, as the unpacked
    # sweep's job would train it, and the two compared.
    data_dir, extra = cifar_data
    packed, plain = run_cli_batch(
        [Call([*SWEEP, *PROTOCOL, *extra], tmp_path, data_dir),
         Call([*SWEEP, *extra], tmp_path, data_dir)]
    )  # fmt: skip
    for result in (packed, plain):
        assert result.returncode == 0, result.stderr[-3000:]
    ours = store(tmp_path, "bn_small_batch")
    assert len(ours) == 2 + 2  # 2 selection runs (by multiplier), 2 of record (by seed)
    for (stage, seed, mult), run in ours.items():
        config = run["config"]
        assert run["status"]["status"] == "ok" and config["runtime"]["pack"] == "auto"
        assert (config["seed"], config["optim"]["lr_mult"]) == (seed, mult)
        # the key the unpacked job has: runtime is never part of it
        assert run["summary"]["run_key"] == run_key({**config, "runtime": None})
        assert run["summary"]["packed_replicas"] == 2
        monkeypatch.setenv("NORMEXP_DATA_DIR", str(data_dir))
        other = separate_summary({**config, "paths": {"results_dir": str(tmp_path / "alone"),
                                                      "data_dir": str(data_dir)}})
        assert "packed_replicas" not in other
        # a selection run measures no test set (what the selection reads only), packed or not
        tested = stage != "select"
        assert ("test_loss" in run["summary"]) == ("test_loss" in other) == tested
        for metric in ("train_loss", "val_loss", "test_loss")[: 3 if tested else 2]:
            assert run["summary"][metric] == pytest.approx(other[metric], rel=1e-3), stage
        for metric in ("val_acc", "train_acc", "test_acc")[: 3 if tested else 2]:
            assert run["summary"][metric] == pytest.approx(other[metric], abs=2 / 128), stage
    # Without the protocol (no LR grid) the sweep's seeds pack the same way.
    runs = store(tmp_path, "bn_small_batch", protocol=False)
    assert len(runs) == 2 and {seed for _, seed, _ in runs} == {0, 1}
    assert all(r["summary"]["packed_replicas"] == 2 for r in runs.values())
    assert "2 ok" in plain.stderr
