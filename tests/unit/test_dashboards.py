"""The W&B dashboards build offline, and every key a panel names is one the runs log."""

import dataclasses
import json
import re
from types import SimpleNamespace

import pytest
import wandb_workspaces.reports.v2 as wr

from normexp.analysis.claims import claim_modules, load_analyses
from normexp.analysis.report import dashboards
from normexp.analysis.report.dashboards import FIGURE_KEY, claim_dashboards, main
from normexp.analysis.verdict.spec import Grid
from normexp.tracking.store import RECORD_PROFILE, profile_dir
from normexp.tracking.wandb_mirror import MEDIA_FILES, STEP_METRIC, wandb_key
from tests.helpers import REPO as ROOT

COMMITTED = profile_dir(ROOT / "results", RECORD_PROFILE)  # the committed reproduction
RUNS = COMMITTED / "runs"
SPECS = load_analyses()
FIGURE_KEYS = {FIGURE_KEY.format(name=m) for m in claim_modules()}


def _paths(node, prefix=""):
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, f"{prefix}{k}.")
    else:
        yield prefix.rstrip(".")


def logged(experiment: str) -> dict[str, set[str]]:
    """What the mirror logs for an experiment's committed runs: the W&B names of the store's
    per-epoch metrics (history) and summaries, and the config paths."""
    out = {"history": {STEP_METRIC}, "summary": set(), "config": {"run_key", "claim.name"}}
    folders = list((RUNS / experiment).glob("*/"))
    assert folders, f"no committed runs of {experiment}"
    for folder in folders:
        for line in (folder / "metrics.jsonl").read_text().splitlines():
            out["history"] |= {wandb_key(k) for k in json.loads(line)}
        summary = json.loads((folder / "summary.json").read_text())
        out["summary"] |= {wandb_key(k) for k in summary}
        out["config"] |= set(_paths(json.loads((folder / "config.json").read_text())))
        if (folder / MEDIA_FILES["media/samples"]).exists():
            out.setdefault("media", set()).add("media/samples")
    out["summary"] |= out["history"]  # W&B keeps the last logged value in the summary
    return out


def referenced(grid: wr.PanelGrid) -> dict[str, set[str]]:
    """Every key the grid's panels and run set name, by where W&B looks it up."""
    out = {"history": set(), "summary": set(), "config": set(), "media": set()}

    def add(metric, default: str) -> None:
        if metric is None:
            return
        if isinstance(metric, wr.Config):
            out["config"].add(metric.name)
        elif isinstance(metric, wr.SummaryMetric):
            out["summary"].add(metric.name)
        else:
            out[default].add(metric.name if isinstance(metric, wr.Metric) else metric)

    for panel in grid.panels:
        if isinstance(panel, wr.LinePlot):
            add(panel.x, "history")
            for y in panel.y:
                add(y, "history")
        elif isinstance(panel, wr.ScatterPlot):
            for m in (panel.x, panel.y, panel.z):
                add(m, "summary")
        elif isinstance(panel, wr.BarPlot):
            for m in panel.metrics:
                add(m, "history")
        elif isinstance(panel, wr.ParallelCoordinatesPlot):
            for column in panel.columns:
                add(column.metric, "summary")
        elif isinstance(panel, wr.MediaBrowser):
            out["media"] |= set(panel.media_keys)
        else:
            raise AssertionError(f"no key check for {type(panel).__name__}")
    for runset in grid.runsets:
        out["config"] |= {g.removeprefix("config.") for g in runset.groupby}
        out["config"] |= set(re.findall(r"Config\('([^']+)'\)", runset.filters))
    return out


def grids_of(report: wr.Report) -> list[wr.PanelGrid]:
    return [b for b in report.blocks if isinstance(b, wr.PanelGrid)]


@pytest.fixture(scope="module")
def store() -> dashboards.Store:
    """The committed profile of record's runs of record and verdicts, read once."""
    return dashboards.read_store(COMMITTED)


def test_one_report_per_claim_built_offline(store):
    reports = claim_dashboards("someone", "normexp", store=store)
    assert [s.name for s in SPECS] == claim_modules()  # every claim, in claim order
    assert len(reports) == len(SPECS)
    for spec, report in zip(SPECS, reports, strict=True):
        assert isinstance(report, wr.Report)
        assert spec.claim in report.title and report.entity == "someone"
        assert len(grids_of(report)) == 1 + len(dashboards.grids_of(spec))  # figure, then grids
        for grid in grids_of(report):
            for panel in grid.panels:
                panel._to_model()  # serializable; only the run sets need the server


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.claim)
def test_every_panel_names_a_key_the_runs_log(spec, store):
    report = dashboards.build_report(spec, "someone", "normexp", store=store)
    figure_grid, *grids = grids_of(report)
    assert referenced(figure_grid)["media"] <= FIGURE_KEYS
    for grid_spec, grid in zip(dashboards.grids_of(spec), grids, strict=True):
        if not all((RUNS / e).is_dir() for e in grid_spec.experiments):
            continue  # not run at the profile of record yet (its metrics are registered: built)
        names = referenced(grid)
        known = {"history": set(), "summary": set(), "config": set(), "media": set()}
        for experiment in grid_spec.experiments:
            for kind, keys in logged(experiment).items():
                known[kind] |= keys
        for kind, keys in names.items():
            unknown = keys - known[kind]
            assert not unknown, f"{spec.claim} '{grid_spec.title}': no run logs {kind} {unknown}"


