"""The cost model's prices of issue #30's last two levers (normexp/bench/cost.py): validation
at its cadence (VAL_SHARE, ``cadence_factor``) and torch.compile where it pays
(COMPILE_SPEEDUP, COMPILE_SECONDS). Arithmetic on plain configs, no composing."""

import pytest

from normexp.bench.cost import (
    COLD_RUNS,
    COMPILE_SECONDS,
    COMPILE_SPEEDUP,
    VAL_SHARE,
    cadence_factor,
    compile_seconds,
    compile_speedup,
)


def config(model: str = "resnet", batch: int = 32, every: int | None = 0, epochs: int = 8) -> dict:
    train = {"task": "classification", "batch_size": batch, "epochs": epochs, "steps": None,
             "max_minutes": None}  # fmt: skip
    if every is not None:
        train["val_every"] = every
    return {
        "train": train,
        "data": {"n_train": 10_000, "n_val": 2_000},
        "model": {"name": model},
        "norm": {"name": "batch"},
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
