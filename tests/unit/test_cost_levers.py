"""The cost model's prices of issue #30's levers (normexp/bench/cost.py): validation at its
cadence (VAL_SHARE, ``cadence_factor``), torch.compile where it pays (COMPILE_SPEEDUP,
COMPILE_SECONDS), the fused SGD (FUSED_SGD_SPEEDUP) and the LR selection's runs without their
test pass and probes (TEST_PASS, ``selection_factor``). Arithmetic on plain configs, no
composing."""

import pytest

from normexp.bench.cost import (
    COLD_RUNS,
    COMPILE_SECONDS,
    COMPILE_SPEEDUP,
    FUSED_SGD_SPEEDUP,
    INSTRUMENTED_FACTOR,
    TEST_PASS,
    VAL_SHARE,
    cadence_factor,
    compile_seconds,
    compile_speedup,
    fused_sgd_speedup,
    selection_factor,
)


def config(model: str = "resnet", batch: int = 32, every: int | None = 0, epochs: int = 8,
           norm: str = "batch", stage: str = "record", precise: int = 0) -> dict:  # fmt: skip
    train = {"task": "classification", "batch_size": batch, "epochs": epochs, "steps": None,
             "max_minutes": None, "eval_batch_size": 500, "precise_bn_batches": precise,
             "amp": False}  # fmt: skip
    if every is not None:
        train["val_every"] = every
    return {
        "train": train,
        "data": {"n_train": 10_000, "n_val": 2_000, "n_test": 4_000},
        "model": {"name": model},
        "norm": {"name": norm},
        "optim": {"name": "sgd"},
        "runtime": {"pack": "auto", "fused_sgd": True},
        "protocol": {"stage": stage},
    }


def test_the_last_epoch_only_saves_the_measured_share_of_the_others():
    batch, share = VAL_SHARE["resnet"]
    assert cadence_factor(config(batch=batch)) == pytest.approx(1 - share * 7 / 8)
    assert cadence_factor(config(batch=batch, every=4)) == pytest.approx(1 - share * 6 / 8)
    # at batch 2 training costs more per image and validation the same: a smaller share saved
    assert 1 - share * 7 / 8 < cadence_factor(config(batch=2)) < 1


def test_every_epoch_and_what_was_not_measured_cost_as_before():
    assert cadence_factor(config(every=1)) == 1.0
    assert cadence_factor(config(every=None)) == 1.0  # a config from before the field
    assert cadence_factor(config(model="mlp")) == 1.0


def test_compiled_runs_pay_a_cold_compile_in_their_graphs_first_runs_then_warm():
    seen: dict = {}
    paid = [compile_seconds(config(), seen) for _ in range(COLD_RUNS + 2)]
    assert paid == [COMPILE_SECONDS["cold"]] * COLD_RUNS + [COMPILE_SECONDS["warm"]] * 2
    assert compile_seconds(config(batch=128), seen) == COMPILE_SECONDS["cold"]  # another graph
    assert compile_speedup(config()) == COMPILE_SPEEDUP["resnet"]["batch"][32]
    assert compile_speedup(config(model="cnn")) == 1.0  # not measured to gain: never priced


def test_an_instrumented_run_saves_a_smaller_share_its_probes_lengthen_its_epochs():
    instrumented = config()
    instrumented["train"]["task"] = "instrumented_classification"
    assert cadence_factor(config()) < cadence_factor(instrumented) < 1


def test_a_selection_run_saves_its_test_pass_the_more_passes_its_norm_has():
    assert selection_factor(config()) == 1.0  # a run of record: its test pass is read
    plain, bn, precise = (selection_factor(config(norm=n, stage="select", precise=p))
                          for n, p in (("group", 0), ("batch", 0), ("batch", 10)))  # fmt: skip
    assert 1 > plain > bn > precise  # + BN's batch-statistics pass, + precise BN's two
    test, batch_stats, _ = TEST_PASS["resnet"][32]  # in training images per image evaluated
    tested = 4_000 * (test + batch_stats)
    run = 8 * (10_000 // 32 * 32) + 2_000 * test + tested  # training, last-epoch validation
    assert bn == pytest.approx(1 - tested / run)


def test_a_selection_run_of_c9_is_priced_without_its_probes():
    probed = config(stage="select")
    probed["train"]["task"] = "instrumented_classification"
    # the same test pass, over training without the probes the selection run no longer runs
    expected = selection_factor(config(stage="select")) / INSTRUMENTED_FACTOR["resnet"]
    assert selection_factor(probed) == pytest.approx(expected)
    record = config()
    record["train"]["task"] = "instrumented_classification"
    assert selection_factor(record) == 1.0
    # its skipped validation is a larger share of its shorter epochs
    assert cadence_factor(probed) < cadence_factor(record)


def test_a_packed_selection_run_saves_a_larger_share_and_the_lstm_saves_what_was_measured():
    selection = config(model="cnn", batch=2, stage="select")
    assert selection_factor(selection, pack_gain=1.6) < selection_factor(selection) < 1
    lstm = config(model="lstm", stage="select")
    lstm["train"]["task"] = "language_model"
    assert selection_factor(lstm) == 1.0  # its test pass not measured: priced as before


def test_the_fused_sgd_is_priced_for_unpacked_sgd_runs_of_the_mlp_only():
    assert fused_sgd_speedup(config(model="mlp", batch=2)) == FUSED_SGD_SPEEDUP["mlp"][2]
    assert 1 < fused_sgd_speedup(config(model="mlp", batch=4)) <= FUSED_SGD_SPEEDUP["mlp"][2]
    off = config(model="mlp")
    off["runtime"]["fused_sgd"] = False
    adam = config(model="mlp")
    adam["optim"]["name"] = "adam"
    packed = config(model="mlp", batch=2)
    packed["runtime"]["pack"] = 4  # packed groups step PackedSGD
    for unpriced in (off, adam, packed, config(model="cnn"), config(model="resnet", batch=2)):
        assert fused_sgd_speedup(unpriced) == 1.0
