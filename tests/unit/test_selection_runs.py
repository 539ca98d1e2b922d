"""An LR selection's run (protocol.stage select) measures what the selection reads and nothing
else (normexp/train/cadence.py, issue #30): no test set (test metrics, BN's batch-statistics and
precise-BN passes, sample grids), no probes; it trains, validates and is keyed as before."""

import copy
import json

import pytest

from normexp.tasks import get_task
from normexp.tracking.store import run_key
from normexp.train.cadence import selection_run
from normexp.train.image_to_image import SAMPLE_GRID
from normexp.validate import resolve_config
from tests.helpers import REPO

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SELECT = "protocol.stage=select"
SMALL = ("data.n_train=128", "train.batch_size=64")  # 2 steps an epoch
# what the same run at any other stage has, and a selection run must not
TEST_KEYS = {"test_acc", "test_loss", "test_err", "test_acc_batch_stats", "test_acc_precise_bn"}
# what a selection reads, or reads beside it (did_not_train), equal at both stages
SAME = ("train_loss", "train_acc", "val_acc", "val_loss", "did_not_train", "epochs")


def train(cfg: dict) -> tuple[dict, list[dict]]:
    logged: list[dict] = []
    return get_task(cfg["train"]["task"]).train(cfg, logged.append), logged


def without_timing(epochs: list[dict]) -> list[dict]:
    return [{k: v for k, v in m.items() if "time" not in k and "per_s" not in k} for m in epochs]


def test_a_selection_run_has_validation_but_no_test_metrics_and_trains_the_same(smoke_cfg):
    run = (*SMALL, "norm=batch", "train.precise_bn_batches=1", "train.epochs=2")
    record, record_log = train(resolve_config(smoke_cfg(*run)))
    selection, selection_log = train(resolve_config(smoke_cfg(*run, SELECT)))
    assert set(record) >= TEST_KEYS  # BN with precise BN: every piece of the test pass
    assert not any(k.startswith("test_") or "precise" in k for k in selection), selection
    for key in SAME:
        assert selection[key] == record[key], key
    assert without_timing(selection_log) == without_timing(record_log)  # the same epochs


def test_a_selection_run_asked_to_test_every_epoch_still_does_not(smoke_cfg):
    cfg = resolve_config(smoke_cfg(*SMALL, "train.test_every_epoch=true", SELECT))
    summary, logged = train(cfg)
    assert "val_acc" in summary and not any(k.startswith("test_") for m in logged for k in m)
    assert not any(k.startswith("test_") for k in summary)


def test_a_selection_run_of_c9_skips_its_probes_and_trains_the_same(smoke_cfg):
    # noisy BN: the probes replay the step's own noise draw; without them the draws are the same
    run = ("experiment=not_ics", "norm=noisy_batch", *SMALL, "train.probe_every=1")
    record, record_log = train(resolve_config(smoke_cfg(*run)))
    selection, selection_log = train(resolve_config(smoke_cfg(*run, SELECT)))
    assert record["probe_points"] == 2 and "probe_ics_l2_mean" in record
    assert not any("probe" in k or "running_train_acc" in k for k in selection), selection
    for key in SAME:  # C9 selects on the last epoch's training accuracy
        assert selection[key] == record[key], key
    assert not any("probe" in k for m in selection_log for k in m)
    assert [m["train_acc"] for m in selection_log] == [m["train_acc"] for m in record_log]


def test_a_selection_run_of_the_generator_writes_no_test_metrics_nor_sample_grid(
    smoke_cfg, tmp_path
):
    run = ("experiment=bn_generation", "norm=batch", "train.batch_size=64", "train.samples=4")
    cfg = resolve_config(smoke_cfg(*run, SELECT))
    # the grid would go beside the checkpoint, in the run folder
    summary = get_task("image_to_image").train(cfg, lambda m: None, 0, tmp_path / "checkpoint.pt")
    assert summary["val_psnr"] > 0 and summary["sample_grid"] is None
    assert not any(k.startswith(("test_", "input_")) for k in summary)
    assert not (tmp_path / SAMPLE_GRID).exists()


@pytest.mark.usefixtures("results_in_tmp")
def test_a_selection_run_of_the_lstm_reads_no_test_split(compose_global, fake_ptb):
    run = ("experiment=rnn_norm", "profile=smoke", "runtime.progress=false", "norm=none",
           f"paths.data_dir={fake_ptb}", "data.train_tokens=2000", "train.epochs=1")  # fmt: skip
    record, _ = train(resolve_config(compose_global(*run)))
    selection, _ = train(resolve_config(compose_global(*run, SELECT)))
    assert "test_bpc" in record and not any(k.startswith("test_") for k in selection)
    for key in ("train_bpc", "valid_bpc", "valid_bpc_long"):
        assert selection[key] == record[key], key


def test_only_the_selection_stage_is_a_selection_run():
    assert selection_run({"protocol": {"stage": "select"}})
    for stage in ("record", "ladder", "check"):
        assert not selection_run({"protocol": {"stage": stage}})
    assert not selection_run({})  # a bench's config, without a protocol section


def test_nothing_new_enters_a_run_key(smoke_cfg):
    config = resolve_config(smoke_cfg(SELECT))
    before = copy.deepcopy(config)  # runtime.fused_sgd is the one field this change added
    del before["runtime"]["fused_sgd"]
    assert run_key(config) == run_key(before)
    # committed selection runs are read back under the keys their folders have
    stored = sorted((REPO / "results").glob("*/runs/*/*/config.json"))
    selections = [p for p in stored if '"stage": "select"' in p.read_text()][:50]
    if not selections:
        pytest.skip("no committed selection runs in this checkout")
    for path in selections:
        assert run_key(json.loads(path.read_text())) == path.parent.name, path
