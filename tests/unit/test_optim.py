"""Learning-rate scaling, schedules, weight-decay groups and the optimizer/scheduler builders."""

import math

import pytest
import torch
from torch import nn

from normexp.bench.harness import SGD
from normexp.errors import ConfigError
from normexp.models import build_model
from normexp.train.optim import (
    build_optimizer,
    build_optimizer_and_scheduler,
    build_scheduler,
    lr_factor,
    parameter_groups,
    scaled_lr,
)

MLP = {"name": "mlp", "hidden": 8, "depth": 2, "activation": "relu"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny_model(norm: str = "batch", position: str = "pre") -> nn.Module:
    torch.manual_seed(0)
    return build_model(MLP, {"name": norm, "position": position})


# --- scaled_lr -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("batch", "rule", "expected"),
    [
        (128, "linear", 0.2),
        (256, "linear", 0.4),
        (32, "linear", 0.05),
        (2, "linear", 0.2 / 64),
        (512, "sqrt", 0.4),
        (32, "sqrt", 0.1),
        (256, "sqrt", 0.2 * math.sqrt(2)),
        (2, "none", 0.2),
        (1024, "none", 0.2),
    ],
)
def test_scaled_lr(batch, rule, expected):
    assert scaled_lr(0.2, batch, rule) == pytest.approx(expected, rel=1e-12)


def test_scaled_lr_unknown_rule():
    with pytest.raises(ConfigError) as info:
        scaled_lr(0.2, 64, "quadratic")
    assert info.value.field == "optim.lr_scaling"
    assert all(r in str(info.value) for r in ("linear", "sqrt", "none"))


# --- lr_factor -------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "constant"])
def test_warmup_rises_linearly_to_the_peak(schedule):
    total, frac = 50, 0.2  # 10 warm-up steps
    warm = [lr_factor(s, total, schedule, frac) for s in range(10)]
    assert warm == pytest.approx([(s + 1) / 10 for s in range(10)])
    assert all(b > a for a, b in zip(warm, warm[1:], strict=False))
    assert warm[0] > 0  # the first step already trains
    assert lr_factor(10, total, schedule, frac) == pytest.approx(1.0)


def test_onecycle_decays_linearly_to_zero():
    total, frac = 50, 0.2
    after = [lr_factor(s, total, "onecycle", frac) for s in range(10, total + 1)]
    assert after[0] == pytest.approx(1.0)
    assert after[-1] == 0.0  # at total_steps: the end of training
    assert all(b < a for a, b in zip(after, after[1:], strict=False))
    steps = [a - b for a, b in zip(after, after[1:], strict=False)]
    assert steps == pytest.approx([1 / 40] * 40)  # linear
    assert lr_factor(total - 1, total, "onecycle", frac) == pytest.approx(1 / 40)
    assert lr_factor(total + 5, total, "onecycle", frac) == 0.0  # never negative


def test_cosine_is_monotone_after_warmup_and_ends_at_zero():
    total, frac = 40, 0.25
    after = [lr_factor(s, total, "cosine", frac) for s in range(10, total + 1)]
    assert after[0] == pytest.approx(1.0)
    assert all(b < a for a, b in zip(after, after[1:], strict=False))
    assert after[15] == pytest.approx(0.5)  # half way through the decay
    assert after[-1] == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(total + 10, total, "cosine", frac) == pytest.approx(0.0, abs=1e-12)


def test_no_warmup_starts_at_peak():
    for schedule in ("onecycle", "cosine", "constant"):
        assert lr_factor(0, 10, schedule, 0.0) == 1.0
    assert [lr_factor(s, 10, "constant", 0.0) for s in range(10)] == [1.0] * 10
    assert lr_factor(5, 10, "onecycle", 0.0) == pytest.approx(0.5)


def test_tiny_warmup_is_at_least_one_step():
    assert lr_factor(0, 10, "onecycle", 0.01) == 1.0  # one warm-up step of factor 1/1


def test_unknown_schedule():
    with pytest.raises(ConfigError) as info:
        lr_factor(5, 10, "step", 0.0)
    assert info.value.field == "optim.schedule"
    assert "onecycle" in str(info.value) and "cosine" in str(info.value)


def test_build_scheduler_refuses_unknown_schedule_at_construction():
    model = tiny_model()
    opt = build_optimizer(model, SGD, 128)
    with pytest.raises(ConfigError) as info:
        build_scheduler(opt, {**SGD, "schedule": "bogus"}, 10)
    assert info.value.field == "optim.schedule"


# --- parameter groups ------------------------------------------------------------------


