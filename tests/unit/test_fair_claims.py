"""The fair protocol's claim changes (issue #12, item 5): C9 by steps to a target training
accuracy (censoring both ways) and relative ICS; C3 decided on the CNN/ReLU cell with the
same-head control beside it; C2 (c) decided by WN alone. Also the CNN's ``final_norm`` option,
the running training accuracy of the probes, and the experiments that use them."""

import json
import math

import pandas as pd
import pytest
import torch
from torch import nn

from normexp.analysis.claims import bn_position, not_ics, weight_side
from normexp.errors import ConfigError
from normexp.models import build_model, check_model
from normexp.sweep import sweep_overrides
from normexp.tracking.store import run_key
from normexp.train.instrumented import StepProbes
from normexp.validate import resolve_config
from tests.unit.test_claims_analyses import check, drawn, position_table, weight_side_table
from tests.unit.test_landscape import row

SEEDS = range(5)
BUDGET = 2000


# --- C9: steps to a target training accuracy ------------------------------------------------


def running(reach: int | None, budget: int = BUDGET, every: int = 100) -> tuple[list, list]:
    """A running training accuracy that crosses 0.6 at step ``reach`` (None: never)."""
    steps = list(range(every, budget + 1, every))
    if reach is None:
        return steps, [0.5 * s / budget for s in steps]
    return steps, [0.6 * s / reach if s < reach else 0.6 + 0.1 * s / budget for s in steps]


def ics_table(
    reach: dict[str, int | None],
    rel: dict[str, float] | None = None,
    l2: dict[str, float] | None = None,
    cos: dict[str, float] | None = None,
    target: float = 0.6,
) -> pd.DataFrame:
    """not_ics runs: per norm, the step its running accuracy reaches 0.6 (None: never), plus
    small per-seed jitter (a multiple of the window) and the ICS means."""
    rel = rel or {"none": 0.5, "batch": 0.6, "noisy_batch": 0.7}
    l2 = l2 or {"none": 0.05, "batch": 0.06, "noisy_batch": 0.07}
    cos = cos or {"none": 0.95, "batch": 0.94, "noisy_batch": 0.93}
    rows = []
    for seed in SEEDS:
        for norm, step in reach.items():
            jitter = 100 * (seed % 2) if step is not None and step + 100 <= BUDGET else 0
            steps, acc = running(None if step is None else step + jitter)
            rows.append(
                row(
                    norm,
                    seed,
                    0.5,
                    **{
                        "target.train_acc": target,
                        "train_acc": acc[-1],
                        "val_acc": acc[-1] - 0.05,
                        "train_loss": 1.0 + 0.01 * seed + (0.2 if step is None else 0),
                        "trained_steps": BUDGET,
                        "running_train_acc_steps": str(steps),
                        "running_train_acc_series": str(acc),
                        "probe_ics_l2_mean": l2[norm] * (1 + 0.01 * seed),
                        "probe_ics_l2_rel_mean": rel[norm] * (1 + 0.01 * seed),
                        "probe_ics_cos_mean": cos[norm] - 0.001 * seed,
                        "probe_ics_l2_series": "[0.1, 0.2, None]",
                        "probe_ics_l2_rel_series": "[0.5, 0.4, 0.3]",
                        "probe_ics_cos_series": "[0.99, 1.0, inf]",
                    },
                )
            )
    return pd.DataFrame(rows)


def c9(table: pd.DataFrame) -> dict:
    v = not_ics.verdict({"not_ics": table})
    json.dumps(v, allow_nan=False)
    return v


def part(v: dict, i: int) -> dict:
    return v["sub"][i]


def test_steps_to_target_is_the_first_crossing_and_censored_at_budget_plus_one():
    assert not_ics.steps_to_target([25, 50, 75], [0.3, 0.6, 0.7], 0.6, 75) == (50, False)
    assert not_ics.steps_to_target([25, 50], [math.nan, 0.61], 0.6, 50) == (50, False)
    assert not_ics.steps_to_target([25, 50], [0.3, 0.59], 0.6, 50) == (51, True)
    assert not_ics.steps_to_target([], [], 0.6, 2000) == (2001, True)


