"""``python -m normexp.analysis.figures``: collect the store and draw every claim's figure."""

import argparse
import json
import os
from pathlib import Path

from normexp.analysis import bn_small_batch, norm_sets
from normexp.tracking.collect import experiments_in_store, write_collected

FIGURES = {bn_small_batch.EXPERIMENT: bn_small_batch.draw}
# Claims decided from the layers themselves, not from runs: (draw(out_path), verdict()).
LAYER_FIGURES = {norm_sets.EXPERIMENT: (norm_sets.draw, norm_sets.verdict)}


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
    for experiment, (draw, verdict) in LAYER_FIGURES.items():
        path = draw(args.results_dir / "figures" / f"{experiment}.png")
        result = verdict()
        verdict_path = args.results_dir / "verdicts" / f"{experiment}.json"
        verdict_path.parent.mkdir(parents=True, exist_ok=True)
        verdict_path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        print(f"{experiment}: from the layers (no runs), {result['verdict']} -> {path}")


if __name__ == "__main__":
    main()
