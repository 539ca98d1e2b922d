"""One look for every figure: a colour per norm, the same everywhere."""

import matplotlib

matplotlib.use("Agg")  # figures are files; no display needed

NORM_COLORS = {
    "none": "#7f7f7f",
    "batch": "#1f77b4",
    "ghost_batch": "#17becf",
    "batch_renorm": "#9467bd",
    "group": "#2ca02c",
    "layer": "#ff7f0e",
    "instance": "#d62728",
    "rms": "#8c564b",
}
NORM_LABELS = {
    "none": "no norm",
    "batch": "BN",
    "group": "GN",
    "layer": "LN",
    "instance": "IN",
}


def norm_color(name: str) -> str:
    return NORM_COLORS.get(name, "#333333")


def norm_label(name: str) -> str:
    return NORM_LABELS.get(name, name)


def not_run_yet(ax, what: str) -> None:  # noqa: ANN001 - a matplotlib Axes
    ax.text(
        0.5,
        0.5,
        f"{what}: not run yet",
        ha="center",
        va="center",
        transform=ax.transAxes,
        color="#888888",
        fontsize=12,
    )
    ax.set_xticks([])
    ax.set_yticks([])


def save_figure(fig, out, **savefig_kwargs):  # noqa: ANN001, ANN201 - matplotlib Figure, Path
    """Write ``fig`` to ``out`` (folders created), close it, and return the path."""
    import matplotlib.pyplot as plt

    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, **{"dpi": 130, **savefig_kwargs})
    plt.close(fig)
    return out
