"""W&B dashboards as code: one report per claim, built from what each claim declares (its
``dashboard``: which metrics to compare across which config fields; ``wandb-workspaces``).
Building needs no network; publishing does.

Every panel shows the runs the report averages, of one profile: its runs of record (the
``protocol.stage`` field the mirror logs; the LR selection's, the budget ladder's and the
convergence check's runs are left out) on the seeds the profile declares
(normexp/analysis/verdict/record.py). Runs that another experiment file added to the same store
folder cannot be told apart by their config; the report leaves them out from the sweep log.

Each report opens with the claim's verdict table, the rows REPORT.md opens with
(``top_table_markdown``, from the profile's verdicts/), then its figure, then a panel grid per
architecture and task that decides it (``grids_of``). W&B's bar panels can draw ± s.e., not a
Student-t interval, so bars show the mean over seeds and a table under each grid gives every
group's mean and 95% CI over seeds as the report computes them (``stats.mean_ci``), from the
profile's collected tables (``make figures`` writes them).

    python -m normexp.analysis.report.dashboards            # build offline, list the reports
    python -m normexp.analysis.report.dashboards --sync     # replay the store, upload its runs
    python -m normexp.analysis.report.dashboards --publish  # save the reports (online only)

``--sync`` (``make wandb-sync``) first replays every stored run of the profile that has no W&B
run into an offline one (normexp.tracking.wandb_replay), then uploads the profile's offline runs
(training, replayed and report runs) when the user is logged in and W&B can be reached; else it
leaves them offline and says where, in one line.
"""

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd
import wandb
import wandb_workspaces.reports.v2 as wr
from wandb_workspaces.expr import Filters, expr_to_filters

from normexp import metrics
from normexp.analysis import columns as col
from normexp.analysis.claims import analysis_named, load_analyses
from normexp.analysis.columns import Tables
from normexp.analysis.report import top_table_markdown, verdict_line
from normexp.analysis.stats import mean_ci
from normexp.analysis.verdict.record import declared_seeds, load_tables, runs_of_record
from normexp.analysis.verdict.spec import ClaimAnalysis, Grid
from normexp.tracking.store import NOT_PROFILES, RECORD_PROFILE, default_results_dir, profile_dir
from normexp.tracking.wandb_mirror import (
    RECORD_STAGE,
    STAGE_PATH,
    STEP_METRIC,
    _logged_in,
    _unreachable,
    wandb_key,
)
from normexp.tracking.wandb_replay import offline_runs, replay

REPORT_GROUP = "report"  # the W&B group of the report run (normexp.analysis.report)
FIGURE_KEY = "figures/{name}"  # media key of a claim's figure in the report run
BAR_AGG = {"groupby_aggfunc": "mean", "groupby_rangefunc": "none"}  # 95% CIs: the table below
CURVE_AGG = {"groupby_aggfunc": "mean", "groupby_rangefunc": "stderr"}  # a band per epoch
STORE_NAMES = {wandb_key(name): name for name in metrics.METRICS}  # W&B name -> store column


@dataclasses.dataclass(frozen=True)
class Store:
    """What the reports read from one profile's folder: the runs of record of its collected
    tables (as the report reads them) and its verdicts, by claim name."""

    folder: Path
    record: Tables
    verdicts: Mapping[str, dict]


def read_store(folder: Path) -> Store:
    """A profile folder's runs of record and verdicts (none yet: empty)."""
    folder = Path(folder)
    record = runs_of_record(load_tables(folder), folder) if (folder / "collected").is_dir() else {}
    verdicts = {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("verdicts/*.json"))}
    return Store(folder, record, verdicts)


def record_filter(profile: str) -> str:
    """The W&B filter on one profile's runs of record: that profile (profiles are partitions),
    stage record, and its declared seeds (none declared: no seed filter)."""
    filters = f"Config('profile') = '{profile}' and Config('{STAGE_PATH}') = '{RECORD_STAGE}'"
    if seeds := declared_seeds(profile):
        filters += f" and Config('seed') in [{', '.join(map(str, seeds))}]"
    return filters


def _runset(grid: Grid, entity: str, project: str, profile: str):
    names = ", ".join(repr(e) for e in grid.experiments)
    filters = f"{record_filter(profile)} and Config('claim.name') in [{names}]"
    if grid.where:
        filters += f" and {grid.where}"
    return wr.Runset(
        entity=entity,
        project=project,
        name=grid.title,
        filters=filters,
        groupby=[f"config.{path}" for path in grid.group_by],
    )


