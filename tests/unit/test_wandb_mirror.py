"""The W&B mirror: mode resolution, and that no failure of W&B ever reaches the run."""

import json
from pathlib import Path

import pytest
import wandb
import yaml

from normexp.catalogue import experiment_names
from normexp.errors import ConfigError
from normexp.tracking import wandb_mirror
from normexp.tracking.wandb_mirror import (
    FACTORS,
    MEDIA_FILES,
    NAME_EXTRAS,
    WandbMirror,
    resolve_mode,
    run_identity,
    wandb_key,
)
from normexp.tracking.wandb_replay import read_records
from tests.helpers import REPO as ROOT


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    """No W&B login or mode from the machine running the tests; W&B files under tmp; no online
    failure remembered from an earlier test."""
    monkeypatch.setattr(wandb_mirror, "_online_failure", None)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    for var in ("WANDB_API_KEY", "WANDB_MODE", "NETRC"):
        monkeypatch.delenv(var, raising=False)
    for var in ("WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / var.lower()))
    monkeypatch.setenv("WANDB_SILENT", "true")
    return monkeypatch


def mirror(run_dir, mode: str = "offline") -> WandbMirror:
    return WandbMirror(
        mode=mode,
        project="normexp-test",
        group="exp",
        name="k1",
        tags=["C4", "norm:batch"],
        config={"seed": 0, "norm": {"name": "batch"}},
        run_dir=run_dir,
    )


# --- resolve_mode ----------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["offline", "online", "disabled"])
def test_explicit_modes_pass_through(clean_env, mode):
    clean_env.setenv("WANDB_MODE", "online" if mode != "online" else "offline")
    clean_env.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode(mode) == mode


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ("offline", "offline"),
        ("online", "online"),
        ("disabled", "disabled"),
        ("dryrun", "offline"),
        ("run", "online"),
    ],
)
def test_auto_honours_wandb_mode(clean_env, env, expected):
    clean_env.setenv("WANDB_MODE", env)
    assert resolve_mode("auto") == expected


def test_auto_without_login_is_offline(clean_env):
    assert resolve_mode("auto") == "offline"


def test_auto_with_api_key_is_online(clean_env):
    clean_env.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_mode("auto") == "online"


def test_auto_with_wandb_netrc_entry_is_online(clean_env, tmp_path):
    netrc = tmp_path / "home" / ".netrc"
    netrc.write_text("machine api.wandb.ai\n  login user\n  password " + "x" * 40 + "\n")
    netrc.chmod(0o600)
    assert resolve_mode("auto") == "online"


def test_auto_with_other_netrc_entries_is_offline(clean_env, tmp_path):
    netrc = tmp_path / "home" / ".netrc"
    netrc.write_text("machine example.com\n  login user\n  password secret\n")
    netrc.chmod(0o600)
    assert resolve_mode("auto") == "offline"


def test_bad_mode_is_refused(clean_env):
    with pytest.raises(ConfigError) as info:
        resolve_mode("cloud")
    assert info.value.field == "tracking.mode"
    assert all(m in str(info.value) for m in ("auto", "offline", "online", "disabled"))
    with pytest.raises(ConfigError):
        WandbMirror("cloud", "p", "g", "n", [], {}, run_dir=None)


# --- WandbMirror -----------------------------------------------------------------------


def test_failed_init_is_recorded_and_later_calls_do_nothing(clean_env, tmp_path, caplog):
    calls = []

    def broken_init(**kwargs):
        calls.append(kwargs)
        raise RuntimeError("no network\nsecond line of detail")

    clean_env.setattr(wandb, "init", broken_init)
    clean_env.setattr(wandb_mirror, "_unreachable", lambda url: None)
    m = mirror(tmp_path, mode="online")
    # online failed, so the offline fallback was tried (and failed too)
    assert [c["mode"] for c in calls] == ["online", "offline"]
    assert calls[0]["group"] == "exp"
    assert m.run is None
    assert m.error == "wandb init failed: RuntimeError: no network"
    assert "no network" in caplog.text
    m.log({"acc": 0.5})
    m.log_images({"grid": tmp_path / "missing.png"})
    m.finish({"acc": 0.5}, exit_code=1)
    assert m.error == "wandb init failed: RuntimeError: no network"  # the first failure kept
    assert m.run_path is None


class FlakyRun:
    """A W&B run whose log fails; records what was finished."""

    def __init__(self):
        self.summary = {}
        self.finished = []
        self.dir = "/somewhere"

    def define_metric(self, *args, **kwargs):
        pass

    def log(self, metrics, step=None):
        raise ValueError("log broke")

    def finish(self, exit_code=0):
        self.finished.append(exit_code)