def test_c9_supported_when_noisy_bn_is_as_fast_as_bn_and_none_never_gets_there(tmp_path):
    v = c9(ics_table({"none": None, "batch": 1000, "noisy_batch": 1100}))
    check(v, "supported")
    assert part(v, 0)["verdict"] == part(v, 1)["verdict"] == "supported"
    assert v["estimate"] == pytest.approx(1.1, rel=0.05)  # steps noisy BN / BN
    assert v["details"]["means"]["none"]["censored_seeds"] == list(SEEDS)
    assert v["details"]["target_train_acc"] == 0.6
    assert "60% training accuracy" in part(v, 0)["statistic"]
    # reported beside (a): final training and validation accuracy, noisy BN − BN, in pp
    assert v["details"]["means"]["batch"]["val_acc_pct"] == pytest.approx(65.0)
    assert v["details"]["val_acc_noisy_minus_bn_pp"][0] == pytest.approx(0.0, abs=1e-9)
    assert v["details"]["train_acc_noisy_minus_none_pp"][0] == pytest.approx(20.0)  # 70 − 50
    table = ics_table({"none": None, "batch": 900, "noisy_batch": 1000})
    drawn(not_ics.ANALYSIS, {"not_ics": table}, tmp_path)


def test_c9_without_a_resnet_gap_is_decided_on_the_cnn_and_reports_the_resnet_apart(tmp_path):
    # From standard on not_ics also runs the ResNet-20: never pooled with the CNN's runs. Here
    # no norm is as accurate as BN on both (no baseline gap): the CNN decides, as the fallback.
    cnn = ics_table({"none": None, "batch": 1000, "noisy_batch": 1100}).assign(
        **{"model.name": "cnn"}
    )
    resnet = ics_table({"none": None, "batch": 800, "noisy_batch": 1600}).assign(
        **{"model.name": "resnet"}
    )
    alone = c9(cnn)
    v = c9(pd.concat([cnn, resnet], ignore_index=True))
    assert v["verdict"] == alone["verdict"] == "supported"
    assert v["estimate"] == alone["estimate"]  # the ResNet's runs change nothing of record
    arch = v["details"]["architecture"]
    assert arch["decided_on"] == "cnn"
    other = arch["others"]["resnet"]
    assert other["verdict"] == "inconclusive" and other["estimate"] == pytest.approx(2.0, rel=0.1)
    assert "ResNet's baseline does not show the gap" in v["architecture"]
    assert "C9 (a) supported on the VGG-style CNN, contradicted on the ResNet" in v["notes"]
    assert "ResNet's deciding cells have not run" in alone["architecture"]
    drawn(not_ics.ANALYSIS, {"not_ics": pd.concat([cnn, resnet])}, tmp_path)


def test_c9_a_contradicted_when_noisy_bn_needs_far_more_steps():
    v = c9(ics_table({"none": None, "batch": 800, "noisy_batch": 1600}))
    assert part(v, 0)["verdict"] == "contradicted"
    assert v["estimate"] == pytest.approx(2.0, rel=0.1)


def test_c9_a_censored_noisy_bn_can_contradict_but_never_support():
    # noisy BN never reaches the target: its steps (budget + 1) are a lower bound
    v = c9(ics_table({"none": None, "batch": 700, "noisy_batch": None}))
    assert part(v, 0)["verdict"] == "contradicted"  # even the lower bound is 2001 / ~750
    assert v["details"]["means"]["noisy_batch"]["censored_seeds"] == list(SEEDS)
    # where the tests alone would support (a), a censored noisy-BN run forbids it
    supported = {"decision": "supported", "p": 0.01, "p_holm": 0.01}
    tests = {name: dict(supported) for name in ("noisy BN / BN (vs 1.25)", "none / noisy BN")}
    call, by, note = not_ics.part_a_call(tests, {"batch": [], "noisy_batch": [3]})
    assert (call, by) == ("inconclusive", "noisy BN / BN (vs 1.25)") and "lower bound" in note
    assert not_ics.part_a_call(tests, {"batch": [], "noisy_batch": []})[0] == "supported"


def test_c9_a_inconclusive_when_bn_does_not_reach_the_target():
    v = c9(ics_table({"none": None, "batch": None, "noisy_batch": None}))
    assert part(v, 0)["verdict"] == "inconclusive"
    assert "schedule too short" in part(v, 0)["note"] and "schedule too short" in v["notes"]


def test_c9_a_inconclusive_when_bn_is_not_faster_than_none():
    v = c9(ics_table({"none": 1000, "batch": 1000, "noisy_batch": 1000}))
    assert part(v, 0)["verdict"] == "inconclusive"


