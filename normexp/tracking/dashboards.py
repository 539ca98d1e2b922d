"""W&B dashboards as code: one report per claim, built from a spec of which metrics to compare
across which config fields (``wandb-workspaces``). Building needs no network; publishing does.

    python -m normexp.tracking.dashboards             # build offline, list reports and panels
    python -m normexp.tracking.dashboards --sync      # upload every offline run (training+report)
    python -m normexp.tracking.dashboards --publish   # save the reports to W&B (online only)
"""

import argparse
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from normexp.tracking.store import RECORD_PROFILE
from normexp.tracking.wandb_mirror import MEDIA_FILES, STEP_METRIC, _logged_in, _unreachable

REPORT_GROUP = "report"  # the W&B group of the report run (normexp.analysis.report)
FIGURE_KEY = "figures/{name}"  # media key of a claim's figure in the report run
SAMPLES_KEY = next(iter(MEDIA_FILES))
AGG = {"groupby_aggfunc": "mean", "groupby_rangefunc": "stderr"}  # mean ± s.e. over seeds


@dataclass(frozen=True)
class Grid:
    """Runs of some experiments, grouped by config fields; the panels that compare the groups.
    Metric names are W&B names (``test/err``); config fields are dotted paths (``norm.name``)."""

    title: str
    experiments: tuple[str, ...]
    group_by: tuple[str, ...]
    bars: tuple[str, ...] = ()  # summary metrics, one bar chart each (mean ± s.e. per group)
    curves: tuple[str, ...] = ()  # per-epoch metrics, one line plot each against the epoch
    scatter: tuple[str, str] | None = None  # (config field, summary metric): one point per run
    parallel: tuple[str, ...] = ()  # config fields then summary metrics
    media: tuple[str, ...] = ()
    where: str = ""  # an extra filter, wandb-workspaces syntax
    log_x: bool = False


@dataclass(frozen=True)
class ClaimDashboard:
    claim: str
    name: str  # the analysis name: its figure is FIGURE_KEY in the report run
    title: str
    grids: tuple[Grid, ...] = field(default_factory=tuple)


SPECS = (
    ClaimDashboard("C1", "norm_sets", "The norms differ only in the set they pool over"),
    ClaimDashboard(
        "C2",
        "weight_side",
        "Weight-side normalization: WN, L1 and L2",
        (
            Grid(
                "Arms",
                ("weight_side",),
                ("arm.name",),
                bars=("test/acc", "weights/near_zero_frac", "weights/l1_norm", "weights/l2_norm"),
                curves=("val/acc", "train/loss"),
            ),
        ),
    ),
    ClaimDashboard(
        "C3",
        "bn_position",
        "BN before or after the activation",
        (
            Grid(
                "Pre vs post per model and activation",
                ("bn_position",),
                ("model.name", "model.activation", "norm.position"),
                bars=("test/acc",),
                curves=("val/acc", "train/loss"),
                parallel=("model.name", "model.activation", "norm.position", "test/acc"),
            ),
        ),
    ),
    ClaimDashboard(
        "C4",
        "bn_small_batch",
        "BN at small batch sizes; GN for tiny batches",
        (
            Grid(
                "Test error vs batch size, per norm (plain protocol)",
                ("bn_small_batch",),
                ("norm.name", "train.batch_size"),
                bars=("test/err",),
                curves=("val/acc",),
                scatter=("train.batch_size", "test/err"),
                parallel=("norm.name", "train.batch_size", "test/err"),
                log_x=True,
            ),
            Grid(
                "Simulated devices (GN paper protocol)",
                ("bn_small_batch_devices",),
                ("norm.name", "devices.per_device"),
                bars=("test/err",),
                scatter=("devices.per_device", "test/err"),
                log_x=True,
            ),
            Grid(
                "Remedies",
                ("bn_small_batch_remedies",),
                ("claim.name", "norm.name", "train.batch_size"),
                bars=("test/err",),
                curves=("val/acc",),
            ),
        ),
    ),
    ClaimDashboard(
        "C5",
        "bn_train_test",
        "BN statistics: batch vs running vs precise",
        (
            Grid(
                "BN runs: three kinds of statistics per batch size",
                ("bn_small_batch",),
                ("train.batch_size",),
                bars=("test/acc", "test/acc_batch_stats", "test/acc_precise_bn"),
                parallel=(
                    "train.batch_size",
                    "test/acc",
                    "test/acc_batch_stats",
                    "test/acc_precise_bn",
                ),
                where="Config('norm.name') = 'batch'",
            ),
        ),
    ),
    ClaimDashboard(
        "C6",
        "bn_generation",
        "BN vs IN in image generation",
        (
            Grid(
                "PSNR per norm and batch size; sample grids",
                ("bn_generation",),
                ("norm.name", "train.batch_size"),
                bars=("test/psnr",),
                curves=("val/psnr", "train/loss"),
                media=(SAMPLES_KEY,),
            ),
        ),
    ),
    ClaimDashboard(
        "C7",
        "rnn_norm",
        "Norms in an LSTM language model",
        (
            Grid(
                "Bits per character per norm",
                ("rnn_norm",),
                ("norm.name",),
                bars=("test/bpc", "test/bpc_long"),
                curves=("val/bpc", "train/bpc"),
            ),
        ),
    ),
    ClaimDashboard(
        "C8",
        "ln_in_cnn",
        "LN and IN in a CNN at batch >= 32",
        (
            Grid(
                "Test error per norm at batch >= 32",
                ("bn_small_batch",),
                ("norm.name", "train.batch_size"),
                bars=("test/err",),
                scatter=("train.batch_size", "test/err"),
                where="Config('train.batch_size') >= 32",
                log_x=True,
            ),
        ),
    ),
    ClaimDashboard(
        "C9",
        "not_ics",
        "BN's benefit and internal covariate shift",
        (
            Grid(
                "ICS and accuracy: none vs BN vs noisy BN",
                ("not_ics",),
                ("norm.name",),
                bars=("test/acc",),
                curves=("probe/ics_l2", "probe/ics_cos", "val/acc"),
            ),
        ),
    ),
    ClaimDashboard(
        "C10",
        "smoothness",
        "BN and the smoothness of the loss landscape",
        (
            Grid(
                "Landscape probes per norm and learning rate",
                ("smoothness",),
                ("norm.name", "optim.lr_per_128"),
                curves=("probe/loss_range", "probe/grad_predictiveness", "probe/beta_smoothness"),
                scatter=("optim.lr_per_128", "probe/beta_smoothness_mean"),
                parallel=("norm.name", "optim.lr_per_128", "probe/beta_smoothness_mean"),
                log_x=True,
            ),
        ),
    ),
    ClaimDashboard("C11", "recommendations", "Which norm for which scenario"),
)


