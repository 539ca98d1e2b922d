"""Profiles are partitions: each profile's runs, tables, figures, verdicts and report live in
results/<profile>/, a smoke sweep and its report leave the committed profile's files as they
are, collect refuses a run of another profile, and an old-layout store is migrated."""

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from normexp.analysis import figures
from normexp.errors import StoreError
from normexp.job import run_job
from normexp.sweep import SweepCallback
from normexp.tracking import migrate
from normexp.tracking.store import (
    RECORD_PROFILE,
    OldLayout,
    RunRecord,
    check_layout,
    profile_dir,
    record_of,
)
from normexp.validate import resolve_config
from tests.helpers import REPO

COMMITTED = profile_dir(REPO / "results", RECORD_PROFILE)
EXPERIMENT = "bn_position"  # 38 committed runs, cheap to collect; a smoke MLP run takes seconds


def snapshot(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``folder``."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def smoke_job(store: Path, cifar_data, *overrides: str):
    data_dir, extra = cifar_data
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return compose(
            "config",
            overrides=[
                f"experiment={EXPERIMENT}",
                "profile=smoke",
                "model=mlp",
                f"paths.data_dir={data_dir}",
                f"paths.results_dir={store}",
                "tracking.mode=disabled",
                "runtime.progress=false",
                *extra,
                *overrides,
            ],
        )


@pytest.fixture(scope="module")
def reported_store(tmp_path_factory) -> Path:
    """A store holding a copy of the committed quick runs of one experiment, reported once for
    the module (a report is seconds)."""
    root = tmp_path_factory.mktemp("reported") / "results"
    quick = profile_dir(root, RECORD_PROFILE)
    shutil.copytree(COMMITTED / "runs" / EXPERIMENT, quick / "runs" / EXPERIMENT)
    shutil.copy(COMMITTED / "sweeps.jsonl", quick / "sweeps.jsonl")
    figures.main(["--results-dir", str(root), "--wandb-mode", "disabled"])
    return root


@pytest.fixture
def store(reported_store, tmp_path) -> Path:
    """This test's own copy of the reported store."""
    return Path(shutil.copytree(reported_store, tmp_path / "results", symlinks=True))


def test_profile_dir_is_one_folder_per_profile_and_never_a_store_folder(tmp_path):
    assert profile_dir(tmp_path, "smoke") == tmp_path / "smoke"
    for name in ("runs", "bench", "wandb", "", ".hidden", "a/b"):
        with pytest.raises(ValueError):
            profile_dir(tmp_path, name)


def test_a_job_writes_its_run_into_its_profiles_folder(tmp_path, cifar_data):
    cfg = smoke_job(tmp_path / "results", cifar_data)
    assert run_job(cfg)["status"] == "ok"
    (run,) = (tmp_path / "results" / "smoke" / "runs" / EXPERIMENT).iterdir()
    assert json.loads((run / "config.json").read_text())["profile"] == "smoke"
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["smoke"]


def test_a_smoke_sweep_and_make_figures_leave_the_committed_profile_unchanged(
    store, cifar_data, capsys
):
    quick = profile_dir(store, RECORD_PROFILE)
    before = snapshot(quick)
    assert {"REPORT.md", "report.html", "provenance.json", "sweeps.jsonl"} <= set(before)
    # A smoke sweep of the same experiment (in process: its job, then the sweep's closing count).
    cfg = smoke_job(store, cifar_data)
    assert run_job(cfg)["status"] == "ok"
    callback = SweepCallback()
    callback.experiment, callback.profile = EXPERIMENT, "smoke"
    callback.records = [record_of(resolve_config(cfg))]
    callback.on_multirun_end(None)
    # `make figures` (the profile of record), then `make figures PROFILE=smoke`.
    figures.main(["--results-dir", str(store), "--wandb-mode", "disabled"])
    assert snapshot(quick) == before  # byte for byte, sittings included
    figures.main(["--results-dir", str(store), "--profile", "smoke", "--wandb-mode", "disabled"])
    assert snapshot(quick) == before
    smoke = profile_dir(store, "smoke")
    table = pd.read_parquet(smoke / "collected" / f"{EXPERIMENT}.parquet")
    assert len(table) == 1 and set(table["profile"]) == {"smoke"}
    quick_table = pd.read_parquet(quick / "collected" / f"{EXPERIMENT}.parquet")
    committed = [d for d in (quick / "runs" / EXPERIMENT).iterdir() if d.is_dir()]
    assert len(quick_table) == len(committed) and set(quick_table["profile"]) == {RECORD_PROFILE}
    (sitting,) = [json.loads(line) for line in (smoke / "sweeps.jsonl").read_text().splitlines()]
    assert sitting["profile"] == "smoke"
    assert "smoke" not in (quick / "sweeps.jsonl").read_text()
    provenance = json.loads((smoke / "provenance.json").read_text())
    assert provenance["profile"] == "smoke" and provenance["generated_from"] == "results/smoke"
    assert [s["profile"] for s in provenance["sittings"]] == ["smoke"]
    assert "profile smoke;" in (smoke / "REPORT.md").read_text()
    assert sorted(p.name for p in store.iterdir()) == [RECORD_PROFILE, "smoke"]


def test_collect_refuses_a_run_of_another_profile_in_the_folder(store, cifar_data, capsys):
    quick = profile_dir(store, RECORD_PROFILE)
    before = snapshot(quick / "collected")
    verdicts = snapshot(quick / "verdicts")
    assert run_job(smoke_job(store, cifar_data))["status"] == "ok"
    (run,) = (profile_dir(store, "smoke") / "runs" / EXPERIMENT).iterdir()
    shutil.copytree(run, quick / "runs" / EXPERIMENT / run.name)  # placed by hand, wrongly
    capsys.readouterr()
    figures.main(["--results-dir", str(store), "--wandb-mode", "disabled"])
    assert "1 damaged run(s) left out" in capsys.readouterr().out
    assert snapshot(quick / "collected") == before  # the quick table never saw it
    changed = {k for k, v in snapshot(quick / "verdicts").items() if verdicts[k] != v}
    assert changed <= {f"{EXPERIMENT}.json"}  # only the note naming the run left out
    report = (quick / "REPORT.md").read_text()
    assert f"`{run.name}` | config.json: profile 'smoke', in the folder of profile 'quick'" in (
        report
    )


def test_figures_refuses_an_unknown_profile(tmp_path, capsys):
    with pytest.raises(SystemExit):
        figures.main(["--results-dir", str(tmp_path), "--profile", "quikc"])
    assert "unknown profile 'quikc'" in capsys.readouterr().err
    assert not (tmp_path / "quikc").exists()


# --- the old layout ----------------------------------------------------------------------


def old_store(root: Path, profiles: tuple[str, ...]) -> dict[str, Path]:
    """An old-layout store: one run per profile in results/runs/, their sittings, a report."""
    runs = {}
    for i, profile in enumerate(profiles):
        record = RunRecord(root, "exp", f"k{i}")
        record.start({"seed": 0, "claim": {"name": "exp"}, "profile": profile})
        record.append_metrics({"epoch": 1})
        record.finish("ok", {"epochs": 1, "status": "ok", "run_key": record.key})
        (record.path / "wandb").mkdir()  # its offline W&B run goes with it
        runs[profile] = record.path
    lines = [json.dumps({"profile": p, "experiment": "exp"}) for p in profiles]
    (root / "sweeps.jsonl").write_text("".join(f"{line}\n" for line in lines))
    for folder in ("collected", "figures", "verdicts"):
        (root / folder).mkdir()
    (root / "REPORT.md").write_text("old report\n")
    return runs


def test_an_old_layout_store_is_refused_in_one_line(tmp_path, cifar_data, capsys):
    root = tmp_path / "results"
    old_store(root, ("quick",))
    with pytest.raises(OldLayout, match="normexp.tracking.migrate"):
        check_layout(root)
    with pytest.raises(SystemExit) as info:
        figures.main(["--results-dir", str(root), "--wandb-mode", "disabled"])
    assert info.value.code == 2
    line = capsys.readouterr().err.strip()
    assert "\n" not in line and "old store layout" in line and "normexp.tracking.migrate" in line
    with pytest.raises(StoreError, match="old store layout"):
        run_job(smoke_job(root, cifar_data))
    assert not (root / "smoke").exists()


def test_migrate_moves_each_run_into_its_profiles_folder(tmp_path, capsys):
    root = tmp_path / "results"
    runs = old_store(root, ("quick", "smoke"))
    files = {p: snapshot(path) for p, path in runs.items()}
    assert migrate.main(["--results-dir", str(root)]) == 0
    for profile, before in files.items():
        moved = root / profile / "runs" / "exp" / runs[profile].name
        assert snapshot(moved) == before  # not retrained: the same files
        assert (moved / "wandb").is_dir()
        (sitting,) = (root / profile / "sweeps.jsonl").read_text().splitlines()
        assert json.loads(sitting)["profile"] == profile
    assert not (root / "runs").exists() and not (root / "sweeps.jsonl").exists()
    # The old report mixed two profiles: left in place, named, for the user to delete.
    assert (root / "REPORT.md").exists() and not (root / "quick" / "REPORT.md").exists()
    assert "REPORT.md: not made from runs of one profile" in capsys.readouterr().err
    check_layout(root)  # the new layout: nothing refused
    assert migrate.main(["--results-dir", str(root)]) == 0  # nothing left to move


def test_migrate_of_a_one_profile_store_moves_its_report_too(tmp_path):
    root = tmp_path / "results"
    old_store(root, ("quick",))
    assert migrate.migrate(root) == ({"quick"}, [])
    assert (root / "quick" / "REPORT.md").read_text() == "old report\n"
    assert sorted(p.name for p in root.iterdir()) == ["quick"]


def test_migrate_leaves_a_run_it_cannot_place_and_says_so(tmp_path, capsys):
    root = tmp_path / "results"
    runs = old_store(root, ("quick",))
    stray = RunRecord(root, "exp", "nokey")
    stray.start({"seed": 0})  # no profile in its config
    (root / "runs" / "exp" / "empty").mkdir()  # a job killed before it started: not a run
    assert migrate.main(["--results-dir", str(root)]) == 1
    assert "nokey: no profile in a readable config.json, left in place" in capsys.readouterr().err
    assert sorted(p.name for p in (root / "runs" / "exp").iterdir()) == ["nokey"]
    assert (root / "quick" / "runs" / "exp" / runs["quick"].name).is_dir()


# --- the setting and the tracked files --------------------------------------------------------


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_the_makefile_defaults_to_the_profile_of_record():
    out = subprocess.run(["make", "-s", "help"], cwd=REPO, capture_output=True, text=True)
    assert f"PROFILE={RECORD_PROFILE} " in out.stdout


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="not a git checkout")
def test_smoke_output_is_not_tracked_and_the_record_is():
    def ignored(path: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO).returncode == 0

    assert ignored("results/smoke/runs/bn_position/k/config.json")
    assert ignored("results/smoke/REPORT.md")
    assert not ignored(f"results/{RECORD_PROFILE}/runs/bn_position/k/config.json")
    assert not ignored(f"results/{RECORD_PROFILE}/REPORT.md")
    assert ignored(f"results/{RECORD_PROFILE}/runs/bn_position/k/checkpoint.pt")
