"""One look for every figure: page-sized (the report's column, a paper's text width), a colour
per norm from the norm registry's one palette, the same everywhere, and the panels that several
claims' figures share (anchor bars, per-seed bars, curves with their CI, log2 batch axes,
captions).

Size. Every figure is ``PAGE_WIDTH`` inches wide (7 in, a paper's text width) and written as a
PNG at ``DPI`` (1,050 px: the report's 1,100 px column shows it at its own size, never scaled
down) and as a vector PDF beside it (``set_formats`` narrows that), which the report links each
image to. Text is ``MIN_FONT_PT`` (9 pt) or larger at that size: 9 pt on paper, 19 px on the
page. ``save_figure`` checks each figure against these rules and the palette
(``figure_problems``) and says on stderr what breaks them; with $NORMEXP_FIGURE_CHECK=strict (the
tests set it) that is an error.
"""

import os
import sys
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import matplotlib

from normexp.analysis.stats import mean_ci
from normexp.errors import ConfigError
from normexp.norms.registry import NormSpec, norm_spec, palette

matplotlib.use("Agg")  # figures are files; no display needed

PAGE_WIDTH = 7.0  # inches: a paper's text width
DPI = 150  # 7 in at 150 dpi: 1,050 px, within the report's column
COLUMN_PX = 1100  # the report's column (report.html.j2: body max-width)
MIN_FONT_PT = 9.0  # the smallest text of a figure, at its printed size
FORMATS = ("png", "pdf")  # the PNG the page shows, and its vector copy
CHECK_ENV = "NORMEXP_FIGURE_CHECK"  # "strict": a figure that breaks the rules is an error (tests)
NEUTRAL = "#444444"  # lines and markers that are no norm's (anchors, differences, references)
REFERENCE = "#888888"  # zero lines, reference levels, empty-panel text
# Text sizes and a quiet look, for every figure drawn after this module is imported.
matplotlib.rcParams.update(
    {
        "font.size": MIN_FONT_PT,
        "axes.titlesize": MIN_FONT_PT + 0.5,
        "axes.labelsize": MIN_FONT_PT,
        "xtick.labelsize": MIN_FONT_PT,
        "ytick.labelsize": MIN_FONT_PT,
        "legend.fontsize": MIN_FONT_PT,
        "legend.title_fontsize": MIN_FONT_PT,
        "figure.titlesize": MIN_FONT_PT + 1.5,
        "legend.frameon": False,
        "lines.markersize": 5,
        "axes.titlelocation": "left",
        "figure.constrained_layout.h_pad": 0.03,
        "figure.constrained_layout.w_pad": 0.03,
        "svg.hashsalt": "normexp",  # the same bytes on every run
    }
)
FORMATS_ENV = "NORMEXP_FIGURE_FORMATS"  # "png": no vector copies (the tests' default)
_formats = ["png"]


def set_formats(formats: Sequence[str]) -> None:
    """The files ``save_figure`` writes from now on: the PNG always, then these vector formats
    ("pdf", "svg") beside it (at import: $NORMEXP_FIGURE_FORMATS, else ``FORMATS``)."""
    formats = [f.strip() for f in formats if f.strip()]
    unknown = set(formats) - {"png", "pdf", "svg"}
    if unknown:
        raise ValueError(f"figure formats: unknown {sorted(unknown)}; allowed: png, pdf, svg")
    _formats[:] = ["png", *(f for f in formats if f != "png")]


set_formats(os.environ.get(FORMATS_ENV, ",".join(FORMATS)).split(","))


@contextmanager
def formats(names: Sequence[str]) -> Iterator[None]:
    """``set_formats`` for the duration of a block."""
    before = list(_formats)
    set_formats(names)
    try:
        yield
    finally:
        _formats[:] = before


def current_formats() -> list[str]:
    """What ``save_figure`` writes now (``set_formats``)."""
    return list(_formats)


def vector_copy(png: Path) -> Path | None:
    """The vector copy written beside figure ``png`` (PDF before SVG), None without one."""
    for suffix in (".pdf", ".svg"):
        if (path := png.with_suffix(suffix)).exists():
            return path
    return None


def norm_color(name: str) -> str:
    """A norm's colour, from its registry entry: one palette for every figure."""
    spec = _registered(name)
    return spec.color if spec else "#333333"


def norm_label(name: str) -> str:
    """A norm's short name (BN, GN, ...), from its registry entry."""
    spec = _registered(name)
    return (spec.label or name) if spec else name


def _registered(name: str) -> NormSpec | None:
    try:
        return norm_spec(name)
    except ConfigError:
        return None