def test_a_panel_on_an_unregistered_metric_is_refused_where_it_is_built(store):
    spec = SPECS[3]  # C4
    bad = Grid("typo", spec.dashboard[0].experiments, ("norm.name",), bars=("test/error",))
    assert dashboards.unregistered(bad) == ["test/error"]
    with pytest.raises(ValueError, match="'typo': test/error is no registered metric"):
        dashboards.build_report(dataclasses.replace(spec, dashboard=(bad,)), "e", "p", store=store)


def test_the_report_run_logs_each_figure_under_its_key(tmp_path, monkeypatch):
    """The report run (normexp.analysis.report) is where the per-claim figure panels look."""
    import wandb
    from test_wandb_mirror import parse_run

    from normexp.analysis.report import log_to_wandb, report_run_id
    from normexp.tracking.provenance import code_commit

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    figure = COMMITTED / "figures" / "bn_small_batch.png"
    secs = [
        {
            "analysis": SimpleNamespace(claim="C4", name="bn_small_batch"),
            "verdict": {"verdict": "supported", "effect": "x"},
            "figure": figure,
        }
    ]
    assert log_to_wandb(secs, tmp_path / "smoke", "offline") is None  # a profile's folder
    wandb.teardown()  # let W&B's service finish writing the run file
    (folder,) = dashboards.offline_run_dirs(tmp_path)  # where `--sync` looks
    run = parse_run(folder)
    assert run["run"].run_group == dashboards.REPORT_GROUP
    # one W&B run per profile and commit: the next `make figures` at this commit resumes it
    assert run["run"].run_id == report_run_id("smoke", code_commit())
    assert run["config"]["commit"] == code_commit()
    assert any(k.startswith(FIGURE_KEY.format(name="bn_small_batch")) for k in run["history"])


def test_sync_finds_training_and_report_runs_of_every_profile(tmp_path):
    for folder in (
        "quick/runs/c4/k1/wandb/offline-run-1-k1",
        "quick/wandb/offline-run-2-report",
        "smoke/runs/c4/k2/wandb/offline-run-3-k2",
    ):
        (tmp_path / folder).mkdir(parents=True)
    (tmp_path / "quick/runs/c4/k1/wandb/latest-run").mkdir()
    names = [p.name for p in dashboards.offline_run_dirs(tmp_path)]
    assert names == ["offline-run-1-k1", "offline-run-2-report", "offline-run-3-k2"]


