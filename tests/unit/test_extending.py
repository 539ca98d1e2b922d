"""docs/extending.md's recipes, followed with toy entries: what each registers reaches every
place that reads it."""

import dataclasses

import torch
from torch import nn

from normexp import models, schema, tasks
from normexp.analysis.style import norm_color, norm_label
from normexp.models.spec import ModelSpec
from normexp.norms import registry
from normexp.norms.registry import EPS, make_norm, param_rules, pooled_sets, register_norm


def test_a_norm_registered_as_the_recipe_says_is_built_checked_and_drawn(monkeypatch):
    monkeypatch.setattr(registry, "NORMS", dict(registry.NORMS))

    @register_norm(
        "toy_norm",
        params={"eps": EPS},
        color="#bcbd22",
        label="ToyN",
        pooled_over="one sample, one channel, all positions",
    )
    def build_toy(num_features: int, eps: float = 1e-5) -> nn.Module:
        return nn.GroupNorm(num_features, num_features, eps=eps)

    layer = make_norm("toy_norm", 4, eps=1e-3)
    assert layer(torch.randn(2, 4, 3, 3)).shape == (2, 4, 3, 3)
    assert (norm_color("toy_norm"), norm_label("toy_norm")) == ("#bcbd22", "ToyN")
    assert pooled_sets()["toy_norm"].startswith("one sample")
    assert param_rules()["eps"] == EPS  # the schema's norm.eps row reads this


def test_a_classifier_declared_as_the_recipe_says_is_checked_and_built(monkeypatch):
    seen = []

    def check(model, factory, batch_size, image_size):
        seen.append((model["name"], factory.name, batch_size, image_size))

    def build(model, factory, num_classes):
        return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, num_classes))

    monkeypatch.setitem(models.SPECS, "toy_net", ModelSpec("toy_net", check, build))
    config, norm = {"name": "toy_net", "activation": "relu"}, {"name": "batch", "position": "pre"}
    models.check_model(config, norm, batch_size=8)
    assert seen == [("toy_net", "batch", 8, 32)]
    assert models.build_model(config, norm)(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_a_task_declared_as_the_recipe_says_is_found_by_name(monkeypatch):
    toy = dataclasses.replace(tasks.get_task("classification"), name="toy_task", models=("toy",))
    monkeypatch.setitem(tasks.all_tasks(), "toy_task", toy)
    assert tasks.get_task("toy_task") is toy
    assert "norm.eps" in {f.path for f in schema.fields()}
