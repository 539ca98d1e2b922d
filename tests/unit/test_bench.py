"""The bench's measuring code: FLOP counts, the packed replicas' bench (its fp64 check and its
rows), and the store cost model's arithmetic (no timing assertions)."""

import pandas as pd
import pytest
import torch
from torch import nn

from normexp.bench.cost import cost_table, project, seconds_per_image, store_grid
from normexp.bench.flops import step_flops
from normexp.bench.harness import MODEL, NORM
from normexp.bench.replicas import bench_replicas, equivalence_error
from normexp.bench.timing import interleaved_median


def test_flop_count_of_a_known_layer():
    from torch.utils.flop_counter import FlopCounterMode

    conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
    with FlopCounterMode(display=False) as counter:
        conv(torch.randn(2, 3, 16, 16))
    assert counter.get_total_flops() == 2 * 2 * 8 * 16 * 16 * 3 * 9  # 2 FLOPs per MAC


def test_step_flops_scale_with_batch():
    one, four = step_flops(MODEL, NORM, 1), step_flops(MODEL, NORM, 4)
    assert four == 4 * one
    assert 50e6 < one < 70e6  # the quick VGG: about 58 MFLOP per image, forward + backward


@pytest.mark.parametrize(
    "norm",
    [
        NORM,
        {"name": "group", "position": "pre", "num_groups": 4},
        {"name": "layer", "position": "pre"},
    ],
)
def test_the_bench_packs_the_models_it_times_exactly(norm):
    assert equivalence_error(3, 2, MODEL, norm) < 1e-12  # float64: the same math


@pytest.mark.usefixtures("one_torch_thread")  # as the bench runs; threads only contend here
def test_the_replicas_rows_compare_per_replica_image(monkeypatch):
    import normexp.bench.replicas as replicas

    small = {**MODEL, "widths": [4, 8, 8], "convs_per_stage": 1}
    monkeypatch.setattr(replicas, "MODELS", {"CNN quick": small})
    (row,) = bench_replicas(cases=(("CNN quick", 2, 2),), repeats=1)
    assert row["name"] == "K=2 CNN quick, b=2" and row["ratio"] > 0
    assert row["ours"].endswith("ms/img") and "fp64" in row["mark"]


TINY_MLP = {"name": "mlp", "hidden": 16, "depth": 2, "activation": "relu", "weight_side": "none"}


@pytest.mark.usefixtures("one_torch_thread")
def test_the_sgd_rows_time_the_suites_steps_fused_and_looped(monkeypatch, cifar_data):
    import normexp.bench.sgd as sgd

    monkeypatch.setattr(sgd, "CASES", (("MLP", TINY_MLP, 64),))
    monkeypatch.setattr(sgd, "IMAGES", 256)
    step, same = sgd.bench_sgd(cifar_data[0], repeats=1)
    assert step["name"] == "MLP BN, b=64" and step["ratio"] > 0
    assert step["ours"].endswith("ms/img") and step["reference"] == "looped SGD"
    assert same["meets_target"]  # fused and looped: the same update in float64


@pytest.mark.usefixtures("one_torch_thread")
def test_the_test_pass_rows_price_each_piece_in_training_images(monkeypatch, cifar_data):
    import normexp.bench.evaluation as evaluation

    monkeypatch.setattr(evaluation, "TEST_CASES", (("MLP", TINY_MLP, (64,)),))
    monkeypatch.setattr(evaluation, "STANDARD", {"n_train": 256, "n_val": 64, "n_test": 128})
    monkeypatch.setattr(evaluation, "PRECISE_BATCHES", 1)
    (row,) = evaluation.bench_test_pass(cifar_data[0], repeats=1)
    assert row["name"] == "MLP BN, b=64"
    assert all(row[k] > 0 for k in ("eval", "batch_stats", "precise", "train_ms"))


def test_cost_model_arithmetic():
    runs = pd.DataFrame(
        {
            "experiment": ["a", "a", "b", "b"],
            "task": ["classification"] * 4,
            "batch_size": [2, 2, 8, 32],
            "epochs": [2, 2, 1, 1],
            "n_train": [100, 100, 100, 100],
            "seconds": [2.0, 4.0, 1.0, 0.5],
        }
    )
    per_image = seconds_per_image(runs)
    assert per_image == {2: pytest.approx(0.015), 8: pytest.approx(0.01), 32: pytest.approx(0.005)}
    # 4 is halfway between 2 and 8 on log2(batch size); beyond the ends the model is clamped
    grid = [
        dict(batch_size=4, epochs=3, n_train=1000, runs=2),
        dict(batch_size=128, epochs=1, n_train=10, runs=1),
    ]
    assert project(grid, per_image) == pytest.approx(2 * 3 * 1000 * 0.0125 + 10 * 0.005)
    assert project(store_grid(runs), per_image) == pytest.approx(7.5)
    table = cost_table(runs, "experiment")
    assert table.loc["a", "seconds"] == 6.0 and table["share"].sum() == pytest.approx(1.0)
    assert list(table.index) == ["a", "b"]


def test_interleaved_median_alternates_the_calls_and_reads_the_clock_it_is_given():
    calls = []
    costs = {"a": 1, "b": 3}
    now = [0]

    def clock() -> float:  # advances by each call's cost, so a call's time is its cost
        return now[0]

    def make(name: str):  # noqa: ANN202
        def fn() -> None:
            calls.append(name)
            now[0] += costs[name]

        return fn

    medians = interleaved_median({n: make(n) for n in costs}, repeats=3, warmup=1, clock=clock)
    assert medians == {"a": 1, "b": 3}
    assert calls == ["a", "b"] * 4  # one warm-up round, then three, round-robin
