"""What the exploration notebook (notebooks/explore_results.ipynb) is built on: the collected
tables, the claims' verdicts with their CIs (the report's numbers), and slicing of the runs by
norm × batch × position × model × seed with a mean and 95% CI over seeds per cell.

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

from normexp.analysis.claims import load_analyses
from normexp.analysis.columns import Tables
from normexp.analysis.figures import of_record_for, verdict_of_record
from normexp.analysis.stats import mean_ci
from normexp.catalogue import REPO
from normexp.errors import one_line_errors
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


def load_tables(results_dir: Path) -> Tables:
    """The tables ``make figures`` collected in one profile's folder: {experiment: one row per
    run}."""
    folder = Path(results_dir) / "collected"
    return {p.stem: pd.read_parquet(p) for p in sorted(folder.glob("*.parquet"))}


def runs_table(tables: Tables) -> pd.DataFrame:
    """Runs per experiment and status, with the seeds each has."""
    rows = []
    for name, df in tables.items():
        row = {"experiment": name, "runs": len(df), "seeds": df["seed"].nunique()}
        row.update(df["status"].value_counts().to_dict())
        rows.append(row)
    return pd.DataFrame(rows).set_index("experiment").fillna(0).astype(int)


def verdict_table(tables: Tables, results_dir: Path) -> pd.DataFrame:
    """Each claim's verdict, effect estimate and 95% CI, decided from ``tables`` (of the profile
    folder ``results_dir``) exactly as the report decides it: its runs of record, its rule."""
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


def slice_runs(df: pd.DataFrame, status: str | None = "ok", **where: object) -> pd.DataFrame:
    """The runs of ``df`` whose axes (keys of ``AXES``: norm, batch, position, model, seed) take
    the given value, or one of the given values for a list; ``status=None`` keeps every run."""
    unknown = set(where) - set(AXES)
    if unknown:
        raise ValueError(f"unknown axes {sorted(unknown)}; slice by {list(AXES)}")
    mask = pd.Series(True, index=df.index)
    if status is not None:
        mask &= df["status"] == status
    for axis, value in where.items():
        if value is not None:
            mask &= df[AXES[axis]].isin(_wanted(value))
    return df[mask]


def cell_means(
    df: pd.DataFrame, metric: str, by: Sequence[str] = ("norm", "batch"), scale: float = 1.0
) -> pd.DataFrame:
    """Per cell of the axes ``by``: mean of ``metric`` × ``scale`` over runs, its 95% CI over
    seeds (Student t) and the number of seeds."""
    columns = [AXES[b] for b in by]
    rows = []
    for key, cell in df.groupby(columns, dropna=False):
        per_seed = (scale * cell.groupby("seed")[metric].mean()).tolist()
        mean, lo, hi = mean_ci(per_seed)
        rows.append((*key, mean, lo, hi, len(per_seed)))
    return pd.DataFrame(rows, columns=[*by, "mean", "ci_low", "ci_high", "seeds"]).set_index(
        list(by)
    )


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
