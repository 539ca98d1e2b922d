"""The GPU bundle's pieces that need no GPU and no build: the CIFAR-10 subset, the checks on
arrival (manifest, unpacked data), the wheel install, bringing runs home, and the new
train.max_minutes staying out of the stored runs' keys."""

import hashlib
import io
import json
import lzma
import tarfile
import zipfile

import numpy as np
import pytest

from normexp import gpu_bundle
from normexp.tracking.store import run_key
from normexp.train.fit import time_limit_s


def test_cifar_subset_is_class_balanced_sorted_and_nested():
    labels = np.random.default_rng(1).integers(0, 10, size=2000).astype(np.uint8)
    small, large = gpu_bundle.cifar_subset(labels, 20), gpu_bundle.cifar_subset(labels, 30)
    assert np.bincount(labels[small], minlength=10).tolist() == [20] * 10
    assert np.all(np.diff(small) > 0)
    assert set(small) <= set(large)
    with pytest.raises(SystemExit):
        gpu_bundle.cifar_subset(labels, 1000)


def test_subset_batches_read_back_with_the_suites_loader(tmp_path):
    from normexp.data.cifar10 import clear_cache, load_cifar10

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(50, gpu_bundle.ROW), dtype=np.uint8)
    y = np.repeat(np.arange(10, dtype=np.uint8), 5)
    folder = tmp_path / gpu_bundle.CIFAR
    folder.mkdir()
    for name, blob in zip(gpu_bundle.CIFAR_TRAIN, gpu_bundle.cifar_batches(x, y, 5), strict=True):
        (folder / name).write_bytes(blob)
    (test_blob,) = gpu_bundle.cifar_batches(x[:20], y[:20], 1)
    (folder / "test_batch").write_bytes(test_blob)
    (folder / "batches.meta").write_bytes(
        __import__("pickle").dumps({"label_names": [f"c{i}" for i in range(10)]})
    )
    clear_cache()
    cifar = load_cifar10(tmp_path, verify=False)
    clear_cache()
    assert cifar.train_x.shape == (50, 3, 32, 32) and cifar.test_x.shape == (20, 3, 32, 32)
    assert np.array_equal(cifar.train_x.reshape(50, -1).numpy(), x)
    assert cifar.train_y.tolist() == y.tolist()


def _bundle(tmp_path):
    """A minimal bundle: one data file (xz) and its manifest, as build writes them."""
    raw = b"a b c\n" * 100
    (tmp_path / "data" / "ptb").mkdir(parents=True)
    packed = tmp_path / "data" / "ptb" / "x.txt.xz"
    packed.write_bytes(lzma.compress(raw))
    manifest = {
        "files": {"data/ptb/x.txt.xz": {"sha256": gpu_bundle.sha256_file(packed)}},
        "unpacked": {"ptb/x.txt": hashlib.sha256(raw).hexdigest()},
    }
    (tmp_path / gpu_bundle.MANIFEST).write_text(json.dumps(manifest))
    return packed, raw


def test_arrival_checks_every_file_and_the_unpacked_data(tmp_path):
    packed, raw = _bundle(tmp_path)
    manifest = gpu_bundle.verify(tmp_path)
    dest = gpu_bundle.unpack_data(tmp_path, manifest, tmp_path / "work")
    assert (dest / "ptb" / "x.txt").read_bytes() == raw
    packed.write_bytes(lzma.compress(raw + b"!"))  # damaged in transit
    with pytest.raises(SystemExit, match="checksum"):
        gpu_bundle.verify(tmp_path)
    manifest["unpacked"]["ptb/x.txt"] = "0" * 64  # packed other bytes than the manifest says
    (dest / "ptb" / "x.txt").unlink()
    with pytest.raises(SystemExit, match="unpacks to other bytes"):
        gpu_bundle.unpack_data(tmp_path, manifest, dest)