def figure(height: float, **kw: object):  # noqa: ANN201 - a matplotlib Figure
    """A page-wide figure ``height`` inches tall, laid out by matplotlib (constrained)."""
    import matplotlib.pyplot as plt  # after matplotlib.use above

    return plt.figure(figsize=(PAGE_WIDTH, height), layout="constrained", **kw)


def panels(  # noqa: ANN201 - (Figure, Axes array)
    n: int,
    figsize: tuple[float, float] | float,
    widths: Sequence[float] | None = None,
    rows: int = 1,
):
    """A figure of ``n`` panels in ``rows`` rows (relative ``widths`` within a row), laid out by
    matplotlib; ``figsize`` is the height (page-wide), or (width, height) capped at the page."""
    import matplotlib.pyplot as plt  # after matplotlib.use above

    width, height = (PAGE_WIDTH, figsize) if isinstance(figsize, int | float) else figsize
    cols = -(-n // rows)
    kw = {"gridspec_kw": {"width_ratios": list(widths)}} if widths else {}
    fig, axes = plt.subplots(
        rows, cols, figsize=(min(width, PAGE_WIDTH), height), **kw, layout="constrained"
    )
    if rows > 1:
        flat = list(axes.flat)
        for ax in flat[n:]:
            ax.set_visible(False)
        axes = flat[:n]
    return fig, axes


def mark_not_run(ax, what: str) -> None:  # noqa: ANN001 - a matplotlib Axes
    """An empty panel that says ``what`` has not been run yet."""
    empty_panel(ax, textwrap.fill(f"{what}: not run yet", 40), fontsize=10)


def mark_left_out(ax, what: str, why: str) -> None:  # noqa: ANN001 - a matplotlib Axes
    """An empty panel that says ``what`` was left out of this report, and ``why``."""
    empty_panel(ax, wrap(f"{what}: left out\n{why}", 42), fontsize=MIN_FONT_PT)


def empty_panel(ax, text: str, fontsize: float) -> None:  # noqa: ANN001 - a matplotlib Axes
    """A panel with no axes and ``text`` in grey at its centre."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes,
            color=REFERENCE, fontsize=fontsize)  # fmt: skip
    ax.set_xticks([])
    ax.set_yticks([])


def anchor_bars(  # noqa: PLR0913 - one panel, its look spelled out
    ax,  # noqa: ANN001 - a matplotlib Axes
    values: Mapping[str, float],
    colors: Sequence[str],
    labels: Sequence[str],
    *,
    ylabel: str,
    title: str,
    unit: str = "",
    width: float = 0.6,
    alpha: float | None = None,
    **tick_kw: object,
) -> None:
    """The published anchor's numbers as labelled bars from zero (one run each: no error
    bars); ``tick_kw`` go to the x tick labels."""
    xs = range(len(values))
    heights = list(values.values())
    bars = ax.bar(xs, heights, color=list(colors), alpha=alpha, width=width)
    ax.bar_label(bars, [f"{v:g}{unit}" for v in heights], padding=2)
    ax.set_xticks(xs, list(labels), **tick_kw)
    ax.set_ylim(0, 1.15 * max(heights))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")


def seed_bar(ax, x: float, values: Sequence[float], color: str, width: float, capsize: float = 3):  # noqa: ANN001, ANN201
    """A bar at the mean of ``values`` (one per seed) with its 95% CI and the seeds as dots."""
    values = list(values)
    mean, lo, hi = mean_ci(values)
    ax.bar(x, mean, color=color, alpha=0.8, width=width)
    ax.errorbar(x, mean, yerr=[[mean - lo], [hi - mean]], color="black", capsize=capsize)
    ax.plot([x] * len(values), values, ".", color="black", alpha=0.6)


def ci_line(  # noqa: PLR0913 - one series, its look spelled out
    ax,  # noqa: ANN001 - a matplotlib Axes
    xs: Sequence[float],
    mean: Sequence[float],
    lo: Sequence[float],
    hi: Sequence[float],
    *,
    color: str,
    label: str | None = None,
    fmt: str = "o-",
    **kw: object,
) -> None:
    """A mean with its 95% CI: a line and a band over several x, an error bar at a single x
    (a band cannot be drawn at one x); NaN bounds draw no CI there."""
    points = [(x, m, a, b) for x, m, a, b in zip(xs, mean, lo, hi, strict=True) if m == m]
    if not points:
        return
    xs, mean, lo, hi = (list(v) for v in zip(*points, strict=True))
    ax.plot(xs, mean, fmt, color=color, label=label, **kw)
    if len(xs) == 1:
        if lo[0] == lo[0] and hi[0] == hi[0]:
            ax.errorbar(xs, mean, yerr=[[mean[0] - lo[0]], [hi[0] - mean[0]]], fmt="none",
                        ecolor=color, capsize=3, lw=1.5)  # fmt: skip
        return
    ax.fill_between(xs, lo, hi, color=color, alpha=0.15, lw=0)


def direct_labels(ax, items: Sequence[tuple[float, float, str, str]], dx: float = 4) -> None:  # noqa: ANN001
    """Text beside the last point of each line ((x, y, text, colour) each), in the line's
    colour: where lines share a colour, their names."""
    for x, y, text, color in items:
        ax.annotate(text, (x, y), xytext=(dx, 0), textcoords="offset points", va="center",
                    color=color, fontsize=MIN_FONT_PT, annotation_clip=False)  # fmt: skip


def log2_axis(ax, sizes: Sequence[int], xlabel: str, legend: bool = True) -> None:  # noqa: ANN001
    """Batch sizes on a log2 x axis, ticked at ``sizes``; grid and legend."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.minorticks_off()
    ax.set_xlabel(xlabel)
    finish(ax, legend)


