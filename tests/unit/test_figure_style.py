"""The house rules of every figure (normexp/analysis/style.py): a PNG that fits the report's
column with text of 9 pt or more at that size, a vector copy beside it, every colour from the
norm registry's one palette; and the figures of issue #31 that broke them (the grid's LSTM
panel, C4's single-batch cells and its lead panel, the LR figures, the scales figure). The
tests set NORMEXP_FIGURE_CHECK=strict (tests/conftest.py): every figure any test draws keeps
the rules or fails its test."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from PIL import Image

from normexp.analysis import style
from normexp.analysis.claims import bn_small_batch
from normexp.analysis.report import grid, scales
from normexp.analysis.verdict import lr_selection
from normexp.norms.registry import CELL_ORDER, WEIGHT_SIDE_COLORS, norm_spec

NORMS = ("none", "batch", "layer", "instance", "group", "rms", "ghost_batch", "batch_renorm",
         "noisy_batch", "mean_only_batch", "batch_per_step", "batch_shared")  # fmt: skip


@pytest.fixture
def drawn(monkeypatch) -> list:
    """The figures ``save_figure`` writes from now on (checked by it: the tests' strict mode),
    kept open to read instead of closed."""
    figures = []

    def keep(fig=None) -> None:  # noqa: ANN001
        if isinstance(fig, Figure):
            figures.append(fig)

    monkeypatch.setattr(plt, "close", keep)
    yield figures
    monkeypatch.undo()
    plt.close("all")


def legend_colours(fig) -> dict[str, str]:  # noqa: ANN001 - a matplotlib Figure
    """{label: colour} of every legend entry of the figure (its panels' and its own)."""
    legends = [ax.get_legend() for ax in fig.axes] + [
        leg for f in (fig, *fig.subfigs) for leg in f.legends
    ]
    out = {}
    for legend in (leg for leg in legends if leg is not None):
        for handle, text in zip(legend.legend_handles, legend.get_texts(), strict=True):
            color = handle.get_color() if hasattr(handle, "get_color") else handle.get_fc()
            out[text.get_text()] = style._hex(color)
    return out


def test_a_page_figure_fits_the_column_and_its_vector_copy_is_the_same_each_time(tmp_path):
    def draw() -> object:
        fig = style.figure(2.0)
        ax = fig.subplots()
        ax.plot([1, 2], [1, 2], color=style.norm_color("batch"), label="BN")
        ax.legend()
        return fig

    with style.formats(["png", "pdf"]):
        out = style.save_figure(draw(), tmp_path / "f.png", "A title that states")
        first = out.with_suffix(".pdf").read_bytes()
        style.save_figure(draw(), tmp_path / "f.png", "A title that states")
    assert first.startswith(b"%PDF") and out.with_suffix(".pdf").read_bytes() == first
    assert style.vector_copy(out) == out.with_suffix(".pdf")
    with Image.open(out) as image:
        width = image.size[0]
    assert width == round(style.PAGE_WIDTH * style.DPI) <= style.COLUMN_PX
    # shown at its own size: 9 pt text is 9 pt on paper and larger than 9 pt on the page
    assert style.display_font_pt(style.MIN_FONT_PT, width) >= 9
    with style.formats(["png"]):  # no vector copy wanted: the earlier one goes (it is stale)
        style.save_figure(draw(), tmp_path / "f.png")
    assert style.vector_copy(out) is None


def test_the_rules_name_a_wide_figure_small_text_and_a_colour_off_the_palette(
    tmp_path, monkeypatch
):
    fig = plt.figure(figsize=(10, 3))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="#ff00ff")  # no norm's colour
    ax.plot([0, 1], [1, 0], color=style.norm_color("group"))
    ax.fill_between([0, 1], [0, 0], [1, 1], color=style.norm_color("layer"), alpha=0.2)
    light = np.add(0.45 * np.array(to_rgb(style.norm_color("batch"))), 0.55)
    ax.bar([0.5], [0.5], color=light)  # BN's blue mixed with white: a shade, allowed
    ax.axhline(0.5, color=style.NEUTRAL)
    ax.set_title("small", fontsize=7)
    problems = style.figure_problems(fig)
    assert problems[0] == "1500 px wide, over the column's 1100 px"
    assert "text at 7 pt (< 9): 'small'" in problems
    off = [p for p in problems if p.startswith("colour")]
    assert off == ["colour #ff00ff is not the palette's"]
    monkeypatch.setenv(style.CHECK_ENV, "strict")
    with pytest.raises(style.FigureStyleError, match="f.png: 1500 px wide"):
        style.save_figure(fig, tmp_path / "f.png")


def test_every_norm_and_weight_side_arm_has_a_colour_of_its_own():
    colors = {n: norm_spec(n).color for n in NORMS}
    assert "#333333" not in colors.values()  # the default: a norm without a colour
    # one colour each, but the BN-LSTM of the literature (per-step statistics) is BN's
    assert len(set(colors.values())) == len(NORMS) - 1
    assert colors["batch_per_step"] == colors["batch"]
    assert len({colors[c] for c in CELL_ORDER}) == len(CELL_ORDER)  # an LSTM panel's cells
    assert not set(WEIGHT_SIDE_COLORS.values()) & set(colors.values())


def _lstm_grid() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        [
            {"status": "ok", "seed": s, "profile": "quick", "model.name": "lstm",
             "norm.name": cell, "train.batch_size": b,
             "test_bpc": 2.0 + 0.1 * i + 0.01 * rng.standard_normal()}  # fmt: skip
            for i, cell in enumerate(CELL_ORDER)
            for b in (4, 16)
            for s in range(3)
        ]
    )