def test_wheels_install_without_pip_and_without_compiled_files(tmp_path):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    with zipfile.ZipFile(wheels / "pkg-1.0-py3-none-any.whl", "w") as z:
        z.writestr("pkg/__init__.py", "X = 1\n")
        z.writestr("pkg/_speedup.cpython-311-x86_64-linux-gnu.so", b"\x7fELF")
        z.writestr("pkg-1.0.dist-info/METADATA", "Name: pkg\nVersion: 1.0\n")
    site = gpu_bundle.install_wheels(wheels, tmp_path / "site")
    assert (site / "pkg" / "__init__.py").is_file()
    assert (site / "pkg-1.0.dist-info" / "METADATA").is_file()
    assert not list(site.rglob("*.so"))


def _pack(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name, text in members.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_import_adds_new_runs_keeps_stored_ones_and_refuses_odd_paths(tmp_path):
    store = tmp_path / "results"
    kept = store / "paper" / "runs" / "gpu_rnn_cooijmans" / "aaaa"
    kept.mkdir(parents=True)
    (kept / "status.json").write_text("stored")
    pack = tmp_path / "pack.tar.gz"
    _pack(pack, {
        "paper/runs/gpu_rnn_cooijmans/aaaa/status.json": "new",
        "paper/runs/gpu_rnn_cooijmans/bbbb/status.json": "new",
        "paper/runs/gpu_rnn_cooijmans/bbbb/config.json": "{}",
        "paper/runs/../../../escape/x.json": "no",
        "gpu_bundle/gpu_plan.json": "{}",
    })
    assert gpu_bundle.import_results(pack, store) == ["bbbb"]
    assert (kept / "status.json").read_text() == "stored"
    assert sorted(p.name for p in (kept.parent / "bbbb").iterdir()) == [
        "config.json", "status.json"
    ]
    assert not (tmp_path / "escape").exists()


def test_cifar_runs_name_the_subset_and_sizes_that_ghost_bn_can_test():
    manifest = {"cifar": {"train_per_class": 1900, "n_train_images": 19000,
                          "n_test_images": 2560, "content_sha256": "ab" * 32}}
    over = dict(o.split("=", 1) for o in gpu_bundle.data_overrides(
        "gpu_small_batch_devices", manifest))
    assert over["data.verify"] == "false" and over["gpu.cifar_subset"] == "ab" * 8
    assert int(over["data.n_train"]) + int(over["data.n_val"]) == 19000
    assert int(over["data.n_test"]) % 32 == 0
    assert gpu_bundle.data_overrides("gpu_rnn_cooijmans", manifest) == ["data.download=false"]


def test_max_minutes_at_its_neutral_value_keeps_stored_run_keys():
    config = {"train": {"epochs": 3, "steps": None}, "seed": 0}
    with_field = {"train": {"epochs": 3, "steps": None, "max_minutes": None}, "seed": 0}
    assert run_key(config) == run_key(with_field)
    timed = {"train": {"epochs": 3, "steps": None, "max_minutes": 5.0}, "seed": 0}
    assert run_key(timed) != run_key(config)
    assert time_limit_s(timed["train"]) == 300.0 and time_limit_s(config["train"]) is None


def test_a_bundle_sent_alone_leaves_the_tracked_files_room_to_cifar(monkeypatch):
    """Inside the device tool's working tree the tracked files share the 64 MiB; copied alone
    (scp), nothing else travels, so CIFAR-10 gets their room."""
    assert gpu_bundle.travelling_bytes(alone=True) == 0
    assert gpu_bundle.travelling_bytes(alone=False) == gpu_bundle.tracked_bytes() > 0
    seen = {}
    monkeypatch.setattr(gpu_bundle, "build", lambda args: seen.update(alone=args.alone))
    gpu_bundle.main(["build", "--alone"])
    assert seen == {"alone": True}
    gpu_bundle.main(["build"])
    assert seen == {"alone": False}


def test_a_python_without_the_training_path_stops_the_run_in_one_line():
    import subprocess

    fine = subprocess.CompletedProcess(["python3"], 0, stdout="hydra x | torch 2 True\n")
    assert gpu_bundle.training_path_or_exit(fine) == "hydra x | torch 2 True"
    error = "Traceback ...\nModuleNotFoundError: No module named 'torch'\n"
    missing = subprocess.CompletedProcess(["python3"], 1, stdout="", stderr=error)
    with pytest.raises(SystemExit, match=r"python3 cannot import .*'torch'.*PYTHON="):
        gpu_bundle.training_path_or_exit(missing)