def finish(ax, legend: bool = True) -> None:  # noqa: ANN001
    """Grid and a frameless legend (where the panel has labelled artists)."""
    ax.grid(alpha=0.3)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend()


def caption(fig, text: str, width: int = 100) -> None:  # noqa: ANN001 - a matplotlib Figure
    """A caption below the panels, wrapped to the page, inside the figure (its layout makes
    room for it)."""
    fig.supxlabel(wrap(text, width), fontsize=MIN_FONT_PT, color=NEUTRAL, ha="center")


def wrap(text: str, width: int = 85) -> str:
    """A title or note wrapped to ``width`` characters (the page's, at the title's size), its
    own line breaks kept."""
    return "\n".join(textwrap.fill(line, width) for line in text.split("\n"))


def save_figure(  # noqa: ANN201
    fig,  # noqa: ANN001 - a matplotlib Figure
    out: Path,
    title: str | None = None,
    title_size: float | None = None,
    **savefig_kwargs: object,
) -> Path:
    """Write ``fig`` to ``out`` (a PNG at ``DPI``; folders created) under its ``title``, its
    vector copies beside it (``set_formats``), close it, and return the PNG's path. What breaks
    the house rules (``figure_problems``) is said on stderr."""
    import matplotlib.pyplot as plt  # after matplotlib.use above

    if title is not None:
        size = title_size or matplotlib.rcParams["figure.titlesize"]
        fig.suptitle(wrap(title, 90), fontsize=size)
    out.parent.mkdir(parents=True, exist_ok=True)
    for sub in _figures(fig)[1:]:  # white on the figure's white; its edge at y = ±0 would
        sub.patch.set_visible(False)  # print as "0" or "-0" from run to run in the PDF
    fig.savefig(out, **{"dpi": DPI, **savefig_kwargs})
    problems = figure_problems(fig)  # after drawing: its ticks are made, cheap to read
    if problems and os.environ.get(CHECK_ENV) == "strict":
        plt.close(fig)
        raise FigureStyleError(f"figure {out.name}: {'; '.join(problems)}")
    for problem in problems:
        print(f"figure {out.name}: {problem}", file=sys.stderr)
    vector = [f for f in _formats if f != "png"]
    if vector and fig.get_layout_engine() is not None:
        fig.set_layout_engine("none")  # laid out for the PNG: the copies reuse it
    for fmt in vector:
        stamp = {"pdf": {"CreationDate": None}, "svg": {"Date": None}}[fmt]
        fig.savefig(out.with_suffix(f".{fmt}"), metadata=stamp, **savefig_kwargs)
    for fmt in {"pdf", "svg"} - set(vector):  # a copy of an earlier drawing is not this one's
        out.with_suffix(f".{fmt}").unlink(missing_ok=True)
    plt.close(fig)
    return out


class FigureStyleError(ValueError):
    """A figure breaks the house rules (``figure_problems``), where they are enforced."""


# --- the house rules ---------------------------------------------------------------------------


def _rgb(color: object) -> tuple[float, float, float, float] | None:
    from matplotlib.colors import to_rgba

    try:
        return to_rgba(color)
    except (ValueError, TypeError):
        return None


def is_neutral(color: object) -> bool:
    """Black, white or a grey (no hue): free for what is no norm's."""
    rgba = _rgb(color)
    if rgba is None or rgba[3] == 0:
        return True
    r, g, b, _ = rgba
    return max(r, g, b) - min(r, g, b) < 0.04


def in_palette(color: object, known: Sequence[tuple] | None = None) -> bool:
    """A colour of the palette (``normexp.norms.registry.palette``; ``known``: its colours as
    RGB), a shade of one (mixed with black or white: a dark voxel, a light band), or a
    neutral."""
    if is_neutral(color):
        return True
    known = _palette_rgb() if known is None else known
    rgb = _rgb(color)[:3]
    return any(_shade_of(rgb, k) for k in known)


