"""W&B dashboards as code: one report per claim, built from what each claim declares (its
``dashboard``: which metrics to compare across which config fields; ``wandb-workspaces``).
Building needs no network; publishing does.

Every panel shows the runs the report averages, of one profile: its runs of record (the
``protocol.stage`` field the mirror logs; the LR selection's, the budget ladder's and the
convergence check's runs are left out) on the seeds the profile declares
(normexp/analysis/verdict/record.py). Runs that another experiment file added to the same store
folder cannot be told apart by their config; the report leaves them out from the sweep log.

    python -m normexp.analysis.report.dashboards            # build offline, list the reports
    python -m normexp.analysis.report.dashboards --sync     # upload every offline run
    python -m normexp.analysis.report.dashboards --publish  # save the reports (online only)
"""

import argparse
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import wandb
import wandb_workspaces.reports.v2 as wr

from normexp import metrics
from normexp.analysis.claims import load_analyses
from normexp.analysis.verdict.record import declared_seeds
from normexp.analysis.verdict.spec import ClaimAnalysis, Grid
from normexp.tracking.store import RECORD_PROFILE, default_results_dir
from normexp.tracking.wandb_mirror import (
    RECORD_STAGE,
    STAGE_PATH,
    STEP_METRIC,
    _logged_in,
    _unreachable,
    wandb_key,
)

REPORT_GROUP = "report"  # the W&B group of the report run (normexp.analysis.report)
FIGURE_KEY = "figures/{name}"  # media key of a claim's figure in the report run
AGG = {"groupby_aggfunc": "mean", "groupby_rangefunc": "stderr"}  # mean ± s.e. over seeds


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
        wr.BarPlot(title=key, metrics=[wr.SummaryMetric(key)], orientation="v", **AGG)
        for key in grid.bars
    ]
    panels += [wr.LinePlot(title=key, x=STEP_METRIC, y=[key], **AGG) for key in grid.curves]
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
    """A claim's panel grids; decided per architecture, each grid on its CNN experiment again
    on the ResNet's store folder, as a grid of its own (one architecture per panel: the verdict
    of record may be either's)."""
    arch = spec.per_architecture
    grids = list(spec.dashboard)
    if arch is None:
        return grids
    return grids + [
        dataclasses.replace(g, title=f"{g.title} (ResNet)", experiments=(arch.resnet,))
        for g in spec.dashboard
        if arch.experiment in g.experiments
    ]


def build_report(spec: ClaimAnalysis, entity: str, project: str, profile: str = RECORD_PROFILE):
    """One claim's report: its figure from the report run, then a panel grid per Grid."""
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
    blocks: list = [wr.H2("Figure (from the latest report run)"), figure]
    for grid in grids_of(spec):
        blocks += [
            wr.H2(grid.title),
            wr.P(
                f"Grouped by {', '.join(grid.group_by)}; bars: mean ± s.e. over seeds. The runs "
                "of record only, as in the report (stage record, the declared seeds)."
            ),
            wr.PanelGrid(runsets=[_runset(grid, entity, project, profile)], panels=_panels(grid)),
        ]
    return wr.Report(
        entity=entity,
        project=project,
        title=f"normexp {spec.claim} {spec.name} ({profile}): {spec.title}",
        description=f"Claim {spec.claim}: {spec.title}. Built by {__name__}.",
        blocks=blocks,
    )


def claim_dashboards(entity: str, project: str, profile: str = RECORD_PROFILE) -> list:
    """Every claim's report for one profile's runs, built offline (nothing is sent until
    ``save()``)."""
    return [build_report(spec, entity, project, profile) for spec in load_analyses()]


def offline_run_dirs(results_dir: Path) -> list[Path]:
    """Every offline W&B run under the results store, of every profile: training runs
    (<profile>/runs/<experiment>/<run_key>/wandb/) and report runs (<profile>/wandb/)."""
    found = set(results_dir.glob("*/runs/*/*/wandb/offline-run-*"))
    found |= set(results_dir.glob("*/wandb/offline-run-*"))
    return sorted(p for p in found if p.is_dir())


def _online_problem() -> str | None:
    if not _logged_in():
        return "not logged in to W&B (run `wandb login` or set WANDB_API_KEY)"
    url = os.environ.get("WANDB_BASE_URL") or wandb.setup().settings.base_url
    return _unreachable(url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m normexp.analysis.report.dashboards")
    parser.add_argument("--project", default="normexp")
    parser.add_argument("--entity", default=None, help="default: your W&B default entity")
    parser.add_argument(
        "--results-dir", type=Path, default=default_results_dir(),
        help="the store whose offline runs --sync uploads (default: $NORMEXP_RESULTS_DIR or "
        "./results)",
    )  # fmt: skip
    parser.add_argument("--profile", default=RECORD_PROFILE, help="whose runs the reports show")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--publish", action="store_true", help="save the reports to W&B")
    action.add_argument("--sync", action="store_true", help="upload every offline run")
    args = parser.parse_args(argv)
    if not (args.publish or args.sync):
        for report in claim_dashboards(args.entity or "<entity>", args.project, args.profile):
            grids = [b for b in report.blocks if type(b).__name__ == "PanelGrid"]
            print(f"{report.title}: {sum(len(g.panels) for g in grids)} panels")
        print("built offline; publish with --publish (online)")
        return 0
    problem = _online_problem()
    if problem:
        print(f"dashboards: cannot reach W&B: {problem}; nothing sent", file=sys.stderr)
        return 1
    if args.sync:
        runs = offline_run_dirs(args.results_dir)
        if not runs:
            print(f"dashboards: no offline runs under {args.results_dir}")
            return 0
        cmd = [sys.executable, "-m", "wandb", "sync", "--project", args.project]
        cmd += ["--entity", args.entity] if args.entity else []
        return subprocess.call([*cmd, *map(str, runs)])
    entity = args.entity or wandb.Api().default_entity
    for report in claim_dashboards(entity, args.project, args.profile):
        report.save()
        print(f"{report.title}: {report.url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
