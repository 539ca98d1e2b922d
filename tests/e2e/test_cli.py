"""Bad input at the command line: one line naming the field or file and what is allowed, a
non-zero exit, nothing written to the store. One test per row of docs/bad-input.md's table."""

import re
import subprocess
from pathlib import Path

import pytest
import torch

from normexp import schema
from normexp.data import cifar10
from normexp.errors import ConfigError
from normexp.run import preflight
from tests.fake_data import write_cifar
from tests.helpers import Call, run_cli, run_cli_batch

# `make test` runs tests on every core (pytest-xdist, --dist loadgroup); a group stays on one
# worker, so the fixture its tests share is built once.
pytestmark = pytest.mark.xdist_group("test_cli")

# (row id as in docs/bad-input.md, overrides, fragments the one line must contain)
OVERRIDE_ROWS = [
    ("unknown-norm", ["norm=foo"], ["norm:", "unknown 'foo'; allowed: batch, ", "group"]),
    ("unknown-experiment", ["experiment=nope"], ["experiment:", "bn_small_batch"]),
    ("unknown-profile", ["profile=smok"], ["profile:", "paper, quick, smoke"]),
    ("unknown-model", ["model=densenet"], ["model:", "cnn", "mlp", "resnet"]),
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
        "group-width-not-dividing",
        ["norm=group", "norm.grouping=width", "norm.channels_per_group=8"],
        ["norm.channels_per_group", "(4, 4, 8, 8, 8, 8); allowed: 1, 2, 4"],
    ),
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
    ("non-finite-lr", ["optim.lr_per_128=nan"], ["optim.lr_per_128:", "finite number > 0"]),
    ("float-group-count", ["norm=group", "norm.num_groups=2.0"], ["norm.num_groups:", "integer"]),
    ("negative-momentum", ["optim.momentum=-0.9"], ["optim.momentum:", "[0, 1]"]),
    ("word-for-a-boolean", ["data.augment=yes"], ["data.augment:", "true or false"]),
    ("seed-too-large", ["seed=18446744073709551616"], ["seed:", "4294967295"]),
    (
        "batch-larger-than-subset",
        ["data.n_train=100", "train.batch_size=128"],
        ["train.batch_size:", "100 training images"],
    ),
    ("path-like-name", ["claim.name=../../x"], ["claim.name:", "not starting with '.'"]),
    ("empty-results-dir", ["paths.results_dir="], ["paths.results_dir:", "non-empty path"]),
    ("chdir", ["hydra.job.chdir=true"], ["hydra.job.chdir:", "must be false"]),
    ("too-many-threads", ["runtime.threads=100000"], ["runtime.threads:", "from 1 to"]),
    ("launcher-jobs", ["hydra.launcher.n_jobs=0"], ["hydra.launcher.n_jobs:", "-1 (one per core)"]),
    pytest.param(
        "cuda-without-gpu",
        ["train.device=cuda"],
        ["train.device:", "no GPU is visible"],
        marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible"),
    ),
    ("sweep-without-m", ["norm=batch,group"], ["'norm=batch,group'", "add -m"]),
    (
        "lstm-without-ptb",
        ["model=lstm", "norm=group"],
        ["data.name:", "set train=language_model data=ptb model=lstm optim=adam_lm"],
    ),
    ("ptb-for-a-cnn", ["data=ptb"], ["model.name:", "model.name=cnn", "set train=language_model"]),
    (
        "generator-for-classification",
        ["model=generator"],
        ["train.task:", "set train=image_to_image", "experiment=bn_generation"],
    ),
    (
        "cnn-for-a-language-model",
        ["experiment=rnn_norm", "model=cnn"],
        ["model.name:", "set train=language_model", "experiment=rnn_norm"],
    ),
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


def row_values(row) -> tuple:
    return row.values if hasattr(row, "values") else row  # a pytest.param or a plain tuple


def row_id(row) -> str:
    return row_values(row)[0]