def unregistered(grid: Grid) -> list[str]:
    """The metrics a grid's panels name (W&B names) that are no registered metric's."""
    known = {wandb_key(name) for name in metrics.METRICS}
    metrics_in_parallel = [c for c in grid.parallel if "/" in c]  # the others: config fields
    named = [*grid.bars, *grid.curves, *(grid.scatter or ())[1:], *metrics_in_parallel]
    return [key for key in named if key not in known]


def _panels(grid: Grid) -> list:
    if unknown := unregistered(grid):
        raise ValueError(
            f"dashboard grid {grid.title!r}: {', '.join(unknown)} is no registered metric "
            "(normexp.metrics)"
        )
    def column(name: str):
        metric = wr.SummaryMetric(name) if "/" in name else wr.Config(name)
        return wr.ParallelCoordinatesPlotColumn(metric=metric)

    panels: list = [
        wr.BarPlot(title=key, metrics=[wr.SummaryMetric(key)], orientation="v", **BAR_AGG)
        for key in grid.bars
    ]
    panels += [wr.LinePlot(title=key, x=STEP_METRIC, y=[key], **CURVE_AGG) for key in grid.curves]
    if grid.scatter:
        x, y = grid.scatter
        panels.append(
            wr.ScatterPlot(
                title=f"{y} vs {x}",
                x=wr.Config(x),
                y=wr.SummaryMetric(y),
                log_x=grid.log_x or None,
            )
        )
    if grid.parallel:
        panels.append(wr.ParallelCoordinatesPlot(columns=[column(c) for c in grid.parallel]))
    if grid.media:
        panels.append(wr.MediaBrowser(title="media", media_keys=list(grid.media), num_columns=5))
    return panels


def grids_of(spec: ClaimAnalysis) -> list[Grid]:
    """A claim's panel grids: its own; decided per architecture, each grid on its CNN
    experiment again on the ResNet's store folder, as a grid of its own (one architecture per
    panel: the verdict of record may be either's); a claim that reads others (C11), the grids
    of each source that show the source's deciding runs, titled by the source."""
    arch = spec.per_architecture
    grids = list(spec.dashboard)
    if arch is not None:
        grids += [
            dataclasses.replace(g, title=f"{g.title} (ResNet)", experiments=(arch.resnet,))
            for g in spec.dashboard
            if arch.experiment in g.experiments
        ]
    for name in spec.reads_from:
        source = analysis_named(name)
        deciding = set(source.decided_from())
        grids += [
            dataclasses.replace(g, title=f"{source.claim} ({source.name}): {g.title}")
            for g in grids_of(source)
            if deciding & set(g.experiments)
        ]
    return grids


def _value(row: Mapping, section: str, name: str):
    value = row.get(name) if section == "config" else None
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if hasattr(value, "item") else value


def passes(tree: Filters, value_of: Callable[[str, str], object]) -> bool:
    """Whether a run passes a run set's filter tree (``expr_to_filters``), as W&B evaluates
    it; ``value_of(section, name)``: the run's value (config fields only in these filters)."""
    if tree.op in ("AND", "OR"):
        parts = [passes(f, value_of) for f in tree.filters or [] if not f.disabled]
        return all(parts) if tree.op == "AND" else any(parts)
    value, wanted = value_of(tree.key.section, tree.key.name), tree.value
    compare = {
        "=": lambda: value == wanted, "!=": lambda: value != wanted,
        "IN": lambda: value in wanted, "NIN": lambda: value not in wanted,
        ">=": lambda: value >= wanted, "<=": lambda: value <= wanted,
        ">": lambda: value > wanted, "<": lambda: value < wanted,
    }  # fmt: skip
    try:
        return bool(compare[tree.op]())
    except TypeError:  # a missing value compared with a number: not shown
        return False


def _fmt(x: float) -> str:
    return "—" if math.isnan(x) else f"{x:.4g}"


