"""The W&B mirror: mode resolution, and that no failure of W&B ever reaches the run."""

import pytest
import wandb

from normexp.errors import ConfigError
from normexp.tracking.wandb_mirror import WandbMirror, resolve_mode


@pytest.fixture
def clean_env(tmp_path, monkeypatch):
    """No W&B login or mode from the machine running the tests; W&B files under tmp."""
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
    m = mirror(tmp_path, mode="online")
    assert len(calls) == 1
    assert calls[0]["mode"] == "online" and calls[0]["group"] == "exp"
    assert m.run is None
    assert m.error == "wandb init failed: RuntimeError: no network"
    assert "no network" in caplog.text
    m.log({"acc": 0.5}, step=1)
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

    def log(self, metrics, step=None):
        raise ValueError("log broke")

    def finish(self, exit_code=0):
        self.finished.append(exit_code)


def test_failed_log_is_recorded_and_the_run_still_finished(clean_env, tmp_path):
    run = FlakyRun()
    clean_env.setattr(wandb, "init", lambda **kwargs: run)
    m = mirror(tmp_path)
    assert m.error is None and m.run_path == "/somewhere"
    m.log({"acc": 0.5}, step=1)
    assert m.error == "wandb log failed: ValueError: log broke"
    m.finish({"acc": 0.5, "status": "failed"}, exit_code=1)
    assert run.finished == [1]
    assert run.summary == {"acc": 0.5, "status": "failed"}
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
    m.log({"acc": 0.5}, step=1)
    m.finish({"acc": 0.5}, exit_code=0)
    assert list(run_dir.iterdir()) == []
    assert m.error is None


def test_offline_run_is_written_under_the_run_dir(clean_env, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    m = mirror(run_dir, mode="offline")
    assert m.error is None, m.error
    assert m.run is not None
    m.log({"epoch": 1, "val_acc": 0.25}, step=1)
    m.finish({"test_acc": 0.3}, exit_code=0)
    assert m.error is None, m.error
    assert m.run is None
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and runs[0].is_dir()
    assert list(runs[0].glob("*.wandb"))  # the run's log, for a later `wandb sync`
