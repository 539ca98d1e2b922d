"""``python -m normexp.analysis.figures``: collect the store and draw every claim's figure."""

import argparse
import os
from pathlib import Path

from normexp.analysis import bn_small_batch
from normexp.tracking.collect import experiments_in_store, write_collected

FIGURES = {bn_small_batch.EXPERIMENT: bn_small_batch.draw}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=Path(os.environ.get("NORMEXP_RESULTS_DIR", "results")),
        help="results folder holding runs/ (default: $NORMEXP_RESULTS_DIR or ./results)",
    )
    args = parser.parse_args(argv)
    present = experiments_in_store(args.results_dir)
    for experiment, draw in FIGURES.items():
        if experiment in present:
            df = write_collected(args.results_dir, experiment)
        else:
            import pandas as pd

            df = pd.DataFrame()
        path = draw(df, args.results_dir / "figures" / f"{experiment}.png")
        runs = "not run yet" if df.empty else f"{len(df)} runs"
        print(f"{experiment}: {runs} -> {path}")


if __name__ == "__main__":
    main()
