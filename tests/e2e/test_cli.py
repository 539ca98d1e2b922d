"""Bad input at the command line: one line naming the field or file and what is allowed, a
non-zero exit, nothing written to the store. One test per row of README's bad-input table."""

import re
from pathlib import Path

import pytest

from normexp.data import cifar10
from tests.fake_data import write_cifar
from tests.helpers import REPO, run_cli

# (row id as in README, overrides, fragments the one line must contain)
OVERRIDE_ROWS = [
    ("unknown-norm", ["norm=foo"], ["norm:", "unknown 'foo'; allowed: batch, ", "group"]),
    ("unknown-experiment", ["experiment=nope"], ["experiment:", "bn_small_batch"]),
    ("unknown-profile", ["profile=smok"], ["profile:", "paper, quick, smoke"]),
    ("unknown-model", ["model=resnet"], ["model:", "cnn", "mlp"]),
    ("unknown-optimizer", ["optim=lamb"], ["optim:", "adam", "sgd"]),
    ("unknown-dataset", ["data=imagenet"], ["data:", "cifar10"]),
    ("unknown-key", ["train.batchsize=8"], ["train.batchsize:", "no such setting"]),
    ("unparsable-value", ["model.widths=[1,2"], ["cannot parse 'model.widths=[1,2'"]),
    ("wrong-type", ["train.batch_size=abc"], ["train.batch_size:", "must be an integer"]),
    ("non-positive-size", ["train.epochs=0"], ["train.epochs:", ">= 1"]),
    ("negative-lr", ["optim.lr_per_128=-1"], ["optim.lr_per_128:", "> 0"]),
    ("too-many-images", ["data.n_train=49990"], ["data.n_train:", "at most"]),
    ("unknown-activation", ["model.activation=swish"], ["model.activation:", "relu"]),
    ("unknown-schedule", ["optim.schedule=step"], ["optim.schedule:", "onecycle"]),
    ("instance-in-mlp", ["model=mlp", "norm=instance"], ["norm.name", "dense", "allowed"]),
    ("groups-not-dividing", ["norm=group", "norm.num_groups=3"], ["norm.num_groups", "divide"]),
    (
        "ghost-group-not-dividing",
        ["norm=ghost_batch", "train.batch_size=12"],
        ["norm.group_size", "divisor of train.batch_size=12"],
    ),
    ("bn-one-value", ["model=mlp", "train.batch_size=1"], ["train.batch_size", "1 value"]),
    (
        "in-post-before-pooling",
        ["norm=instance", "norm.position=post", "model.head=gap"],
        ["norm.position", "ignore its input"],
    ),
    ("unknown-position", ["norm.position=middle"], ["norm.position", "pre, post"]),
    ("unknown-head", ["model.head=attention"], ["model.head", "grid, flatten, gap"]),
    ("unknown-weight-side", ["model.weight_side=spectral"], ["model.weight_side", "weight_norm"]),
    ("unknown-tracking-mode", ["tracking.mode=cloud"], ["tracking.mode", "offline, online"]),
    ("unknown-device", ["train.device=tpu"], ["train.device", "auto, cpu, cuda"]),
    ("amp-on-cpu", ["train.device=cpu", "train.amp=true"], ["train.amp", "CUDA"]),
    (
        "results-dir-not-writable",
        ["paths.results_dir=/etc/hostname/results"],
        ["paths.results_dir", "is a file, not a folder"],
    ),
]


def assert_refused(result, *fragments: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("normexp: error:"), result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    ("row", "overrides", "fragments"), OVERRIDE_ROWS, ids=[r[0] for r in OVERRIDE_ROWS]
)
def test_bad_overrides_get_one_line_and_write_nothing(tmp_path, row, overrides, fragments):
    result = run_cli(["normexp.run", "profile=smoke", *overrides], tmp_path / "res", tmp_path)
    assert_refused(result, *fragments)
    assert not (tmp_path / "res").exists()


def test_bad_value_in_a_sweep_stops_it_before_any_job(tmp_path, cifar_data):
    data_dir, extra = cifar_data
    result = run_cli(
        [
            "normexp.run",
            "-m",
            "experiment=bn_small_batch",
            "profile=smoke",
            "model=mlp",
            f"hydra.sweep.dir={tmp_path / 'hydra'}",
            *extra,
        ],
        tmp_path / "res",
        data_dir,
    )
    assert_refused(result, "norm.name", "instance")
    assert not (tmp_path / "res").exists()


def test_missing_data_with_download_off(tmp_path):
    result = run_cli(
        ["normexp.run", "profile=smoke", "data.download=false"], tmp_path / "res", tmp_path / "none"
    )
    assert_refused(result, "cifar-10-batches-py", "data.download")
    assert not (tmp_path / "res").exists()


def test_data_dir_that_is_a_file(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    result = run_cli(
        ["normexp.run", "profile=smoke", "data.download=false"], tmp_path / "res", tmp_path / "file"
    )
    assert_refused(result, "cifar-10-batches-py")
    assert not (tmp_path / "res").exists()


def test_download_without_network_fails_in_one_line(tmp_path):
    # No network here: the real download code runs and fails; with internet it would fetch.
    result = run_cli(["normexp.run", "profile=smoke"], tmp_path / "res", tmp_path / "empty")
    assert_refused(result, "downloading CIFAR-10", "by hand")
    assert not (tmp_path / "res").exists()


def test_data_failing_its_content_check(tmp_path):
    write_cifar(tmp_path / "data", per_batch=300)  # random pixels: fingerprints cannot match
    result = run_cli(["normexp.run", "profile=smoke"], tmp_path / "res", tmp_path / "data")
    assert_refused(result, "cifar-10-batches-py")
    assert not (tmp_path / "res").exists()


def test_truncated_data_file_is_named(tmp_path):
    folder = write_cifar(tmp_path / "data", per_batch=300)
    batch = folder / cifar10.TRAIN_FILES[2]
    batch.write_bytes(batch.read_bytes()[:5000])
    result = run_cli(
        ["normexp.run", "profile=smoke", "data.verify=false"], tmp_path / "res", tmp_path / "data"
    )
    assert_refused(result, cifar10.TRAIN_FILES[2])
    assert not (tmp_path / "res").exists()


def test_readme_table_lists_every_tested_row():
    readme = (REPO / "README.md").read_text().split("## Bad input")[1].split("\n## ")[0]
    rows = re.findall(r"^\| `([a-z0-9-]+)` \|", readme, flags=re.M)
    file_rows = {
        "missing-data-dir",
        "data-dir-is-a-file",
        "no-network",
        "corrupted-data",
        "truncated-data",
        "disk-full",
        "wandb-fails",
    }
    assert len(rows) >= 20
    assert set(rows) == {r[0] for r in OVERRIDE_ROWS} | file_rows, set(rows) ^ (
        {r[0] for r in OVERRIDE_ROWS} | file_rows
    )
    assert Path(__file__).name  # the table is this file's contract