def group_cis(grid: Grid, record: Tables, filters: str) -> pd.DataFrame:
    """Per group of a grid's run set (its ``filters`` evaluated on the runs of record ``record``
    of its experiments, finished ok), each bar metric's mean and 95% CI over seeds (Student t,
    ``stats.mean_ci``, per seed the mean of its runs) and the number of seeds: the numbers the
    grid's bars stand for."""
    frames = [record[e] for e in grid.experiments if e in record and not record[e].empty]
    if not frames:
        return pd.DataFrame()
    runs = pd.concat(frames, ignore_index=True)
    # as the mirror logs it: a run stored before the field was a run of record (run_identity)
    runs[STAGE_PATH] = runs[STAGE_PATH].fillna(RECORD_STAGE) if STAGE_PATH in runs else RECORD_STAGE
    tree = expr_to_filters(filters)
    shown = [passes(tree, lambda sec, name, r=r: _value(r, sec, name))
             for r in runs.to_dict("records")]  # fmt: skip
    runs = runs[pd.Series(shown, index=runs.index, dtype=bool)]
    runs = runs[runs[col.STATUS] == "ok"]
    keys = [k for k in grid.group_by if k in runs]
    rows = []
    for key, cell in runs.groupby(keys, dropna=False, sort=True) if keys and len(runs) else ():
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        for bar in grid.bars:
            column = STORE_NAMES[bar]
            per_seed = cell.groupby(col.SEED)[column].mean().dropna() if column in cell else []
            mean, lo, hi = mean_ci(list(per_seed))
            row.update({bar: mean, f"{bar} low": lo, f"{bar} high": hi})
        row["seeds"] = cell[col.SEED].nunique()
        rows.append(row)
    return pd.DataFrame(rows)


