"""One look for every figure: a colour per norm, the same everywhere, and the panels that
several claims' figures share (anchor bars, per-seed bars, log2 batch axes, captions)."""

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

from normexp.analysis.stats import mean_ci
from normexp.errors import ConfigError
from normexp.norms.registry import NormSpec, norm_spec

matplotlib.use("Agg")  # figures are files; no display needed


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


def panels(n: int, figsize: tuple[float, float], widths: Sequence[float] | None = None):  # noqa: ANN201 - (Figure, Axes array)
    """A figure of ``n`` panels side by side (relative ``widths``), laid out by matplotlib."""
    import matplotlib.pyplot as plt  # after matplotlib.use above

    kw = {"gridspec_kw": {"width_ratios": list(widths)}} if widths else {}
    return plt.subplots(1, n, figsize=figsize, **kw, layout="constrained")


def mark_not_run(ax, what: str) -> None:  # noqa: ANN001 - a matplotlib Axes
    """An empty panel that says ``what`` has not been run yet."""
    empty_panel(ax, f"{what}: not run yet", fontsize=12)


def mark_left_out(ax, what: str, why: str) -> None:  # noqa: ANN001 - a matplotlib Axes
    """An empty panel that says ``what`` was left out of this report, and ``why``."""
    empty_panel(ax, f"{what}: left out\n" + textwrap.fill(why, 90), fontsize=9)


def empty_panel(ax, text: str, fontsize: float) -> None:  # noqa: ANN001 - a matplotlib Axes
    """A panel with no axes and ``text`` in grey at its centre."""
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes,
            color="#888888", fontsize=fontsize)  # fmt: skip
    ax.set_xticks([])
    ax.set_yticks([])


def anchor_bars(  # noqa: PLR0913 - one panel, its look spelled out
    ax,  # noqa: ANN001 - a matplotlib Axes
    values: Mapping[str, float],
    colors: Sequence[str],
    labels: Sequence[str],
    *,
    ylim: tuple[float, float],
    ylabel: str,
    title: str,
    offset: float,
    unit: str = "",
    width: float = 0.6,
    alpha: float | None = None,
    label_size: float = 9,
    **tick_kw: object,
) -> None:
    """The published anchor's numbers as labelled bars (one run each: no error bars);
    ``tick_kw`` go to the x tick labels."""
    xs = range(len(values))
    heights = list(values.values())
    ax.bar(xs, heights, color=list(colors), alpha=alpha, width=width)
    for i, v in enumerate(heights):
        ax.text(i, v + offset, f"{v}{unit}", ha="center", fontsize=label_size)
    ax.set_xticks(xs, list(labels), **tick_kw)
    ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, axis="y")


def seed_bar(ax, x: float, values: Sequence[float], color: str, width: float, capsize: float):  # noqa: ANN001, ANN201
    """A bar at the mean of ``values`` (one per seed) with its 95% CI and the seeds as dots."""
    values = list(values)
    mean, lo, hi = mean_ci(values)
    ax.bar(x, mean, color=color, alpha=0.8, width=width)
    ax.errorbar(x, mean, yerr=[[mean - lo], [hi - mean]], color="black", capsize=capsize)
    ax.plot([x] * len(values), values, ".", color="black", alpha=0.6)


def log2_axis(ax, sizes: Sequence[int], xlabel: str, legend_size: float = 8) -> None:  # noqa: ANN001
    """Batch sizes on a log2 x axis, ticked at ``sizes``; grid and legend."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(s) for s in sizes])
    ax.set_xlabel(xlabel)
    finish(ax, legend_size)


def finish(ax, legend_size: float = 9) -> None:  # noqa: ANN001
    """Grid and a frameless legend."""
    ax.grid(alpha=0.3)
    ax.legend(frameon=False, fontsize=legend_size)


def caption(fig, text: str) -> None:  # noqa: ANN001 - a matplotlib Figure
    """A small centred caption below the panels (save with bbox_inches="tight")."""
    fig.text(0.5, -0.04, text, ha="center", fontsize=8, wrap=True)


def save_figure(  # noqa: ANN201
    fig,  # noqa: ANN001 - a matplotlib Figure
    out: Path,
    title: str | None = None,
    title_size: float = 12,
    **savefig_kwargs: object,
) -> Path:
    """Write ``fig`` to ``out`` (folders created) under its ``title``, close it, and return the
    path."""
    import matplotlib.pyplot as plt  # after matplotlib.use above

    if title is not None:
        fig.suptitle(title, fontsize=title_size)

    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, **{"dpi": 130, **savefig_kwargs})
    plt.close(fig)
    return out