HYDRA_FLAGS = [["--cfg", "job", "norm=group"], ["-c", "job"], ["-sc", "install=bash"], ["--info"]]


@pytest.fixture(scope="module")
def commands(tmp_path_factory, cifar_data) -> dict[str, Call]:
    """Every command of this file's tests, each with its own store and data under tmp."""

    def folder(name: str) -> Path:
        return tmp_path_factory.mktemp(name)

    commands = {}
    for row in OVERRIDE_ROWS:
        if any(mark.args and mark.args[0] for mark in getattr(row, "marks", ())):
            continue  # a row skipped here (cuda-without-gpu on a GPU machine)
        name, overrides, _ = row_values(row)
        tmp = folder(name)
        commands[name] = Call(["normexp.run", "profile=smoke", *overrides], tmp / "res", tmp)
    data_dir, extra = cifar_data
    tmp = folder("sweep")
    sweep = ["normexp.run", "-m", "experiment=bn_small_batch", "profile=smoke", "model=mlp"]
    sweep += [f"hydra.sweep.dir={tmp / 'hydra'}", *extra]
    commands["sweep"] = Call(sweep, tmp / "res", data_dir)
    tmp = folder("no-data")
    commands["no-data"] = Call(run_args("data.download=false"), tmp / "res", tmp / "none")
    tmp = folder("data-file")
    (tmp / "file").write_text("not a folder")
    commands["data-file"] = Call(run_args("data.download=false"), tmp / "res", tmp / "file")
    tmp = folder("no-network")
    commands["no-network"] = Call(run_args(), tmp / "res", tmp / "empty")
    tmp = folder("fingerprints")
    write_cifar(tmp / "data", per_batch=300)  # random pixels: fingerprints cannot match
    commands["fingerprints"] = Call(run_args(), tmp / "res", tmp / "data")
    tmp = folder("truncated")
    batch = write_cifar(tmp / "data", per_batch=300) / cifar10.TRAIN_FILES[2]
    batch.write_bytes(batch.read_bytes()[:5000])
    commands["truncated"] = Call(run_args("data.verify=false"), tmp / "res", tmp / "data")
    for argv in HYDRA_FLAGS:
        tmp = folder("flags")
        commands[" ".join(argv)] = Call(["normexp.run", *argv], tmp / "res", tmp)
    return commands


def run_args(*overrides: str) -> list[str]:
    return ["normexp.run", "profile=smoke", *overrides]


@pytest.fixture(scope="module")
def results(commands) -> dict[str, subprocess.CompletedProcess]:
    """What each command returned, all run in one process (tests.helpers.run_cli_batch)."""
    return dict(zip(commands, run_cli_batch(list(commands.values())), strict=True))


@pytest.fixture
def refused(commands, results):
    """refused(name, *fragments): command `name` was refused in one line holding the fragments
    and wrote nothing."""

    def check(name: str, *fragments: str) -> None:
        assert_refused(results[name], *fragments)
        assert not commands[name].results_dir.exists()

    return check


@pytest.mark.parametrize(
    ("row", "fragments"),
    [(row_id(r), row_values(r)[2]) for r in OVERRIDE_ROWS],
    ids=[row_id(r) for r in OVERRIDE_ROWS],
)
def test_bad_overrides_get_one_line_and_write_nothing(refused, row, fragments):
    refused(row, *fragments)


def test_bad_value_in_a_sweep_stops_it_before_any_job(refused):
    refused("sweep", "norm.name", "instance")


def test_missing_data_with_download_off(refused):
    refused("no-data", "cifar-10-batches-py", "data.download")


def test_data_dir_that_is_a_file(refused):
    refused("data-file", "cifar-10-batches-py")


def test_download_without_network_fails_in_one_line(refused):
    # No network here: the real download code runs and fails; with internet it would fetch.
    refused("no-network", "downloading CIFAR-10", "by hand")


def test_data_failing_its_content_check(refused):
    refused("fingerprints", "cifar-10-batches-py")


def test_truncated_data_file_is_named(refused):
    refused("truncated", cifar10.TRAIN_FILES[2])