def test_c9_b_is_decided_on_the_relative_ics():
    # With BN the absolute change is 10x smaller, but so is the gradient: relative ICS equal
    reach = {"none": None, "batch": 1000, "noisy_batch": 1050}
    l2 = {"none": 0.5, "batch": 0.05, "noisy_batch": 0.05}
    rel = {"none": 0.5, "batch": 0.5, "noisy_batch": 0.5}
    v = c9(ics_table(reach, rel=rel, l2=l2, cos={"none": 0.9, "batch": 0.9, "noisy_batch": 0.9}))
    assert part(v, 1)["verdict"] == "supported"
    assert v["details"]["ics_log10_l2_ratio_bn_over_none"][0] == pytest.approx(-1, abs=0.05)
    # relative ICS clearly lower with BN and cosine higher: BN does reduce ICS
    rel = {"none": 0.5, "batch": 0.05, "noisy_batch": 0.5}
    cos = {"none": 0.8, "batch": 0.99, "noisy_batch": 0.9}
    v = c9(ics_table(reach, rel=rel, cos=cos))
    assert part(v, 1)["verdict"] == "contradicted"
    assert "relative" in part(v, 1)["statistic"]


def test_c9_needs_a_target_and_the_running_accuracy():
    table = ics_table({"none": None, "batch": 1000, "noisy_batch": 1100})
    assert c9(table.drop(columns=["target.train_acc"]))["verdict"] == "not run yet"
    assert c9(table.assign(**{"target.train_acc": None}))["verdict"] == "not run yet"
    assert c9(pd.DataFrame())["verdict"] == "not run yet"


def test_probes_keep_a_running_training_accuracy_between_probe_points():
    probes = StepProbes(every=2, probes=["ics"], step_sizes=[])
    model = nn.Sequential(nn.Conv2d(3, 2, 3), nn.Conv2d(2, 2, 3), nn.Flatten(), nn.LazyLinear(10))
    x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    model(x)
    for step, correct in enumerate([1, 3, 4, 0, 2]):
        probes.before_step(model, x, y, step, lr=0.1)
        probes.after_forward(torch.tensor(correct), 4)
    summary = probes.summary()
    # windows: steps 0-1 (4 of 8), 2-3 (4 of 8), then step 4 (2 of 4) closed at the end
    assert summary["running_train_acc_steps"] == [2, 4, 5]
    assert summary["running_train_acc_series"] == [0.5, 0.5, 0.5]
    assert summary["trained_steps"] == 5
    assert "probe_ics_l2_rel_mean" in summary and "probe_ics_l2_rel_by_layer" in summary
    restored = StepProbes(every=2, probes=["ics"], step_sizes=[])
    restored.load_state_dict(json.loads(json.dumps(probes.state_dict())))
    assert restored.summary() == summary


# --- C3: the CNN/ReLU cell decides; the control is reported beside it ------------------------


def control_table(post_minus_pre: float) -> pd.DataFrame:
    df = position_table({("cnn", "relu"): post_minus_pre})
    return df.assign(**{"model.final_norm": False})


def test_c3_is_decided_by_the_relu_cnn_cell_alone():
    deltas = {("cnn", "relu"): 0.03, ("mlp", "tanh"): -0.03}
    v = bn_position.verdict({"bn_position": position_table(deltas)})
    check(v, "supported")  # a pre win elsewhere is reported, it does not veto
    assert "mlp/tanh" in v["notes"] and v["details"]["deciding_cell"] == "cnn/relu"
    assert "control not run yet" in v["effect"]


def test_c3_says_when_the_control_flips_the_sign(tmp_path):
    tables = {
        "bn_position": position_table({("cnn", "relu"): 0.03, ("mlp", "relu"): 0.0}),
        "bn_position_control": control_table(-0.03),
    }
    v = bn_position.verdict(tables)
    check(v, "supported")
    assert v["details"]["control_flips_sign"] is True
    assert "flips the sign" in v["notes"] and "flips the sign" in v["sub"][0]["note"]
    control = v["details"]["cells"]["/".join(bn_position.CONTROL_CELL)]
    assert control["decision"] == "contradicted" and control["seeds"] == 4
    drawn(bn_position.ANALYSIS, tables, tmp_path)
    same = bn_position.verdict({**tables, "bn_position_control": control_table(0.03)})
    assert same["details"]["control_flips_sign"] is False and "flips" not in same["notes"]


def test_c3_deciding_runs_are_the_relu_cnn_cell():
    tables = {
        "bn_position": position_table({("cnn", "relu"): 0.03, ("mlp", "tanh"): 0.0}),
        "bn_position_control": control_table(0.0),
    }
    deciding = bn_position.deciding(tables)["bn_position"]
    cells = zip(deciding["model.name"], deciding["model.activation"], strict=True)
    assert set(cells) == {("cnn", "relu")}


# --- C3's control in the CNN ----------------------------------------------------------------

CNN = {"name": "cnn", "widths": [4, 8], "convs_per_stage": 2, "activation": "relu"}


def norm(position: str, name: str = "batch") -> dict:
    return {"name": name, "position": position}