def test_failed_log_is_recorded_and_the_run_still_finished(clean_env, tmp_path):
    run = FlakyRun()
    clean_env.setattr(wandb, "init", lambda **kwargs: run)
    m = mirror(tmp_path)
    assert m.error is None and m.run_path == "/somewhere"
    m.log({"acc": 0.5})
    assert m.error == "wandb log failed: ValueError: log broke"
    m.finish({"test_acc": 0.5, "status": "failed"}, exit_code=1)
    assert run.finished == [1]
    assert run.summary == {"test/acc": 0.5, "run/status": "failed"}  # under W&B names
    assert m.run is None
    m.finish({}, exit_code=0)  # a second finish is a no-op
    assert run.finished == [1]


def test_disabled_creates_no_files(clean_env, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()

    def must_not_init(**kwargs):
        raise AssertionError("wandb.init called in disabled mode")

    clean_env.setattr(wandb, "init", must_not_init)
    m = mirror(run_dir, mode="disabled")
    assert m.mode == "disabled" and m.run is None and m.error is None
    m.log({"acc": 0.5})
    m.finish({"acc": 0.5}, exit_code=0)
    assert list(run_dir.iterdir()) == []
    assert m.error is None


def test_offline_run_is_written_under_the_run_dir(clean_env, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    m = mirror(run_dir, mode="offline")
    assert m.error is None, m.error
    assert m.run is not None
    m.log({"epoch": 1, "val_acc": 0.25})
    m.finish({"test_acc": 0.3}, exit_code=0)
    assert m.error is None, m.error
    assert m.run is None
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and runs[0].is_dir()
    assert list(runs[0].glob("*.wandb"))  # the run's log, for a later `wandb sync`


# --- names, ids, tags ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("store", "expected"),
    [
        ("epoch", "epoch"),
        ("train_loss", "train/loss"),
        ("train_bpc", "train/bpc"),
        ("lr", "train/lr"),
        ("val_acc", "val/acc"),
        ("valid_bpc_long", "val/bpc_long"),
        ("best_val_acc", "val/best_acc"),
        ("best_valid_bpc", "val/best_bpc"),
        ("test_acc_batch_stats", "test/acc_batch_stats"),
        ("test_err", "test/err"),
        ("probe_ics_l2", "probe/ics_l2"),
        ("weight_near_zero_frac", "weights/near_zero_frac"),
        ("images_per_s", "perf/images_per_s"),
        ("epoch_time_s", "perf/epoch_time_s"),
        ("n_params", "run/n_params"),
    ],
)
def test_store_metrics_get_namespaced_w_and_b_names(store, expected):
    assert wandb_key(store) == expected


def config_for(**overrides) -> dict:
    runs = ROOT / "results" / "quick" / "runs" / "bn_small_batch"
    config = json.loads(next(runs.glob("*/config.json")).read_text())
    config["paths"] = {"data_dir": "/home/me/data", "results_dir": "/home/me/results"}
    for path, value in overrides.items():
        node = config
        *parents, last = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return config


def test_identity_is_readable_and_keyed_by_the_run_key():
    config = config_for(**{"norm.name": "group", "train.batch_size": 4, "seed": 1})
    ident = run_identity(config, "0123456789abcdef")
    assert ident["run_id"] == "0123456789abcdef"
    assert ident["name"] == "bn_small_batch/group-pre-b4-s1"
    assert ident["group"] == "bn_small_batch"
    assert {"C4", "bn_small_batch", "norm:group", "position:pre", "batch:4", "seed:1"} <= set(
        ident["tags"]
    )
    assert ident["config"]["run_key"] == "0123456789abcdef"
    # the store leaves the machine's paths out; so does W&B
    assert ident["config"]["paths"] == {"data_dir": None, "results_dir": None}
    assert config["paths"]["results_dir"] == "/home/me/results"  # the caller's config untouched


def test_the_stage_is_a_tag_and_a_config_field_and_names_the_run():
    """Users (and the dashboards) filter the runs of record on it; a run stored before the
    field existed was a run of record."""
    stages = {  # stage: (seed, epochs, name)
        "record": (0, 4, "bn_small_batch/batch-pre-b32-s0"),
        "select": (100, 4, "bn_small_batch/batch-pre-b32-s100-select-lr2x"),
        "ladder": (0, 2, "bn_small_batch/batch-pre-b32-s0-ladder-e2"),
        "check": (0, 8, "bn_small_batch/batch-pre-b32-s0-check-e8"),
    }
    for stage, (seed, epochs, name) in stages.items():
        config = config_for(**{"protocol.stage": stage, "norm.name": "batch", "seed": seed,
                               "train.batch_size": 32, "train.epochs": epochs,
                               "optim.lr_mult": 2.0})  # fmt: skip
        ident = run_identity(config, "k")
        assert f"stage:{stage}" in ident["tags"] and ident["name"] == name
        assert ident["config"]["protocol"]["stage"] == stage
    older = config_for()
    del older["protocol"]["stage"]
    ident = run_identity(older, "k")
    assert "stage:record" in ident["tags"] and ident["config"]["protocol"]["stage"] == "record"
    assert "stage" not in older["protocol"]  # the caller's config untouched


def _reading(node, prefix: str, path: str = "") -> list[str]:
    """The paths of ``node`` whose value reads ``${<prefix>.…}``."""
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in _reading(v, prefix, f"{path}.{k}".lstrip("."))]
    return [path] if isinstance(node, str) and node.startswith("${" + prefix + ".") else []


