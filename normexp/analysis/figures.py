"""``python -m normexp.analysis.figures``: collect the store, then draw every claim's figure
and write its verdict (results/figures/<claim>.png, results/verdicts/<claim>.json)."""

import argparse
import json
import os
from pathlib import Path

from normexp.analysis.claims import Tables, load_analyses
from normexp.analysis.columns import table
from normexp.analysis.damage import damaged_in
from normexp.analysis.lr_selection import protocol_entry
from normexp.analysis.report import write_report
from normexp.tracking.collect import DamagedRun, experiments_in_store, write_collected


def collect_tables(results_dir: Path, damaged: list[DamagedRun] | None = None) -> Tables:
    """The collected table of every experiment; damaged runs left out, into ``damaged``."""
    return {e: write_collected(results_dir, e, damaged) for e in experiments_in_store(results_dir)}


def write_figures_and_verdicts(results_dir: Path, wandb_mode: str = "auto") -> list[dict]:
    damaged: list[DamagedRun] = []
    tables = collect_tables(results_dir, damaged)
    verdicts = []
    analyses = load_analyses()
    for analysis in analyses:
        mine = {e: table(tables, e) for e in analysis.reads}
        out = results_dir / "figures" / f"{analysis.name}.png"
        figure = analysis.draw(mine, out, results_dir=results_dir)
        verdict = analysis.verdict(mine)
        protocol_entry(tables, analysis, results_dir, verdict)  # chosen LRs, LR figure, convergence
        if left_out := damaged_in(damaged, analysis.reads):  # computed without them: say so
            verdict["damaged_runs_left_out"] = left_out
        verdict_path = results_dir / "verdicts" / f"{analysis.name}.json"
        verdict_path.parent.mkdir(parents=True, exist_ok=True)
        verdict_path.write_text(json.dumps(verdict, indent=2, ensure_ascii=False) + "\n")
        runs = sum(len(t) for t in mine.values())
        source = f"{runs} runs" if analysis.reads else "from the layers (no runs)"
        print(f"{analysis.claim} {analysis.name}: {source}, {verdict['verdict']} -> {figure}")
        verdicts.append(verdict)
    md, page = write_report(results_dir, analyses, tables, wandb_mode, damaged)
    if damaged:
        print(f"{len(damaged)} damaged run(s) left out, named in the report")
    print(f"report -> {md}, {page}")
    return verdicts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=Path(os.environ.get("NORMEXP_RESULTS_DIR", "results")),
        help="results folder holding runs/ (default: $NORMEXP_RESULTS_DIR or ./results)",
    )
    parser.add_argument(
        "--wandb-mode",
        default="auto",
        choices=("auto", "offline", "online", "disabled"),
        help="W&B run that shows the figures and verdicts (default: auto = offline unless "
        "logged in)",
    )
    args = parser.parse_args(argv)
    write_figures_and_verdicts(args.results_dir, args.wandb_mode)


if __name__ == "__main__":
    main()
