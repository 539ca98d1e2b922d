"""W&B dashboards as code: one report per claim, built from what each claim declares (its
``dashboard``: which metrics to compare across which config fields; ``wandb-workspaces``).
Building needs no network; publishing does.

Every panel shows the runs the report averages, of one profile: its runs of record (the
``protocol.stage`` field the mirror logs; the LR selection's, the budget ladder's and the
convergence check's runs are left out) on the seeds the profile declares
(normexp/analysis/verdict/record.py). Runs that another experiment file added to the same store
folder cannot be told apart by their config; the report leaves them out from the sweep log.

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
    replayed, failed = replay(folder, workers)
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