def swept_paths(experiment_file: Path) -> list[str]:
    """The config paths an experiment sweeps (a group choice sweeps its ``name``; ``devices``
    its per-device batch; ``cell``, {norm, batch} per value, the paths that read it)."""
    doc = yaml.safe_load(experiment_file.read_text())
    params = doc.get("hydra", {}).get("sweeper", {}).get("params", {})
    groups = {"norm": "norm.name", "model": "model.name", "arm": "arm.name"}
    paths = []
    for p in params:
        if p == "cell":
            paths += _reading({k: v for k, v in doc.items() if k != "hydra"}, p)
        else:
            paths.append(groups.get(p, "devices.per_device" if p == "devices" else p))
    return paths


EXPERIMENT_FILES = [ROOT / "experiments" / f"{name}.yaml" for name in experiment_names()]


def test_the_factor_check_reads_every_experiment_file():
    """The files the next test checks are experiments/*.yaml, each sweeping something."""
    assert len(EXPERIMENT_FILES) >= 20 and all(f.is_file() for f in EXPERIMENT_FILES)
    assert all(swept_paths(f) for f in EXPERIMENT_FILES)


@pytest.mark.parametrize("experiment_file", EXPERIMENT_FILES, ids=lambda p: p.stem)
def test_every_swept_factor_is_a_tag_and_part_of_the_name(experiment_file):
    factor_paths = {path for _, path in FACTORS}
    core = {"norm.name", "norm.position", "train.batch_size", "seed"}
    claim = yaml.safe_load(experiment_file.read_text()).get("claim", {}).get("name")
    for path in swept_paths(experiment_file):
        assert path in factor_paths, f"{experiment_file.stem} sweeps {path}: not tagged"
        if path not in core and claim:
            extras = [p for p, _ in NAME_EXTRAS.get(claim, ())]
            assert path in extras, f"{claim} sweeps {path}: runs differ by it, names do not"


def test_names_tell_the_committed_runs_apart():
    for experiment in sorted((ROOT / "results" / "quick" / "runs").iterdir()):
        names = {}
        for config_file in experiment.glob("*/config.json"):
            config = json.loads(config_file.read_text())
            name = run_identity(config, config_file.parent.name)["name"]
            key = names.setdefault(name, config_file.parent.name)
            # same name only for the same cell: a run key differs by nothing else then
            assert key == config_file.parent.name or _same_cell(experiment, key, config), name


def _same_cell(experiment: Path, key: str, config: dict) -> bool:
    other = json.loads((experiment / key / "config.json").read_text())
    return {k: v for k, v in other.items() if k != "profile"} == {
        k: v for k, v in config.items() if k != "profile"
    }


# --- the offline run folder, as `wandb sync` reads it ----------------------------------


def parse_run(run_dir: Path) -> dict:
    """What ``wandb sync`` would upload from an offline run folder: its run record (id, name,
    group, tags), config values, history rows, summary, metric definitions, exit code and
    console output. ``history``/``summary``: the key sets; ``rows``/``summary_values``: values."""
    (run_file,) = run_dir.glob("run-*.wandb")
    out = {"history": set(), "summary": set(), "metrics": {}, "run": None, "config": {},
           "rows": [], "summary_values": {}, "exit_code": None, "output": ""}  # fmt: skip

    def key(item) -> str:
        return item.key or "/".join(item.nested_key)

    for record in read_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["run"] = record.run
            out["config"] |= {i.key: json.loads(i.value_json) for i in record.run.config.update}
        elif kind == "config":
            out["config"] |= {i.key: json.loads(i.value_json) for i in record.config.update}
        elif kind == "history":
            row = {key(i): json.loads(i.value_json) for i in record.history.item}
            out["rows"].append(row)
            out["history"] |= set(row)
        elif kind == "summary":
            values = {key(i): json.loads(i.value_json) for i in record.summary.update}
            out["summary_values"] |= values
            out["summary"] |= set(values)
        elif kind == "metric":
            metric = record.metric
            out["metrics"][metric.glob_name or metric.name] = metric.step_metric
        elif kind == "exit":
            out["exit_code"] = record.exit.exit_code
        elif kind == "output_raw":
            out["output"] += record.output_raw.line
    return out