def _palette_rgb() -> list[tuple[float, float, float]]:
    return [_rgb(c)[:3] for c in palette().values()]


def _shade_of(rgb: Sequence[float], known: Sequence[float], tol: float = 0.02) -> bool:
    """Whether ``rgb`` is ``known`` mixed with black (rgb = t·known) or white (1 − rgb =
    t·(1 − known)) in some proportion."""
    for c, k in ((rgb, known), ([1 - v for v in rgb], [1 - v for v in known])):
        t = sum(c) / sum(k) if sum(k) else 0.0
        if all(abs(a - t * b) <= tol for a, b in zip(c, k, strict=True)):
            return True
    return False


def _figures(fig) -> list:  # noqa: ANN001 - a matplotlib Figure
    """The figure and its subfigures, nested."""
    out = [fig]
    for sub in fig.subfigs:
        out += _figures(sub)
    return out


def _drawn_texts(fig) -> Iterator:  # noqa: ANN001 - a matplotlib Figure
    """The texts the figure shows (titles, labels, tick labels of panels drawn with axes,
    annotations, legends, captions), visible and not empty. Read from the figure's lists, not
    by walking every artist: the check runs on every figure written."""
    texts = []
    for f in _figures(fig):
        texts += [*f.texts, *(t for t in (f._suptitle, f._supxlabel, f._supylabel) if t)]
        texts += [t for leg in f.legends for t in leg.get_texts()]
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        texts += [ax.title, ax._left_title, ax._right_title, *ax.texts]
        if ax.axison:
            axes = [ax.xaxis, ax.yaxis, *([ax.zaxis] if hasattr(ax, "zaxis") else [])]
            for axis in axes:
                texts += [axis.label, *axis.get_ticklabels(), *axis.get_ticklabels(minor=True)]
        if legend := ax.get_legend():
            texts += [*legend.get_texts(), legend.get_title()]
        for table in ax.tables:
            texts += [cell.get_text() for cell in table.get_celld().values()]
    for text in texts:
        if text.get_visible() and text.get_text().strip():
            yield text


def _colours(fig) -> Iterator[tuple[str, object]]:  # noqa: ANN001 - a matplotlib Figure
    """(what, colour) of every line, marker, bar, band and text the figure draws in a colour
    of its own (images and table cells are data, not style; legends repeat what they name)."""
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        for line in ax.lines:
            if line.get_visible():
                yield "line", line.get_color()
                yield "marker", line.get_markerfacecolor()
                yield "marker", line.get_markeredgecolor()
        for patch in ax.patches:
            if patch.get_visible():
                yield "patch", patch.get_facecolor()
                yield "patch edge", patch.get_edgecolor()
        for coll in ax.collections:
            if coll.get_visible():
                for c in (*coll.get_facecolors(), *coll.get_edgecolors()):
                    yield "collection", tuple(c)
    for text in _drawn_texts(fig):
        yield "text", text.get_color()


def figure_problems(fig) -> list[str]:  # noqa: ANN001 - a matplotlib Figure
    """What breaks the house rules in ``fig``: wider than the column at ``DPI``, text smaller
    than ``MIN_FONT_PT``, a colour outside the palette (each said once)."""
    problems = []
    width = fig.get_figwidth() * DPI
    if width > COLUMN_PX + 0.5:
        problems.append(f"{width:.0f} px wide, over the column's {COLUMN_PX} px")
    small = sorted(
        {(round(t.get_fontsize(), 1), t.get_text()[:40]) for t in _drawn_texts(fig)
         if t.get_fontsize() < MIN_FONT_PT - 0.05}
    )  # fmt: skip
    problems += [f"text at {size:g} pt (< {MIN_FONT_PT:g}): {text!r}" for size, text in small]
    used = {rgba for _, c in _colours(fig) if (rgba := _rgb(c)) is not None}
    known = _palette_rgb()
    foreign = sorted({_hex(c) for c in used if not in_palette(c, known)})
    problems += [f"colour {c} is not the palette's" for c in foreign]
    return problems


def _hex(color: object) -> str:
    from matplotlib.colors import to_hex

    rgba = _rgb(color)
    return to_hex(rgba) if rgba else str(color)


def display_font_pt(font_pt: float, png_width_px: int, dpi: float = DPI) -> float:
    """A font's size in CSS points as the report shows a PNG ``png_width_px`` wide drawn at
    ``dpi`` (scaled down to the column where wider)."""
    shown = min(1.0, COLUMN_PX / png_width_px)
    return font_pt * dpi / 72 * shown * 72 / 96
