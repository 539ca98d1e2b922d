"""Where a profile's CPU time goes, from the store: run seconds per experiment and per batch
size, and a projection of a grid's cost from seconds per training image at each batch size.

``python -m normexp.bench.cost [--results results]`` prints both tables and checks the time
model against the store: the committed grid projected from it vs its measured total. Runs are
read through normexp.tracking.collect, so the tables follow the store wherever it lives; a
results folder without runs/ is searched one level down (one store per profile)."""

import argparse
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from normexp.tracking.collect import collect_runs, experiments_in_store

COLUMNS = {  # collected column -> short name
    "train.task": "task",
    "train.batch_size": "batch_size",
    "train.epochs": "epochs",
    "data.n_train": "n_train",
    "wall_time_s": "seconds",
    "status": "status",
}


def stores(results_dir: Path) -> list[Path]:
    """The store folders under ``results_dir``: itself, or its per-profile subfolders."""
    results_dir = Path(results_dir)
    if (results_dir / "runs").is_dir():
        return [results_dir]
    return sorted(p.parent for p in results_dir.glob("*/runs") if p.is_dir())


def run_costs(results_dir: Path) -> pd.DataFrame:
    """One row per ended run of every store under ``results_dir``: experiment, task, batch
    size, epochs, training images, wall seconds (training and evaluation)."""
    frames = []
    for store in stores(results_dir):
        for experiment in experiments_in_store(store):
            df = collect_runs(store, experiment)
            if df.empty or "wall_time_s" not in df:
                continue
            df = df[[c for c in COLUMNS if c in df]].rename(columns=COLUMNS)
            frames.append(df.dropna(subset=["seconds"]).assign(experiment=experiment))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["seconds"])


def cost_table(runs: pd.DataFrame, by: str | list[str]) -> pd.DataFrame:
    """Runs, run-minutes and share of all run time per value of ``by``, costliest first."""
    table = runs.groupby(by).agg(runs=("seconds", "size"), seconds=("seconds", "sum"))
    table["minutes"] = table["seconds"] / 60
    table["share"] = table["seconds"] / table["seconds"].sum()
    return table.sort_values("seconds", ascending=False)


def seconds_per_image(runs: pd.DataFrame, task: str = "classification") -> dict[int, float]:
    """The time model: median wall seconds per training image (epochs x images, evaluation
    included) of the ``task`` runs at each batch size."""
    images = runs[runs["task"] == task]
    per_image = images["seconds"] / (images["epochs"] * images["n_train"])
    return {int(b): float(v) for b, v in per_image.groupby(images["batch_size"]).median().items()}


def project(grid: Iterable[Mapping], per_image: Mapping[int, float]) -> float:
    """Seconds that ``grid`` costs: each entry has runs, batch_size, epochs, n_train. Batch sizes
    not in the time model are interpolated on log2(batch size) (clamped at its ends)."""
    sizes = sorted(per_image)
    log_b, cost = np.log2(sizes), np.array([per_image[b] for b in sizes])
    total = 0.0
    for cell in grid:
        seconds = float(np.interp(np.log2(cell["batch_size"]), log_b, cost))
        total += cell.get("runs", 1) * cell["epochs"] * cell["n_train"] * seconds
    return total


def store_grid(runs: pd.DataFrame, task: str = "classification") -> list[dict]:
    """The ``task`` runs of the store as a grid (one cell per batch size, epochs, images)."""
    images = runs[runs["task"] == task]
    cells = images.groupby(["batch_size", "epochs", "n_train"]).size()
    return [
        dict(batch_size=int(b), epochs=int(e), n_train=int(n), runs=int(count))
        for (b, e, n), count in cells.items()
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=Path, default=Path("results"))
    args = parser.parse_args()
    runs = run_costs(args.results)
    if runs.empty:
        print(f"no ended runs under {args.results}")
        return
    fmt = {"minutes": "{:.1f}".format, "share": "{:.0%}".format}
    for by in ("experiment", ["task", "batch_size"]):
        print(cost_table(runs, by).drop(columns="seconds").to_string(formatters=fmt), end="\n\n")
    per_image = seconds_per_image(runs)
    print("classification, ms per training image (evaluation included), by batch size:")
    print("  ".join(f"b={b}: {1e3 * s:.2f}" for b, s in per_image.items()))
    measured = runs.loc[runs["task"] == "classification", "seconds"].sum()
    projected = project(store_grid(runs), per_image)
    print(
        f"classification runs: {measured / 60:.1f} run-min measured, "
        f"{projected / 60:.1f} projected from the time model"
    )


if __name__ == "__main__":
    main()