def test_norm_gains_shifts_and_biases_are_not_decayed():
    model = tiny_model("batch", "post")  # post: linear layers keep their biases too
    decay, no_decay = parameter_groups(model, 1e-3, decay_norm_and_bias=False)
    assert decay["weight_decay"] == 1e-3 and no_decay["weight_decay"] == 0.0
    decay_ids = {id(p) for p in decay["params"]}
    no_decay_ids = {id(p) for p in no_decay["params"]}
    assert decay_ids.isdisjoint(no_decay_ids)
    assert decay_ids | no_decay_ids == {id(p) for p in model.parameters()}
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert len(norms) == MLP["depth"]
    assert {id(m.weight) for m in linears} == decay_ids
    expected_no_decay = {id(m.bias) for m in linears}
    expected_no_decay |= {id(p) for m in norms for p in (m.weight, m.bias)}
    assert expected_no_decay == no_decay_ids


def test_decay_norm_and_bias_when_asked():
    model = tiny_model("layer")
    decay, no_decay = parameter_groups(model, 1e-3, decay_norm_and_bias=True)
    assert no_decay["params"] == []
    assert {id(p) for p in decay["params"]} == {id(p) for p in model.parameters()}


# --- optimizer and scheduler -----------------------------------------------------------


def test_build_sgd_uses_scaled_lr_and_groups():
    model = tiny_model()
    opt = build_optimizer(model, SGD, batch_size=32)
    assert isinstance(opt, torch.optim.SGD)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05, 0.05])
    assert [g["weight_decay"] for g in opt.param_groups] == [5e-4, 0.0]
    assert all(g["momentum"] == 0.9 and g["nesterov"] for g in opt.param_groups)


@pytest.mark.parametrize(("dtype", "rtol"), [(torch.float64, 1e-14), (torch.float32, 1e-6)])
def test_fused_sgd_steps_as_the_looped_sgd_up_to_rounding(dtype, rtol):
    # runtime.fused_sgd: the same update (weight decay on weights only, Nesterov momentum, the
    # schedule's LR) in one kernel per parameter; only the rounding of a fused multiply-add may
    # differ, so float64 agrees to its last bits and float32 to its own
    models = {k: tiny_model().to(dtype) for k in ("loop", "fused")}
    opts = {k: build_optimizer(m, SGD, 32, fused=k == "fused") for k, m in models.items()}
    scheds = {k: build_scheduler(o, SGD, 6) for k, o in opts.items()}
    assert [o.defaults.get("fused") for o in opts.values()] == [None, True]
    g = torch.Generator().manual_seed(0)
    shapes = [p.shape for p in models["loop"].parameters()]
    for _ in range(6):
        grads = [torch.randn(shape, generator=g, dtype=dtype) for shape in shapes]
        for k, model in models.items():
            for p, grad in zip(model.parameters(), grads, strict=True):
                p.grad = grad.clone()
            opts[k].step()
            scheds[k].step()
    pairs = zip(models["loop"].parameters(), models["fused"].parameters(), strict=True)
    for a, b in pairs:
        torch.testing.assert_close(b, a, rtol=rtol, atol=rtol * a.abs().max().item())


def test_a_runs_config_asks_for_the_fused_sgd_and_adam_is_never_fused(compose_global):
    cfg = compose_global("profile=smoke")
    assert cfg.runtime.fused_sgd  # the default
    fused, _ = build_optimizer_and_scheduler(tiny_model(), cfg, 10)
    assert fused.defaults["fused"]
    cfg.runtime.fused_sgd = False
    looped, _ = build_optimizer_and_scheduler(tiny_model(), cfg, 10)
    assert not looped.defaults.get("fused")
    adam = {**SGD, "name": "adam", "lr_per_128": 1e-3, "lr_scaling": "none"}
    assert not build_optimizer(tiny_model(), adam, 8, fused=True).defaults.get("fused")


def test_build_adam_and_unknown_optimizer():
    model = tiny_model()
    adam = {**SGD, "name": "adam", "lr_per_128": 1e-3, "lr_scaling": "none"}
    opt = build_optimizer(model, adam, batch_size=8)
    assert isinstance(opt, torch.optim.Adam)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3)
    with pytest.raises(ConfigError) as info:
        build_optimizer(model, {**SGD, "name": "lbfgs"}, 8)
    assert info.value.field == "optim.name"


@pytest.mark.parametrize("schedule", ["onecycle", "cosine", "constant"])
def test_scheduler_steps_lr_as_lr_factor_says(schedule):
    model = tiny_model()
    optim = {**SGD, "schedule": schedule}
    opt = build_optimizer(model, optim, batch_size=64)  # peak lr 0.1
    total = 10
    sched = build_scheduler(opt, optim, total)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    seen = []
    for step in range(total):
        expected = 0.1 * lr_factor(step, total, schedule, optim["warmup_frac"])
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([expected] * 2)
        seen.append(opt.param_groups[0]["lr"])
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        sched.step()
    assert seen[0] == pytest.approx(0.05)  # warm-up of 2 steps: 1/2 of the peak
    assert seen[1] == pytest.approx(0.1)
    final = opt.param_groups[0]["lr"]
    assert final == pytest.approx(0.0 if schedule != "constant" else 0.1, abs=1e-12)