def ci_markdown(grid: Grid, cis: pd.DataFrame) -> str:
    """The CI table under a grid's panels (markdown)."""
    if cis.empty:
        return "*No finished runs of record of this grid in the store yet.*"
    keys = [k for k in grid.group_by if k in cis]
    header = [*keys, *(f"{bar}: mean [95% CI]" for bar in grid.bars), "seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in cis.to_dict("records"):
        cells = [str(row[k]) for k in keys]
        cells += [f"{_fmt(row[b])} [{_fmt(row[f'{b} low'])}, {_fmt(row[f'{b} high'])}]"
                  for b in grid.bars]  # fmt: skip
        lines.append("| " + " | ".join([*cells, str(row["seeds"])]) + " |")
    return "\n".join(lines)


def verdict_markdown(spec: ClaimAnalysis, store: Store) -> str:
    """The claim's rows of the report's verdict table and its verdict line, from the profile's
    verdicts/ (what REPORT.md shows); a line saying how to make them when there are none."""
    verdict = store.verdicts.get(spec.name)
    if verdict is None:
        return (f"*No verdict in {store.folder} yet: `make figures PROFILE={store.folder.name}` "
                "decides it.*")  # fmt: skip
    rows = top_table_markdown([{"analysis": spec, "verdict": verdict}])
    return "\n".join([*rows, "", verdict_line(verdict)])


def build_report(
    spec: ClaimAnalysis,
    entity: str,
    project: str,
    profile: str = RECORD_PROFILE,
    store: Store | None = None,
):
    """One claim's report: its verdict table, its figure from the report run, then a panel grid
    per Grid with the 95% CIs of its bars under it, from ``store`` (default: the profile's
    folder of the default store)."""
    store = store or read_store(profile_dir(default_results_dir(), profile))
    figure = wr.PanelGrid(
        runsets=[
            wr.Runset(
                entity=entity,
                project=project,
                name="report run",
                filters=f"Metric('Group') = '{REPORT_GROUP}' and Config('profile') = '{profile}'",
            )
        ],
        panels=[
            wr.MediaBrowser(
                title="figure", media_keys=[FIGURE_KEY.format(name=spec.name)], num_columns=1
            )
        ],
    )
    blocks: list = [
        wr.H2("Verdict (as in the report)"),
        wr.MarkdownBlock(text=verdict_markdown(spec, store)),
        wr.H2("Figure (from the latest report run)"),
        figure,
    ]
    for grid in grids_of(spec):
        runset, panels = _runset(grid, entity, project, profile), _panels(grid)
        blocks += [
            wr.H2(grid.title),
            wr.P(
                f"Grouped by {', '.join(grid.group_by)}; bars: mean over seeds, their 95% CI "
                "(Student t over seeds, as in the report) in the table below; curves: mean ± "
                "s.e. per epoch. The runs of record only, as in the report (stage record, the "
                "declared seeds)."
            ),
            wr.PanelGrid(runsets=[runset], panels=panels),
        ]
        if grid.bars:
            cis = group_cis(grid, store.record, runset.filters)
            blocks.append(wr.MarkdownBlock(text=ci_markdown(grid, cis)))
    return wr.Report(
        entity=entity,
        project=project,
        title=f"normexp {spec.claim} {spec.name} ({profile}): {spec.title}",
        description=f"Claim {spec.claim}: {spec.title}. Built by {__name__}.",
        blocks=blocks,
    )


def claim_dashboards(
    entity: str, project: str, profile: str = RECORD_PROFILE, store: Store | None = None
) -> list:
    """Every claim's report for one profile's runs, built offline (nothing is sent until
    ``save()``), from ``store`` (default: the profile's folder of the default store)."""
    store = store or read_store(profile_dir(default_results_dir(), profile))
    return [build_report(spec, entity, project, profile, store) for spec in load_analyses()]


def offline_run_dirs(results_dir: Path, profile: str | None = None) -> list[Path]:
    """Every offline W&B run under the results store, of one profile or of every profile:
    training runs (<profile>/runs/<experiment>/<run_key>/wandb/, live or replayed) and report
    runs (<profile>/wandb/)."""
    if profile is not None:
        folders = [profile_dir(results_dir, profile)]
    else:
        folders = [p for p in sorted(Path(results_dir).glob("*/"))
                   if p.name not in NOT_PROFILES and not p.name.startswith(".")]  # fmt: skip
    return sorted(run for folder in folders for run in offline_runs(folder))


def _online_problem() -> str | None:
    if not _logged_in():
        return "not logged in to W&B (run `wandb login` or set WANDB_API_KEY)"
    url = os.environ.get("WANDB_BASE_URL") or wandb.setup().settings.base_url
    return _unreachable(url)


def sync(
    results_dir: Path,
    profile: str,
    project: str = "normexp",
    entity: str | None = None,
    workers: int | None = None,
) -> int:
    """``make wandb-sync``: replay the profile's stored runs that lack a W&B run, then upload
    the profile's offline runs when online (``wandb sync`` skips those it uploaded before);
    offline, one line says where they are and how to upload them later."""
    folder = profile_dir(results_dir, profile)
    try:
        replayed, failed = replay(folder, workers)
    except KeyboardInterrupt:
        print(f"\nwandb-sync: interrupted; the runs replayed so far are kept, "
              f"`make wandb-sync PROFILE={profile}` replays the rest", file=sys.stderr)  # fmt: skip
        return 130
    for path, error in failed:
        print(f"wandb-sync: could not replay {path}: {error}", file=sys.stderr)
    runs = offline_run_dirs(results_dir, profile)
    problem = _online_problem()
    if problem:
        print(
            f"wandb-sync: {replayed} run(s) replayed; {len(runs)} offline W&B run(s) of profile "
            f"{profile} stay in {folder}/runs/*/*/wandb/ and {folder}/wandb/ ({problem}); "
            f"upload them later with `make wandb-sync PROFILE={profile}`"
        )
        return 1 if failed else 0
    if not runs:
        print(f"wandb-sync: no W&B runs of profile {profile} under {folder}")
        return 1 if failed else 0
    cmd = [sys.executable, "-m", "wandb", "sync", "--project", project]
    cmd += ["--entity", entity] if entity else []
    return subprocess.call([*cmd, *map(str, runs)]) or (1 if failed else 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m normexp.analysis.report.dashboards")
    parser.add_argument("--project", default="normexp")
    parser.add_argument("--entity", default=None, help="default: your W&B default entity")
    parser.add_argument(
        "--results-dir", type=Path, default=default_results_dir(),
        help="the store --sync replays and uploads (default: $NORMEXP_RESULTS_DIR or ./results)",
    )  # fmt: skip
    parser.add_argument(
        "--profile", default=RECORD_PROFILE,
        help=f"whose runs the reports show and --sync replays (default: {RECORD_PROFILE})",
    )  # fmt: skip
    parser.add_argument("--workers", type=int, default=None,
                        help="--sync: replaying processes (default: one per core)")  # fmt: skip
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--publish", action="store_true", help="save the reports to W&B")
    action.add_argument(
        "--sync", action="store_true",
        help="replay the profile's stored runs without a W&B run, upload them when online",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.sync:
        return sync(args.results_dir, args.profile, args.project, args.entity, args.workers)
    if not args.publish:
        for report in claim_dashboards(args.entity or "<entity>", args.project, args.profile):
            grids = [b for b in report.blocks if type(b).__name__ == "PanelGrid"]
            print(f"{report.title}: {sum(len(g.panels) for g in grids)} panels")
        print("built offline; publish with --publish (online)")
        return 0
    problem = _online_problem()
    if problem:
        print(f"dashboards: cannot reach W&B: {problem}; nothing sent", file=sys.stderr)
        return 1
    entity = args.entity or wandb.Api().default_entity
    for report in claim_dashboards(entity, args.project, args.profile):
        report.save()
        print(f"{report.title}: {report.url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