def _runset(grid: Grid, entity: str, project: str, profile: str):
    import wandb_workspaces.reports.v2 as wr

    names = ", ".join(repr(e) for e in grid.experiments)
    # Profiles are partitions: a dashboard never mixes runs of two profiles.
    filters = f"Config('profile') = '{profile}' and Config('claim.name') in [{names}]"
    if grid.where:
        filters += f" and {grid.where}"
    return wr.Runset(
        entity=entity,
        project=project,
        name=grid.title,
        filters=filters,
        groupby=[f"config.{path}" for path in grid.group_by],
    )


def _panels(grid: Grid) -> list:
    import wandb_workspaces.reports.v2 as wr

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


def build_report(spec: ClaimDashboard, entity: str, project: str, profile: str = RECORD_PROFILE):
    """One claim's report: its figure from the report run, then a panel grid per Grid."""
    import wandb_workspaces.reports.v2 as wr

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
    for grid in spec.grids:
        blocks += [
            wr.H2(grid.title),
            wr.P(f"Grouped by {', '.join(grid.group_by)}; bars: mean ± s.e. over seeds."),
            wr.PanelGrid(runsets=[_runset(grid, entity, project, profile)], panels=_panels(grid)),
        ]
    return wr.Report(
        entity=entity,
        project=project,
        title=f"normexp {spec.claim} {spec.name} ({profile}): {spec.title}",
        description=f"Claim {spec.claim}: {spec.title}. Built by normexp.tracking.dashboards.",
        blocks=blocks,
    )


def claim_dashboards(entity: str, project: str, profile: str = RECORD_PROFILE) -> list:
    """Every claim's report for one profile's runs, built offline (nothing is sent until
    ``save()``)."""
    return [build_report(spec, entity, project, profile) for spec in SPECS]


def offline_run_dirs(results_dir: Path) -> list[Path]:
    """Every offline W&B run under the results store, of every profile: training runs
    (<profile>/runs/<experiment>/<run_key>/wandb/) and report runs (<profile>/wandb/)."""
    found = set(results_dir.glob("*/runs/*/*/wandb/offline-run-*"))
    found |= set(results_dir.glob("*/wandb/offline-run-*"))
    return sorted(p for p in found if p.is_dir())


def _online_problem() -> str | None:
    import os

    import wandb

    if not _logged_in():
        return "not logged in to W&B (run `wandb login` or set WANDB_API_KEY)"
    url = os.environ.get("WANDB_BASE_URL") or wandb.setup().settings.base_url
    return _unreachable(url)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m normexp.tracking.dashboards")
    parser.add_argument("--project", default="normexp")
    parser.add_argument("--entity", default=None, help="default: your W&B default entity")
    parser.add_argument("--results-dir", type=Path, default=Path("results"))
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
    import wandb

    entity = args.entity or wandb.Api().default_entity
    for report in claim_dashboards(entity, args.project, args.profile):
        report.save()
        print(f"{report.title}: {report.url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