def test_publish_refuses_in_one_line_when_not_logged_in(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("WANDB_API_KEY", "NETRC"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(wr.Report, "save", lambda self, **kw: pytest.fail("saved offline"))
    assert main(["--publish"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not logged in" in err


def test_publish_refuses_when_the_server_is_unreachable(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # loopback, nothing listens
    monkeypatch.setattr(wr.Report, "save", lambda self, **kw: pytest.fail("saved offline"))
    assert main(["--publish"]) == 1
    assert "127.0.0.1:9 unreachable" in capsys.readouterr().err


def test_the_report_run_has_one_id_per_profile_and_commit():
    from normexp.analysis.report import report_run_id

    ids = {report_run_id(p, c) for p in ("quick", "standard") for c in ("abc", "abc+dirty")}
    assert len(ids) == 4 and report_run_id("quick", "abc") == report_run_id("quick", "abc")
    assert all(i.startswith(("report-quick-", "report-standard-")) and len(i) < 64 for i in ids)


def test_every_claim_shows_every_experiment_that_decides_it():
    """Each architecture and task a verdict may rest on has a grid (C4: the ResNet's
    bn_small_batch_resnet; C3: the control; C11: its sources' deciding runs)."""
    for spec in SPECS:
        shown = {e for grid in dashboards.grids_of(spec) for e in grid.experiments}
        missing = set(spec.decided_from()) - shown
        assert not missing, f"{spec.claim}'s W&B report leaves out {missing}"
    c4 = next(s for s in SPECS if s.claim == "C4")
    assert "bn_small_batch_resnet" in c4.decided_from()  # the architecture that decided


def test_each_report_opens_with_the_claims_rows_of_the_reports_verdict_table(store):
    """The verdict table of each claim's W&B report: its rows of REPORT.md's, word for word."""
    report_md = (COMMITTED / "REPORT.md").read_text()
    for spec, report in zip(SPECS, claim_dashboards("e", "p", store=store), strict=True):
        heading, table = report.blocks[:2]
        assert isinstance(heading, wr.H2) and isinstance(table, wr.MarkdownBlock)
        rows = [line for line in table.text.splitlines() if line.startswith("| ")]
        assert len(rows) >= 2 and all(row in report_md for row in rows), spec.claim
        assert f"{spec.claim}" in rows[1] and "**Verdict: " in table.text
    empty = dashboards.Store(COMMITTED.parent / "nowhere", {}, {})
    text = dashboards.build_report(SPECS[3], "e", "p", store=empty).blocks[1].text
    assert "No verdict" in text and "make figures PROFILE=nowhere" in text


def test_bars_leave_the_interval_to_the_ci_table_under_them(store):
    """W&B draws ± s.e. or nothing on bars; the report's 95% CIs are in the table under them."""
    c4 = next(s for s in SPECS if s.claim == "C4")
    report = dashboards.build_report(c4, "e", "p", store=store)
    blocks = report.blocks
    for i, block in enumerate(blocks):
        if not isinstance(block, wr.PanelGrid) or not any(
            isinstance(p, wr.BarPlot) for p in block.panels
        ):
            continue
        assert all(p.groupby_rangefunc == "none" for p in block.panels
                   if isinstance(p, wr.BarPlot))  # fmt: skip
        table = blocks[i + 1]
        assert isinstance(table, wr.MarkdownBlock) and "mean [95% CI]" in table.text
    first = next(b for b in blocks if isinstance(b, wr.MarkdownBlock) and "mean [95%" in b.text)
    assert "| batch | 2 | " in first.text  # BN at batch 2, the cell C4 rests on


def test_every_run_set_shows_one_profile_only():
    """Profiles are partitions on W&B too: each run set filters on the profile asked for; the
    panels on training runs show its runs of record only (tests/unit/test_record_only.py
    evaluates such a filter on a store)."""
    for report in claim_dashboards("someone", "normexp", "standard"):
        assert "(standard)" in report.title
        figure, *panels = grids_of(report)
        for grid in [figure, *panels]:
            for runset in grid.runsets:
                assert "Config('profile') = 'standard'" in runset.filters
        for runset in (r for grid in panels for r in grid.runsets):
            assert "Config('protocol.stage') = 'record'" in runset.filters
            assert "Config('seed') in [0, 1, 2, 3, 4]" in runset.filters
    assert "Config('seed')" not in dashboards.record_filter("no-such-profile")  # none declared


def test_sync_looks_in_the_store_the_environment_names(tmp_path, monkeypatch):
    """PROFILE's runs only (profiles are partitions), in $NORMEXP_RESULTS_DIR's store."""
    store = tmp_path / "elsewhere"
    (store / "quick/runs/c4/k1/wandb/offline-run-1-k1").mkdir(parents=True)
    (store / "standard/runs/c4/k2/wandb/offline-run-2-k2").mkdir(parents=True)
    (store / "standard/wandb/offline-run-3-report").mkdir(parents=True)
    monkeypatch.setenv("NORMEXP_RESULTS_DIR", str(store))
    monkeypatch.setattr(dashboards, "_online_problem", lambda: None)
    calls = []
    monkeypatch.setattr(dashboards.subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    assert main(["--sync"]) == 0
    assert calls[0][-1] == str(store / "quick/runs/c4/k1/wandb/offline-run-1-k1")
    assert main(["--sync", "--profile", "standard"]) == 0
    assert calls[1][-2:] == [
        str(store / "standard/runs/c4/k2/wandb/offline-run-2-k2"),
        str(store / "standard/wandb/offline-run-3-report"),
    ]


def test_sync_offline_replays_and_says_in_one_line_where_the_runs_wait(tmp_path, monkeypatch,
                                                                        capsys):  # fmt: skip
    store = tmp_path / "results"
    (store / "quick/runs/c4/k1/wandb/offline-run-1-k1").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(tmp_path))
    for var in ("WANDB_API_KEY", "NETRC"):
        monkeypatch.delenv(var, raising=False)
    replayed = []
    monkeypatch.setattr(dashboards, "replay", lambda folder, workers: replayed.append(folder)
                        or (3, []))  # fmt: skip
    monkeypatch.setattr(dashboards.subprocess, "call", lambda cmd: pytest.fail("uploaded"))
    assert main(["--sync", "--results-dir", str(store)]) == 0
    assert replayed == [store / "quick"]
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "3 run(s) replayed; 1 offline W&B run(s)" in out
    assert f"{store / 'quick'}/runs/*/*/wandb/" in out and "not logged in" in out
    assert "make wandb-sync PROFILE=quick" in out


def test_a_claim_decided_per_architecture_shows_each_architecture_in_its_own_grid():
    c4 = next(s for s in SPECS if s.claim == "C4")
    by_experiments = {g.experiments: g.title for g in dashboards.grids_of(c4)}
    assert ("bn_small_batch_resnet",) in by_experiments  # the architecture that decides
    assert by_experiments[("bn_small_batch_resnet",)].endswith("(ResNet)")
    c2 = next(s for s in SPECS if s.claim == "C2")
    assert dashboards.grids_of(c2) == list(c2.dashboard)  # one architecture: as declared
