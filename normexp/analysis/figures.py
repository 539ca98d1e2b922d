"""``python -m normexp.analysis.figures [--profile P] [--formats png,pdf]``: collect one
profile's runs, then draw every claim's figure and write its verdict and the report, all in that
profile's folder (results/<profile>/figures/<claim>.png and its vector copy <claim>.pdf,
results/<profile>/verdicts/<claim>.json, results/<profile>/REPORT.md and report.html); other
profiles' folders are not written, and only their verdicts are read (the report's scale table,
normexp/analysis/report/scales.py)."""

import argparse
import json
from pathlib import Path

from normexp.analysis import style
from normexp.analysis.claims import load_analyses
from normexp.analysis.columns import Tables, table
from normexp.analysis.report import gn_grouping, grid, write_report
from normexp.analysis.report.damage import damaged_in
from normexp.analysis.report.scales import report_extra
from normexp.analysis.verdict import ladder
from normexp.analysis.verdict.architecture import is_baseline
from normexp.analysis.verdict.convergence import with_check_runs
from normexp.analysis.verdict.ladder import with_ladder_runs
from normexp.analysis.verdict.lr_selection import protocol_entry
from normexp.analysis.verdict.record import apply_record, of_record
from normexp.analysis.verdict.regime import apply_regime, apply_sub_regime, regime_of_runs
from normexp.analysis.verdict.spec import ClaimAnalysis
from normexp.analysis.verdict.tuning import apply_sub_tuning, apply_tuning, edge_cells
from normexp.catalogue import PROFILE_CONFIGS
from normexp.errors import one_line_errors
from normexp.tracking.collect import DamagedRun, experiments_in_store, write_collected
from normexp.tracking.store import RECORD_PROFILE, check_layout, default_results_dir, profile_dir

# Report sections after the claims (not claims: no verdict of their own).
SECTIONS = (gn_grouping.SECTION, grid.SECTION)

def collect_tables(results_dir: Path, damaged: list[DamagedRun] | None = None) -> Tables:
    """The collected table of every experiment of one profile's folder ``results_dir``;
    damaged runs left out, into ``damaged``."""
    return {e: write_collected(results_dir, e, damaged) for e in experiments_in_store(results_dir)}


def of_record_for(
    analysis: ClaimAnalysis, tables: Tables, results_dir: Path
) -> tuple[Tables, dict]:
    """An analysis's tables: its runs of record (declared seeds, made by the declaring experiment
    file), with the convergence check's and the budget ladder's runs beside them (they pair with
    the runs of record; ``columns.table``, which every statistic reads, leaves them out), and
    what was left out."""
    mine, record = of_record({e: table(tables, e) for e in analysis.reads}, results_dir)
    beside = {e: with_check_runs(df, tables.get(e)) for e, df in mine.items()}
    return {e: with_ladder_runs(df, tables.get(e)) for e, df in beside.items()}, record


def verdict_of_record(
    analysis: ClaimAnalysis, mine: Tables, record: dict, raw: Tables | None = None
) -> dict:
    """The verdict as the report states it: the analysis's rule on its runs of record, withheld
    where the deciding cells lack declared seeds, and named with its regime (at convergence or
    at a fixed budget, from the convergence check of its deciding cells in the raw tables), and
    withheld where a deciding cell's LR sits at the edge of its grid. A sub-claim with deciding
    runs of its own (``sub_deciding``: C11's rows, each on its source's) is judged on those."""
    verdict = analysis.verdict(mine)
    if analysis.reads:
        deciding = compared_runs(analysis.deciding(mine) if analysis.deciding else mine)
        verdict = apply_record(verdict, record, deciding)
        raw = raw if raw is not None else mine
        own = analysis.sub_deciding(mine) if analysis.sub_deciding else {}
        for sub in verdict.get("sub") or []:
            if (runs := own.get(sub["id"])) is not None:
                runs = {k: df for k, df in compared_runs(runs).items() if not is_baseline(k)}
                apply_sub_regime(sub, runs, regime_of_runs(raw, runs), analysis.about_training)
                apply_sub_tuning(sub, edge_cells(raw, runs))
        compared = {k: df for k, df in deciding.items() if not is_baseline(k)}
        verdict = apply_regime(verdict, regime_of_runs(raw, compared), analysis.about_training)
        verdict = apply_tuning(verdict, edge_cells(raw, compared))
    return verdict


def compared_runs(deciding: Tables) -> Tables:
    """Deciding tables as their runs of record (the check and ladder runs beside them out)."""
    return {k: table(deciding, k) for k in deciding}