def test_offline_run_has_the_id_names_metrics_and_media(clean_env, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    grid = next((ROOT / "results" / "quick" / "runs" / "bn_generation").glob("*/samples.png"))
    (run_dir / MEDIA_FILES["media/samples"]).write_bytes(grid.read_bytes())
    config = config_for(**{"norm.name": "batch", "train.batch_size": 2, "seed": 0})
    for epoch in (1, 2):  # the second mirror is a resumed run: same id
        ident = run_identity(config, "abc123")
        m = WandbMirror("offline", "normexp-test", run_dir=run_dir, **ident)
        assert m.error is None, m.error
        print(f"a line the job printed in epoch {epoch}")  # W&B's Logs tab shows it
        m.log({"epoch": epoch, "train_loss": 1.0, "val_acc": 0.5, "lr": 0.1, "images_per_s": 9.0})
        m.finish({"test_acc": 0.5, "test_err": 0.5, "status": "ok"}, 0, run_dir=run_dir)
        assert m.error is None, m.error
    wandb.teardown()  # W&B's service writes the run files in the background: let it finish
    folders = sorted((run_dir / "wandb").glob("offline-run-*"))
    # the same id in both folders (wandb adds "-1" when two start in the same second)
    assert len(folders) == 2 and all("-abc123" in f.name for f in folders)
    run = parse_run(folders[-1])
    assert run["run"].run_id == "abc123"
    assert run["run"].display_name == "bn_small_batch/batch-pre-b2-s0"
    assert run["run"].run_group == "bn_small_batch"
    assert {"C4", "norm:batch", "batch:2", "seed:0"} <= set(run["run"].tags)
    config_keys = {item.key for item in run["run"].config.update}
    assert {"norm", "train", "run_key", "paths"} <= config_keys
    assert {"epoch", "train/loss", "train/lr", "val/acc", "perf/images_per_s"} <= run["history"]
    assert not {"train_loss", "val_acc"} & run["history"]  # no flat store names
    assert any(k.startswith("media/samples") for k in run["history"])  # the sample grid
    assert list((folders[-1] / "files" / "media" / "images").rglob("samples_*.png"))
    assert {"test/acc", "test/err", "run/status"} <= run["summary"]
    assert run["metrics"]["train/*"] == "epoch" and run["metrics"]["val/*"] == "epoch"
    assert "a line the job printed in epoch 2" in run["output"]  # console captured


# --- online without a network ----------------------------------------------------------


def test_unreachable_server_goes_offline_once_and_quickly(clean_env, tmp_path, caplog):
    """The discard port on loopback: nothing listens, so the probe fails at once."""
    clean_env.setenv("WANDB_API_KEY", "x" * 40)
    clean_env.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    probes = []
    real_probe = wandb_mirror._unreachable
    clean_env.setattr(
        wandb_mirror, "_unreachable", lambda url: probes.append(url) or real_probe(url)
    )
    mirrors = []
    for i in range(2):
        run_dir = tmp_path / f"run{i}"
        run_dir.mkdir()
        m = mirror(run_dir, mode="online")
        m.log({"epoch": 1, "val_acc": 0.5})
        m.finish({"test_acc": 0.5}, exit_code=0)
        mirrors.append(m)
        assert list((run_dir / "wandb").glob("offline-run-*")), "kept offline, for a later sync"
    assert [m.mode for m in mirrors] == ["offline", "offline"]
    assert all(m.error is None for m in mirrors)  # a fallback, not a lost run
    assert probes == ["http://127.0.0.1:9"]  # the second run did not try again
    warnings = [r for r in caplog.records if "wandb online failed" in r.getMessage()]
    assert len(warnings) == 1 and "127.0.0.1:9" in warnings[0].getMessage()


def test_probe_reports_a_refused_port_and_accepts_a_listening_one():
    import socket

    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        assert wandb_mirror._unreachable(f"http://127.0.0.1:{port}") is None
    assert "unreachable" in wandb_mirror._unreachable(f"http://127.0.0.1:{port}")
