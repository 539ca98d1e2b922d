"""C1: the set S each norm pools over, measured from the layer's Jacobian, equals its definition."""

import pytest
import torch

from normexp.analysis.claims import norm_sets
from normexp.analysis.claims.norm_sets import defined_set, measured_set, reference_indices
from normexp.analysis.style import formats

SHAPE = (4, 6, 2, 3)  # H != W so a mix-up of spatial axes would show
NORMS = {
    "batch": {},
    "ghost_batch": {"group_size": 2},
    "layer": {},
    "instance": {},
    "group": {"num_groups": 3},
    "rms": {},
}


@pytest.mark.parametrize("name", NORMS)
def test_measured_set_is_defined_set(name):
    kwargs = NORMS[name]
    for index in reference_indices(SHAPE, count=5, seed=1):
        measured = measured_set(name, SHAPE, index, **kwargs)
        assert measured.dtype == torch.bool and measured.shape == SHAPE
        assert measured[index]  # an output depends on its own input
        assert torch.equal(measured, defined_set(name, SHAPE, index, **kwargs)), (name, index)


@pytest.mark.parametrize("name", ["layer", "group", "rms"])
def test_dense_input(name):
    kwargs = {"num_groups": 2} if name == "group" else {}
    for index in [(0, 0), (3, 5)]:
        measured = measured_set(name, (4, 6), index, **kwargs)
        assert torch.equal(measured, defined_set(name, (4, 6), index, **kwargs))


def test_a_wrong_definition_is_caught():
    index = (1, 2, 0, 1)
    bn = measured_set("batch", SHAPE, index)
    assert not torch.equal(bn, defined_set("layer", SHAPE, index))
    assert not torch.equal(bn, defined_set("instance", SHAPE, index))
    # Ghost BN in groups of 2 is neither BN nor ghost BN in groups of 4 (== BN here).
    ghost = measured_set("ghost_batch", SHAPE, index, group_size=2)
    assert not torch.equal(ghost, defined_set("batch", SHAPE, index))
    assert not torch.equal(ghost, defined_set("ghost_batch", SHAPE, index, group_size=1))
    gn = measured_set("group", SHAPE, index, num_groups=3)
    assert not torch.equal(gn, defined_set("group", SHAPE, index, num_groups=2))


def test_group_norm_spans_layer_and_instance_norm():
    for index in [(0, 0, 0, 0), (2, 4, 1, 2)]:
        one = measured_set("group", SHAPE, index, num_groups=1)
        per_channel = measured_set("group", SHAPE, index, num_groups=SHAPE[1])
        assert torch.equal(one, defined_set("layer", SHAPE, index))
        assert torch.equal(per_channel, defined_set("instance", SHAPE, index))


def test_layers_compute_the_shared_formula():
    for name, kwargs in NORMS.items():
        assert norm_sets.formula_error(name, SHAPE, **kwargs) < 1e-10, name


def test_verdict_supported():
    v = norm_sets.verdict()
    assert v["claim"] == "C1"
    assert v["verdict"] == "supported", v["effect"]
    assert v["ci"] is None
    assert all(v["details"]["instance_on_dense"]["refused_by_validity"].values())
    # IN on a dense input, built anyway, does not depend on its input at all.
    assert v["details"]["instance_on_dense"]["jacobian_max_abs_if_built_anyway"] == 0.0


def test_verdict_contradicted_when_a_layer_pools_the_wrong_set(monkeypatch):
    real = norm_sets.make_norm

    def swapped(name, num_features, **kwargs):  # "instance" secretly pools like BN
        return real("batch" if name == "instance" else name, num_features, **kwargs)

    monkeypatch.setattr(norm_sets, "make_norm", swapped)
    v = norm_sets.verdict()
    assert v["verdict"] == "contradicted"
    assert v["details"]["instance"]["indices_matched"] == "0/4"


def test_draw_writes_png(tmp_path):
    out = norm_sets.draw(tmp_path / "figures" / "norm_sets.png")
    assert out.exists() and out.stat().st_size > 20_000
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_figures_cli_writes_figure_and_verdict(tmp_path, capsys):
    import json

    from normexp.analysis import figures

    figures.main(["--results-dir", str(tmp_path)])
    folder = tmp_path / figures.RECORD_PROFILE  # the profile of record's, by default
    assert (folder / "figures" / "norm_sets.png").exists()
    v = json.loads((folder / "verdicts" / "norm_sets.json").read_text())
    assert v["verdict"] == "supported"
    assert "norm_sets: from the layers (no runs), supported" in capsys.readouterr().out


def test_c1_figure_is_drawn_once_per_process_and_copied_after(tmp_path, monkeypatch):
    # a function of the code alone: later reports of the process get the first drawing's bytes
    drawn = []

    def fake_draw(out):
        drawn.append(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(b"png %d" % len(drawn))
        return out

    monkeypatch.setattr(norm_sets, "draw", fake_draw)
    monkeypatch.setattr(norm_sets, "_DRAWN", {})
    with formats(["png"]):
        first = norm_sets.ANALYSIS.draw({}, tmp_path / "a" / "norm_sets.png")
        second = norm_sets.ANALYSIS.draw({}, tmp_path / "b" / "norm_sets.png")
    assert len(drawn) == 1 and second.read_bytes() == first.read_bytes() == b"png 1"