def test_the_grids_lstm_panel_draws_each_cell_in_its_registry_colour(tmp_path, drawn):
    grid.draw_batch({"rnn_small_batch": _lstm_grid()}, tmp_path / "grid_batch.png")
    colours = legend_colours(drawn[0])
    for cell in CELL_ORDER:
        assert colours[grid.label(cell)] == style.norm_color(cell)
    assert colours["BN per step"] != colours["BN shared"]


def _c4(norms_at: dict[str, tuple[int, ...]], model: str, err: dict[str, float]) -> pd.DataFrame:
    rows = []
    for norm, batches in norms_at.items():
        for b in batches:
            for s in range(3):
                e = err[norm] + (0.05 if norm == "batch" and b == 2 else 0) + 0.002 * s
                rows.append({"status": "ok", "seed": s, "profile": "quick", "n_train": 4000,
                             "model.name": model, "norm.name": norm, "train.batch_size": b,
                             "test_err": e, "test_acc": 1 - e})  # fmt: skip
    return pd.DataFrame(rows)


def test_c4_leads_with_its_paired_statistic_and_draws_single_batch_cells_with_error_bars(
    tmp_path, drawn
):
    err = {"batch": 0.30, "group": 0.33, "layer": 0.36, "none": 0.45}
    cnn = _c4(dict.fromkeys(err, (2, 32)), "cnn", err)
    resnet = _c4({"batch": (2, 32), "group": (2, 32), "layer": (32,), "none": (32,)}, "resnet", err)
    gaps = bn_small_batch.paired_gaps(cnn).set_index("batch_size")
    assert gaps.loc[2, "mean"] == pytest.approx(2.0) and gaps.loc[32, "mean"] == pytest.approx(-3)
    bn_small_batch.draw({"bn_small_batch": cnn, "bn_small_batch_resnet": resnet},
                        tmp_path / "c4.png")  # fmt: skip
    fig = drawn[0]
    lead = fig.axes[0]
    assert lead.get_title(loc="left").startswith("The deciding statistic: BN − GN")
    shown = {t.get_text() for t in lead.get_legend().get_texts()}
    assert shown == {"ours, VGG-style CNN", "ours, ResNet", "GN paper, ResNet-50 ImageNet"}
    titles = {a.get_title(loc="left"): a for a in fig.axes}
    resnet_panel = next(a for t, a in titles.items() if t.startswith("Ours, plain: ResNet"))
    bars = {style._hex(c.get_color()[0]) for c in resnet_panel.collections
            if type(c).__name__ == "LineCollection"}  # fmt: skip
    assert {style.norm_color("layer"), style.norm_color("none")} <= bars  # one x: error bars
    assert legend_colours(fig)["GN"] == style.norm_color("group")


def test_the_lr_figure_has_a_panel_per_cell_group_and_keeps_cells_without_a_parameter(
    tmp_path, drawn
):
    rows = []
    for norm, size, batch in (("batch", None, 32), ("group", None, 32), ("ghost_batch", 2, 16),
                              ("ghost_batch", 4, 32)):  # fmt: skip
        for mult in (0.5, 1.0, 2.0):
            rows.append({"protocol.stage": "select", "status": "ok", "seed": 100,
                         "norm.name": norm, "norm.group_size": size, "train.batch_size": batch,
                         "optim.lr_mult": mult, "val_acc": 0.5 + 0.1 * mult})  # fmt: skip
    sel = pd.DataFrame(rows)
    panel_cols, line, keys = lr_selection.lr_panels(sel)
    assert line == "norm.name" and panel_cols == ["norm.group_size", "train.batch_size"]
    assert keys == [("2.0", "16"), ("4.0", "32"), ("—", "32")]  # BN and GN lack a group size
    analysis = type("A", (), {"reads": ("exp",), "claim": "C0"})()
    lr_selection.draw_lr({"exp": sel}, analysis, tmp_path / "lr.png")
    fig = drawn[0]
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert titles == ["group_size 2, batch 16", "group_size 4, batch 32", "batch 32"]
    colours = legend_colours(fig)
    assert colours["BN"] == style.norm_color("batch") != colours["GN"]


def test_the_scales_figure_marks_an_architecture_change_and_names_its_units(tmp_path, drawn):
    def verdict(statistic: str, est: float) -> dict:
        sub = {"id": "C4b", "statement": "s", "verdict": "contradicted", "statistic": statistic,
               "estimate": est, "ci": [est - 1, est + 1], "seeds": 5}  # fmt: skip
        return {"claim": "C4", "experiment": "bn_small_batch", "verdict": "contradicted",
                "sub": [sub]}  # fmt: skip

    stat = "BN − GN test error at batch 2, pp"
    rows = scales.scale_rows({"quick": [verdict(f"VGG-style CNN: {stat}", -5)],
                              "standard": [verdict(f"ResNet-20: {stat}", -6)]})  # fmt: skip
    scales.draw(rows, ["quick", "standard"], tmp_path / "scales.png")
    ax = drawn[0].axes[0]
    assert ax.get_title() == "C4b ‡\n(pp)"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["quick\nVGG", "standard\nResNet-20"]
    assert "different architectures" in drawn[0].get_supxlabel()
    ratio = {"unit": "", "statistic": "ResNet-20: steps, noisy BN / BN, ratio (geometric mean)"}
    assert scales.axis_label(ratio) == "ratio"
    assert scales.axis_label({"unit": "", "statistic": "log10(BN / no norm) of x"}) == "log10 ratio"
