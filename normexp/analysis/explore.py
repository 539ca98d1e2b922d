"""What the exploration notebook (notebooks/explore_results.ipynb) is built on: the collected
tables, the claims' verdicts with their CIs (the report's numbers), and slicing of the runs by
norm × batch × position × model × seed with a mean and 95% CI over seeds per cell.

Only runs of record are averaged, as in the report: the collected tables also hold the fair
protocol's other runs (``protocol.stage``: LR selection on selection seeds, the budget ladder's
lower budgets, the convergence check's doubled budget), which would pull a cell's mean toward
another budget or LR. ``runs_of_record`` keeps the runs the report reads (``columns.table``:
stage record; ``verdict.record.of_record``: declared seeds, made by the declaring experiment
file); ``slice_runs`` keeps stage record by default and ``cell_means`` refuses a mix of stages.

``python -m normexp.analysis.explore [--profile P]`` executes the notebook against one profile's
folder of the store (``make figures`` does it after the report), with outputs that are the same
bytes on a rerun. The committed notebook is the profile of record's (``RECORD_PROFILE``): for it
the notebook is executed in place; for any other profile the executed copy goes into that
profile's folder (results/<profile>/explore_results.ipynb), leaving the committed one as it is.
"""

import argparse
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd

from normexp.analysis import columns as col
from normexp.analysis.claims import load_analyses
from normexp.analysis.columns import Tables
from normexp.analysis.figures import of_record_for, verdict_of_record
from normexp.analysis.report import STAGE_LABELS
from normexp.analysis.stats import mean_ci
from normexp.analysis.verdict.record import load_tables, runs_of_record  # noqa: F401 (notebook)
from normexp.catalogue import REPO
from normexp.errors import one_line_errors
from normexp.protocol.select import STAGES
from normexp.tracking.store import RECORD_PROFILE, check_layout, default_results_dir, profile_dir

# The slicing axes and the collected table's column for each.
AXES = {
    "norm": "norm.name",
    "batch": "train.batch_size",
    "position": "norm.position",
    "model": "model.name",
    "seed": "seed",
}
NOTEBOOK = REPO / "notebooks" / "explore_results.ipynb"
RECORD = "record"  # the stage of the runs of record (older tables without the column: all)


def _stages(df: pd.DataFrame) -> pd.Series:
    return df[col.STAGE].fillna(RECORD) if col.STAGE in df else pd.Series(RECORD, df.index)


def runs_table(tables: Tables, results_dir: Path | None = None) -> pd.DataFrame:
    """Per experiment: its runs, how many of them are of record and of each other stage of the
    fair protocol (a stage no experiment ran left out), the seeds of record, and the runs of
    record by status."""
    record = runs_of_record(tables, results_dir)
    rows = []
    for name, df in tables.items():
        stages = _stages(df).value_counts()
        mine = record.get(name, df.iloc[:0])
        row = {"experiment": name, "runs": len(df), "of record": len(mine)}
        row.update({label: int(stages.get(s, 0)) for s, label in STAGE_LABELS.items()})
        row["seeds of record"] = mine[col.SEED].nunique() if not mine.empty else 0
        row.update(mine[col.STATUS].value_counts().to_dict() if not mine.empty else {})
        rows.append(row)
    if not rows:  # nothing collected yet
        return pd.DataFrame()
    out = pd.DataFrame(rows).set_index("experiment").fillna(0).astype(int)
    unused = [label for label in STAGE_LABELS.values() if label in out and not out[label].any()]
    return out.drop(columns=unused)


def verdict_table(tables: Tables, results_dir: Path) -> pd.DataFrame:
    """Each claim's verdict, effect estimate and 95% CI, decided from ``tables`` (every stage,
    as ``load_tables`` gives them, of the profile folder ``results_dir``) exactly as the report
    decides it: its runs of record, its rule, the convergence check's runs for its regime."""
    rows = []
    for a in load_analyses():
        v = verdict_of_record(a, *of_record_for(a, tables, Path(results_dir)), tables)
        lo, hi = v["ci"] if v.get("ci") else (None, None)
        rows.append(
            {
                "claim": a.claim,
                "analysis": a.name,
                "the blog says": a.title,
                "verdict": v["verdict"],
                "estimate": v.get("estimate"),
                "ci_low": lo,
                "ci_high": hi,
            }
        )
    return pd.DataFrame(rows).set_index("claim")


def _wanted(value: object) -> list:
    return list(value) if isinstance(value, Iterable) and not isinstance(value, str) else [value]