def write_figures_and_verdicts(results_dir: Path, wandb_mode: str = "auto") -> list[dict]:
    """Tables, figures, verdicts and report of one profile, from and into its folder
    ``results_dir`` (``profile_dir(root, profile)``)."""
    damaged: list[DamagedRun] = []
    tables = collect_tables(results_dir, damaged)
    verdicts = []
    analyses = load_analyses()
    # report sections after the claims (the grid): their runs of record, read once
    extra = [(s, of_record({e: table(tables, e) for e in s.reads}, results_dir)[0])
             for s in SECTIONS]
    for analysis in analyses:
        # only the runs of record (declared seeds, made by the declaring experiment file)
        mine, record = of_record_for(analysis, tables, results_dir)
        out = results_dir / "figures" / f"{analysis.name}.png"
        figure = analysis.draw(mine, out, results_dir=results_dir)
        verdict = verdict_of_record(analysis, mine, record, tables)
        protocol_entry(tables, analysis, results_dir, verdict)  # chosen LRs, LR figure, convergence
        if analysis.reads and (rungs := ladder.series(analysis.verdict, mine, analysis.deciding)):
            verdict["ladder"] = rungs
            if rungs["mixed"]:
                verdict["ladder_note"] = ladder.mixed_note(rungs["mixed"])
            if rungs["points"]:
                out_ladder = results_dir / "figures" / f"{analysis.name}_ladder.png"
                title = f"{analysis.claim}: the deciding statistics as the training budget grows"
                verdict["ladder_figure"] = f"figures/{ladder.draw(rungs, out_ladder, title).name}"
        if left_out := damaged_in(damaged, analysis.reads):  # computed without them: say so
            verdict["damaged_runs_left_out"] = left_out
        for section, section_tables in extra:  # which model families support it (not of record)
            if section.families and (line := section.families(section_tables, analysis.claim)):
                verdict[section.part] = line
        verdict_path = results_dir / "verdicts" / f"{analysis.name}.json"
        verdict_path.parent.mkdir(parents=True, exist_ok=True)
        verdict_path.write_text(json.dumps(verdict, indent=2, ensure_ascii=False) + "\n")
        runs = sum(len(t) for t in mine.values())
        source = f"{runs} runs" if analysis.reads else "from the layers (no runs)"
        print(f"{analysis.claim} {analysis.name}: {source}, {verdict['verdict']} -> {figure}")
        verdicts.append(verdict)
    sections = []
    for section, section_tables in extra:
        figures = section.draw(section_tables, results_dir / "figures")
        runs = sum(len(t) for t in section_tables.values())
        print(f"{section.name}: {runs} runs -> {', '.join(map(str, figures))}")
        store = {"results_dir": results_dir} if section.reads_store else {}
        text = section.markdown(section_tables, **store)
        sections.append({"section": section, "figures": figures, "text": text})
    sections.append(report_extra(results_dir))  # every claim at every profile, this one's fresh
    md, page = write_report(results_dir, analyses, tables, wandb_mode, damaged, sections)
    if damaged:
        print(f"{len(damaged)} damaged run(s) left out, named in the report")
    print(f"report -> {md}, {page}")
    return verdicts


def known_profiles(results_dir: Path) -> set[str]:
    """The profiles of configs/profile/, and any the store has runs of."""
    configs = PROFILE_CONFIGS
    stored = {p.parent.name for p in Path(results_dir).glob("*/runs")}
    return {p.stem for p in configs.glob("*.yaml")} | stored


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--results-dir",
        type=Path,
        default=default_results_dir(),
        help="results store, one folder per profile (default: $NORMEXP_RESULTS_DIR or ./results)",
    )
    parser.add_argument(
        "--profile",
        default=RECORD_PROFILE,
        help=f"the profile to report, from and into <results>/<profile>/ (default: "
        f"{RECORD_PROFILE}, the profile of the committed reproduction)",
    )
    parser.add_argument(
        "--wandb-mode",
        default="auto",
        choices=("auto", "offline", "online", "disabled"),
        help="W&B run that shows the figures and verdicts (default: auto = offline unless "
        "logged in)",
    )
    parser.add_argument(
        "--formats",
        default=",".join(style.current_formats()),
        help="the files of each figure, comma-separated: the PNG the report shows, and vector "
        "copies beside it that its images link to (pdf, svg; default: $NORMEXP_FIGURE_FORMATS, "
        f"else {','.join(style.FORMATS)})",
    )
    args = parser.parse_args(argv)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    if unknown := sorted(set(formats) - {"png", "pdf", "svg"}):
        parser.error(f"--formats: unknown {', '.join(unknown)}; allowed: png, pdf, svg")
    with one_line_errors():
        check_layout(args.results_dir)
    known = known_profiles(args.results_dir)
    if args.profile not in known:  # a typo would otherwise get a report of its own, empty
        parser.error(f"unknown profile {args.profile!r}; known: {', '.join(sorted(known))}")
    with one_line_errors(), style.formats(formats):  # errors: e.g. runs of two scales in one
        # statistic (analysis/one_scale.py)
        write_figures_and_verdicts(profile_dir(args.results_dir, args.profile), args.wandb_mode)


if __name__ == "__main__":
    main()