def norms_in(net: nn.Module) -> int:
    return sum(type(m).__name__ == "BatchNorm" for m in net.modules())


@pytest.mark.parametrize("position", ["pre", "post"])
def test_final_norm_false_leaves_the_last_block_conv_then_activation(position):
    default = build_model(CNN, norm(position))
    control = build_model({**CNN, "final_norm": False}, norm(position))
    last = control.features[-1]
    assert [type(m) for m in last] == [nn.Conv2d, nn.ReLU] and last[0].bias is not None
    assert norms_in(control) == norms_in(default) - 1 == 3
    assert control(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_final_norm_gives_pre_and_post_the_same_layer_before_the_head():
    pre = build_model({**CNN, "final_norm": False}, norm("pre"))
    post = build_model({**CNN, "final_norm": False}, norm("post"))
    assert type(pre.features[-1][-1]) is type(post.features[-1][-1]) is nn.ReLU
    assert norms_in(pre) == norms_in(post) == 3


@pytest.mark.parametrize(
    ("model", "norm_cfg"),
    [
        ({"name": "mlp", "hidden": 8, "depth": 2, "activation": "relu"}, norm("pre")),
        ({**CNN}, norm("pre", "none")),
    ],
    ids=["mlp", "no-norm"],
)
def test_final_norm_false_is_refused_where_undefined(model, norm_cfg):
    with pytest.raises(ConfigError) as info:
        check_model({**model, "final_norm": False}, norm_cfg, 8)
    assert info.value.field == "model.final_norm"


def test_final_norm_true_keeps_the_run_key():
    config = {"model": {**CNN}, "norm": norm("pre"), "seed": 0}
    assert run_key({**config, "model": {**CNN, "final_norm": True}}) == run_key(config)
    assert run_key({**config, "model": {**CNN, "final_norm": False}}) != run_key(config)


# --- the experiments ------------------------------------------------------------------------


def compose(*overrides: str):
    import hydra

    return hydra.compose("config", overrides=list(overrides), return_hydra_config=True)


def test_the_c3_control_composes_to_the_relu_cnn_without_a_final_norm(hydra_ctx):
    cfg = compose("experiment=bn_position_control")
    jobs = sweep_overrides(cfg)
    assert len(jobs) == 2 * 3  # pre, post x the quick profile's seeds of record
    resolved = [resolve_config(compose(*job)) for job in jobs[:2]]
    assert {r["norm"]["position"] for r in resolved} == {"pre", "post"}
    for r in resolved:
        assert r["model"]["final_norm"] is False and r["model"]["activation"] == "relu"
        assert r["claim"] == {"id": "C3", "name": "bn_position_control"}
        assert r["train"]["epochs"] == 8 and r["protocol"]["lr_grid"] == [0.5, 1.0, 2.0]
    # bn_position's own cells keep final_norm at its neutral value
    base = resolve_config(compose("experiment=bn_position", "model=cnn"))
    assert base["model"]["final_norm"] is True


@pytest.mark.parametrize(("profile", "target"), [("smoke", 0.2), ("quick", 0.6), ("paper", 0.9)])
def test_c9_states_its_target_per_profile(hydra_ctx, profile, target):
    r = resolve_config(compose("experiment=not_ics", f"profile={profile}"))
    assert r["target"]["train_acc"] == target
    if profile == "quick":
        assert r["train"]["epochs"] * 4000 // r["train"]["batch_size"] == BUDGET


# --- C2 (c): decided by WN alone ------------------------------------------------------------


def test_c2c_is_decided_by_wn_alone_with_wn_mean_only_bn_beside(tmp_path):
    table = weight_side_table(holds=True)
    # WN alone no better than none, WN + mean-only BN much better: (c) is not supported
    wn = (table["model.weight_side"] == "weight_norm") & (table["norm.name"] == "none")
    none = (table["model.weight_side"] == "none") & (table["norm.name"] == "none")
    none &= (table["optim.l1"] == 0) & (table["optim.weight_decay"] == 0)
    table.loc[wn, "test_acc"] = table.loc[none, "test_acc"].to_numpy()
    v = weight_side.verdict({"weight_side": table})
    assert v["details"]["decisions"]["c_wn_minus_none_acc_pp"] == "inconclusive"
    assert v["sub"][2]["statistic"] == "test accuracy, WN alone − none, pp"
    beside = v["details"]["wn_mean_only_bn_minus_none_acc_pp"]
    assert beside["mean"] == pytest.approx(16, abs=1)
    assert "WN + mean-only BN minus none" in v["effect"]
    drawn(weight_side.ANALYSIS, {"weight_side": table}, tmp_path)