@pytest.mark.parametrize("name", ["no-data", "sweep"])  # a refusal and a sweep: each a fresh torch
def test_a_fresh_process_says_the_same(commands, results, name):
    """The real entry point, one process per command: the same exit status and output as the
    batch above gives (which runs the commands one after another in one process)."""
    call = commands[name]
    alone = run_cli(call.args, call.results_dir, call.data_dir)
    assert (alone.returncode, alone.stderr, alone.stdout) == (
        results[name].returncode,
        results[name].stderr,
        results[name].stdout,
    )
    assert not call.results_dir.exists()


def test_bad_input_page_lists_every_tested_row():
    page = schema.FIELDS_PAGE.read_text()
    assert page.startswith("# Bad input")
    page = page.split(schema.BEGIN)[0]  # the cases; the generated field table follows
    rows = re.findall(r"^\| `([a-z0-9-]+)` \|", page, flags=re.M)
    file_rows = {
        "missing-data-dir",
        "data-dir-is-a-file",
        "no-network",
        "corrupted-data",
        "truncated-data",
        "disk-full",
        "store-cannot-be-created",
        "read-only-store",
        "wandb-fails",
        "run-fails",
    }
    assert len(rows) >= 20
    expected = {row_id(r) for r in OVERRIDE_ROWS} | file_rows
    assert set(rows) == expected, set(rows) ^ expected
    assert Path(__file__).name  # the table is this file's contract


def test_field_table_is_the_schemas():
    """docs/bad-input.md's table of fields is generated: `python -m normexp.schema` rewrites it."""
    assert schema.fields_block(schema.FIELDS_PAGE.read_text()) == schema.fields_table()


@pytest.mark.parametrize("argv", HYDRA_FLAGS, ids=" ".join)
def test_hydra_flags_work_as_documented(commands, results, argv):
    result = results[" ".join(argv)]
    assert result.returncode == 0, result.stderr
    assert "normexp: error" not in result.stderr
    if argv[0] in ("--cfg", "-c"):
        assert "claim:" in result.stdout and "hydra:" not in result.stdout
    if argv[0] == "-sc":
        assert "complete" in result.stdout  # the bash completion script
    assert not commands[" ".join(argv)].results_dir.exists()


# --- group choices on the command line -------------------------------------------------


def test_unknown_group_choice_is_named_with_the_allowed_ones():
    with pytest.raises(ConfigError) as info:
        preflight(["norm=foo"])
    assert info.value.field == "norm"
    msg = str(info.value)
    assert "'foo'" in msg
    allowed = msg.split("allowed:")[1]
    assert all(n in allowed for n in ("batch", "group", "instance", "layer", "none"))


@pytest.mark.parametrize(
    "arg", ["profile=fast", "model=densenet", "+experiment=nope", "experiment=null"]
)
def test_other_unknown_group_choices(arg):
    with pytest.raises(ConfigError):
        preflight([arg])


def test_valid_choices_and_plain_overrides_pass():
    preflight(["-m", "norm=none,batch,group", "experiment=bn_small_batch", "profile=smoke"])
    preflight(["-m", "model=mlp", "optim=adam", "hydra.launcher.n_jobs=2"])
    preflight(["-m", "seed=3", "norm=group", "norm.num_groups=2", "train.batch_size=2,4"])
    preflight(["--multirun", "norm=choice(batch,foo)"])  # each job is checked by the callback


@pytest.mark.parametrize(
    "argv",
    [
        ["--cfg", "job"],
        ["-c", "job", "norm=group"],
        ["--cfg", "all", "--resolve"],
        ["--info"],
        ["--info", "defaults"],
        ["-sc", "install=bash"],
        ["--shell-completion", "query=norm"],
        ["--help"],
        ["--hydra-help"],
    ],
    ids=" ".join,
)
def test_hydra_flags_are_left_to_hydra(argv):
    preflight(argv)  # no ConfigError: Hydra parses its own command line
