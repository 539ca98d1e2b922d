"""Bad input at the command line: one line naming the field or file, exit 2, nothing stored."""

import pytest
from conftest import run_cli


def assert_refused(result, *fragments: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("normexp: error:"), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


@pytest.mark.parametrize(
    ("overrides", "fragments"),
    [
        (["norm=foo"], ["norm:", "unknown 'foo'; allowed: batch, batch_renorm, ghost_batch"]),
        (["experiment=nope"], ["experiment:", "bn_small_batch"]),
        (["model=mlp", "norm=instance"], ["norm.name", "dense"]),
        (["norm=group", "norm.num_groups=3"], ["norm.num_groups", "does not divide"]),
        (["model=mlp", "train.batch_size=1"], ["train.batch_size"]),
        (["train.epochs=0"], ["train.epochs", ">= 1"]),
    ],
)
def test_bad_overrides_get_one_line_and_write_nothing(tmp_path, overrides, fragments):
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


def test_data_failing_its_content_check(tmp_path):
    from fake_data import write_cifar

    write_cifar(tmp_path / "data", per_batch=300)  # random pixels: fingerprints cannot match
    result = run_cli(["normexp.run", "profile=smoke"], tmp_path / "res", tmp_path / "data")
    assert_refused(result, "cifar-10-batches-py")
    assert not (tmp_path / "res").exists()