def slice_runs(
    df: pd.DataFrame, status: str | None = "ok", stage: str | None = RECORD, **where: object
) -> pd.DataFrame:
    """The runs of ``df`` whose axes (keys of ``AXES``: norm, batch, position, model, seed) take
    the given value, or one of the given values for a list; ``status=None`` keeps every status,
    ``stage=None`` every stage of the fair protocol (default: the runs of record only)."""
    unknown = set(where) - set(AXES)
    if unknown:
        raise ValueError(f"unknown axes {sorted(unknown)}; slice by {list(AXES)}")
    if stage is not None and stage not in STAGES:
        raise ValueError(f"stage: unknown {stage!r}; allowed: {', '.join(STAGES)} or None")
    mask = pd.Series(True, index=df.index)
    if status is not None:
        mask &= df["status"] == status
    if stage is not None:
        mask &= _stages(df) == stage
    for axis, value in where.items():
        if value is not None:
            mask &= df[AXES[axis]].isin(_wanted(value))
    return df[mask]


def cell_means(
    df: pd.DataFrame, metric: str, by: Sequence[str] = ("norm", "batch"), scale: float = 1.0
) -> pd.DataFrame:
    """Per cell of the axes ``by``: mean of ``metric`` × ``scale`` over runs, its 95% CI over
    seeds (Student t) and the number of seeds. Runs of one stage only (``slice_runs`` keeps the
    runs of record): a selection or check run of a seed would be averaged into its cell."""
    if len(mixed := sorted(_stages(df).unique())) > 1:
        raise ValueError(
            f"cell_means: runs of stages {mixed} would share a cell; slice_runs(df) keeps the "
            "runs of record"
        )
    columns = [AXES[b] for b in by]
    rows = []
    for key, cell in df.groupby(columns, dropna=False):
        per_seed = (scale * cell.groupby("seed")[metric].mean()).tolist()
        mean, lo, hi = mean_ci(per_seed)
        rows.append((*key, mean, lo, hi, len(per_seed)))
    return pd.DataFrame(rows, columns=[*by, "mean", "ci_low", "ci_high", "seeds"]).set_index(
        list(by)
    )


def plot_cell_means(cells: pd.DataFrame, ax=None, ylabel: str = ""):  # noqa: ANN001, ANN201
    """``cell_means(..., by=["norm", "batch"])`` as the report draws it: one line per norm
    against the batch size (log2 axis), the mean with its 95% CI as error bars, each norm in
    its registry colour and short name (the report's palette, ``normexp.analysis.style``).
    Returns the Figure."""
    import matplotlib.pyplot as plt

    from normexp.analysis.style import norm_color, norm_label

    if ax is None:
        _, ax = plt.subplots(figsize=(7, 4), layout="constrained")
    for norm, cell in cells.groupby(level="norm", sort=False):
        batch = cell.index.get_level_values("batch")
        err = [cell["mean"] - cell["ci_low"], cell["ci_high"] - cell["mean"]]
        ax.errorbar(batch, cell["mean"], yerr=err, marker="o", capsize=3,
                    color=norm_color(norm), label=norm_label(norm))  # fmt: skip
    ax.set_xscale("log", base=2)
    sizes = sorted(set(cells.index.get_level_values("batch")))
    ax.set_xticks(sizes, [str(b) for b in sizes])
    ax.minorticks_off()
    ax.set_xlabel("batch size")
    ax.set_ylabel(ylabel or "mean and 95% CI over seeds")
    ax.grid(alpha=0.3)
    ax.legend()
    return ax.figure


def _normalize(notebook) -> None:  # noqa: ANN001 - an nbformat NotebookNode
    """Drop what changes from one execution to the next: timings and random cell ids."""
    for i, cell in enumerate(notebook.cells):
        cell["id"] = f"cell-{i}"
        cell.metadata.pop("execution", None)


def execute_notebook(results_dir: Path, source: Path = NOTEBOOK, out: Path | None = None) -> Path:
    """Run the notebook against the profile folder ``results_dir`` (``profile_dir``) and write
    it with its outputs to ``out`` (default: in place)."""
    import nbformat  # the dev extras: only running the notebook needs them
    from nbclient import NotebookClient

    notebook = nbformat.read(source, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(Path(source).resolve().parent)}},
    )
    # The kernel reads the store and the profile from its environment, as a reader's would, and
    # imports this checkout's normexp (the one running here), wherever the notebook lies.
    here = str(REPO)
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)
    folder = Path(results_dir).resolve()
    env = {"NORMEXP_RESULTS_DIR": str(folder.parent), "NORMEXP_PROFILE": folder.name}
    client.execute(env={**os.environ, **env, "PYTHONPATH": path})
    _normalize(notebook)
    out = Path(out or source)
    nbformat.write(notebook, out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    results = default_results_dir()
    parser.add_argument("results_dir", nargs="?", type=Path, default=results)
    parser.add_argument("--profile", default=RECORD_PROFILE, help="default: %(default)s")
    parser.add_argument("--notebook", type=Path, default=NOTEBOOK)
    args = parser.parse_args(argv)
    with one_line_errors():
        check_layout(args.results_dir)
    folder = profile_dir(args.results_dir, args.profile)
    # Only the profile of record's outputs are the committed notebook's.
    out = args.notebook if args.profile == RECORD_PROFILE else folder / args.notebook.name
    print(f"notebook -> {execute_notebook(folder, args.notebook, out)}")


if __name__ == "__main__":
    main()
