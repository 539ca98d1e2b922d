"""docs/extending.md's recipes, followed with toy entries: what each registers reaches every
place that reads it."""

import dataclasses
import sys

import pytest
import torch
from torch import nn

from normexp import metrics, models, schema, tasks
from normexp.analysis import claims, figures
from normexp.analysis.report import dashboards
from normexp.analysis.style import norm_color, norm_label
from normexp.analysis.verdict.spec import Grid
from normexp.errors import ConfigError
from normexp.models.probe import check_sites, norm_sites
from normexp.models.spec import ModelSpec
from normexp.norms import registry
from normexp.norms.registry import EPS, make_norm, param_rules, pooled_sets, register_norm
from normexp.tracking.store import profile_dir
from normexp.tracking.wandb_mirror import wandb_key


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


def test_a_classifier_declared_as_the_recipe_says_is_checked_by_building_it(monkeypatch):
    def build(model, factory, num_classes=10):
        width = model["width"]
        conv = nn.Conv2d(3, width, 3, stride=2, padding=1)
        return nn.Sequential(conv, factory(width), nn.Flatten(), nn.LazyLinear(num_classes))

    def check(model, factory, batch_size, image_size):
        sites = norm_sites(
            build, model, factory, (batch_size, 3, image_size, image_size), "model.width"
        )
        check_sites(factory, "image", sites, batch_size)

    monkeypatch.setitem(models.SPECS, "toy_net", ModelSpec("toy_net", check, build))
    config = {"name": "toy_net", "activation": "relu", "width": 6}
    models.check_model(config, {"name": "batch", "position": "pre"}, batch_size=8)
    assert models.build_model(config, {"name": "batch", "position": "pre"})(
        torch.zeros(2, 3, 32, 32)
    ).shape == (2, 10)
    # the norm is checked on the layer the network really has: 6 channels, no grouping of GN
    with pytest.raises(ConfigError, match="4 does not divide 6 channels"):
        models.check_model(config, {"name": "group", "position": "pre", "num_groups": 4}, 8)


def test_a_task_declared_as_the_recipe_says_is_found_by_name(monkeypatch):
    toy = dataclasses.replace(tasks.get_task("classification"), name="toy_task", models=("toy",))
    monkeypatch.setitem(tasks.all_tasks(), "toy_task", toy)
    assert tasks.get_task("toy_task") is toy
    assert "norm.eps" in {f.path for f in schema.fields()}


TOY_CLAIM = '''"""C12 toy_claim: a claim declared in one file (docs/extending.md, "Add a claim").

Verdict rule. *supported* when the toy says so (it always does).
"""

from normexp.analysis.verdict.spec import Claim, Grid, Quote
from normexp.analysis.style import mark_not_run, panels, save_figure

EXPERIMENT = "toy_experiment"
CLAIM = Claim.from_doc("C12", "toy_claim", "no published number", __doc__)


def draw(tables, out, results_dir=None):
    fig, ax = panels(1, (3, 2))
    mark_not_run(ax, EXPERIMENT)
    return save_figure(fig, out, "C12: a toy")


def verdict(tables):
    return CLAIM.verdict("supported", "the toy says so")


ANALYSIS = CLAIM.analysis(
    "toys are declared in one file",
    (EXPERIMENT,),
    draw,
    verdict,
    quote=Quote(zh="玩具只需一个文件", en="A toy needs one file."),
    dashboard=(Grid("Toy runs", (EXPERIMENT,), ("norm.name",), bars=("test/acc",)),),
)
'''


def test_a_claim_declared_in_one_file_gets_its_row_section_and_dashboard(tmp_path, monkeypatch):
    # The recipe: one file in the claims package (here a folder added to its path, so that only
    # the toy is found) and nothing else listed anywhere.
    folder = tmp_path / "claims"
    folder.mkdir()
    (folder / "toy_claim.py").write_text(TOY_CLAIM)
    monkeypatch.setattr(claims, "__path__", [str(folder)])
    monkeypatch.delitem(sys.modules, "normexp.analysis.claims.toy_claim", raising=False)
    assert [a.name for a in claims.load_analyses()] == ["toy_claim"]

    results = profile_dir(tmp_path / "results", "smoke")
    results.mkdir(parents=True)
    figures.write_figures_and_verdicts(results, wandb_mode="disabled")
    report = (results / "REPORT.md").read_text()
    row = next(line for line in report.splitlines() if line.startswith("| C12 `toy_claim`"))
    assert "toys are declared in one file" in row and "supported" in row
    assert "> 玩具只需一个文件" in report  # the section quotes the blog's words
    assert "*supported* when the toy says so" in report  # its rule, from its docstring
    assert (results / "figures" / "toy_claim.png").exists()

    (toy,) = dashboards.claim_dashboards("entity", "project")
    assert "C12 toy_claim" in toy.title
    assert "Toy runs" in {getattr(block, "text", None) for block in toy.blocks}
    monkeypatch.delitem(sys.modules, "normexp.analysis.claims.toy_claim")


def test_a_metric_registered_as_the_recipe_says_is_named_by_the_analysis_and_dashboards(
    monkeypatch,
):
    monkeypatch.setattr(metrics, "METRICS", dict(metrics.METRICS))
    name = metrics.register_metric(
        "test_ece", "fraction", "lower", metrics.CLASSIFY, doc="expected calibration error"
    )
    assert metrics.metric(name) == "test_ece"  # what columns.py names it by
    assert "test_ece" in metrics.logged_by("classification")
    grid = Grid("Calibration", ("bn_small_batch",), ("norm.name",), bars=(wandb_key(name),))
    assert wandb_key(name) == "test/ece" and dashboards.unregistered(grid) == []
