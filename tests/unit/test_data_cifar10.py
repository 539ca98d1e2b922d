"""CIFAR-10 reader, data-dir resolution and stratified splits."""

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from normexp.data import cifar10, load_cifar10, resolve_data_dir, stratified_subset, train_val_split
from normexp.errors import ConfigError, DataError
from tests.fake_data import PER_BATCH, write_cifar


@pytest.fixture(autouse=True)
def _fresh_cache():
    cifar10.clear_cache()
    yield
    cifar10.clear_cache()


def read_raw(folder: Path, names: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    batches = [pickle.loads((folder / n).read_bytes(), encoding="latin1") for n in names]
    data = np.concatenate([b["data"] for b in batches])
    labels = np.concatenate([np.asarray(b["labels"], dtype=np.uint8) for b in batches])
    return data, labels


def fingerprints_of(folder: Path) -> dict[str, dict[str, str]]:
    out = {}
    for split, names in (("train", cifar10.TRAIN_FILES), ("test", cifar10.TEST_FILES)):
        data, labels = read_raw(folder, names)
        out[split] = {
            "data": hashlib.sha256(data.tobytes()).hexdigest(),
            "labels": hashlib.sha256(labels.tobytes()).hexdigest(),
        }
    return out


def test_reader_decodes_channel_major_rows(tmp_path):
    folder = write_cifar(tmp_path)
    ds = load_cifar10(tmp_path, verify=False)
    assert ds.train_x.shape == (5 * PER_BATCH, 3, 32, 32) and ds.train_x.dtype == torch.uint8
    assert ds.test_x.shape == (PER_BATCH, 3, 32, 32)
    assert ds.train_y.dtype == torch.int64 and ds.train_y.shape == (5 * PER_BATCH,)
    assert ds.classes == tuple(f"class{i}" for i in range(10))
    data, labels = read_raw(folder, cifar10.TRAIN_FILES)
    for i, (c, h, w) in [(0, (0, 0, 0)), (27, (1, 5, 31)), (99, (2, 31, 7)), (40, (2, 0, 1))]:
        assert ds.train_x[i, c, h, w] == data[i, c * 1024 + h * 32 + w]
    assert torch.equal(ds.train_y, torch.from_numpy(labels.astype(np.int64)))
    test_data, _ = read_raw(folder, cifar10.TEST_FILES)
    assert torch.equal(ds.test_x.reshape(PER_BATCH, -1), torch.from_numpy(test_data))


def test_verify_passes_with_matching_fingerprints(tmp_path, monkeypatch):
    folder = write_cifar(tmp_path)
    monkeypatch.setattr(cifar10, "FINGERPRINTS", fingerprints_of(folder))
    assert load_cifar10(tmp_path, verify=True).train_x.shape[0] == 5 * PER_BATCH


@pytest.mark.parametrize("split", ["train", "test"])
def test_verify_fails_on_fingerprint_mismatch(tmp_path, monkeypatch, split):
    folder = write_cifar(tmp_path)
    prints = fingerprints_of(folder)
    prints[split]["labels"] = "0" * 64
    monkeypatch.setattr(cifar10, "FINGERPRINTS", prints)
    with pytest.raises(DataError, match=f"{split} labels fingerprint") as e:
        load_cifar10(tmp_path, verify=True)
    assert str(folder) in str(e.value)
    load_cifar10(tmp_path, verify=False)  # the check is what fails, not the reading


def test_official_fingerprints_reject_other_content(tmp_path):
    write_cifar(tmp_path)
    with pytest.raises(DataError, match="train data and labels fingerprint"):
        load_cifar10(tmp_path)


def test_truncated_pickle_names_the_file(tmp_path):
    folder = write_cifar(tmp_path)
    path = folder / "data_batch_3"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match="data_batch_3.*unreadable"):
        load_cifar10(tmp_path, verify=False)


def test_missing_batch_file_names_the_file(tmp_path):
    folder = write_cifar(tmp_path)
    (folder / "test_batch").unlink()
    with pytest.raises(DataError, match="test_batch is missing"):
        load_cifar10(tmp_path, verify=False)


def test_wrong_shape_names_the_file(tmp_path):
    folder = write_cifar(tmp_path)
    bad = {"data": np.zeros((PER_BATCH, 1024), dtype=np.uint8), "labels": [0] * PER_BATCH}
    (folder / "data_batch_2").write_bytes(pickle.dumps(bad))
    with pytest.raises(DataError, match="data_batch_2.*shape"):
        load_cifar10(tmp_path, verify=False)


def test_missing_folder_without_download(tmp_path):
    with pytest.raises(DataError, match="cifar-10-batches-py.*data.download=true"):
        load_cifar10(tmp_path / "nowhere")


def test_download_fetches_and_loads(tmp_path, monkeypatch):
    from torchvision.datasets import utils

    calls = []

    def fake_download(url, download_root, md5=None, **kwargs):
        calls.append((url, md5))
        write_cifar(Path(download_root))

    monkeypatch.setattr(utils, "download_and_extract_archive", fake_download)
    ds = load_cifar10(tmp_path / "fresh", download=True, verify=False)
    assert calls == [(cifar10.URL, cifar10.ARCHIVE_MD5)]
    assert ds.train_x.shape == (5 * PER_BATCH, 3, 32, 32)
    load_cifar10(tmp_path / "fresh", download=True, verify=False)
    assert len(calls) == 1  # present now: no second download


def test_download_failure_is_a_data_error(tmp_path, monkeypatch):
    from torchvision.datasets import utils

    def failing(*args, **kwargs):
        raise RuntimeError("File not found or corrupted.")

    monkeypatch.setattr(utils, "download_and_extract_archive", failing)
    with pytest.raises(DataError, match="downloading CIFAR-10.*corrupted"):
        load_cifar10(tmp_path, download=True)


def test_loads_are_cached_per_path_and_verify(tmp_path):
    write_cifar(tmp_path)
    first = load_cifar10(tmp_path, verify=False)
    (tmp_path / "sub").mkdir()
    assert load_cifar10(tmp_path / "sub" / "..", verify=False) is first
    assert load_cifar10(tmp_path, verify=False, download=True) is first


def test_resolve_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMEXP_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir(str(tmp_path / "cfg")) == tmp_path / "cfg"
    assert resolve_data_dir("") == tmp_path / "env"
    assert resolve_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv("NORMEXP_DATA_DIR")
    monkeypatch.chdir(tmp_path)
    assert resolve_data_dir(None) == tmp_path / "data"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_data_dir("~/d") == tmp_path / "d"
    assert resolve_data_dir("rel").is_absolute()


def balanced_labels() -> torch.Tensor:
    order = torch.randperm(500, generator=torch.Generator().manual_seed(0))
    return torch.arange(10).repeat_interleave(50)[order]


def test_stratified_subset_balances_and_is_deterministic():
    labels = balanced_labels()
    idx = stratified_subset(labels, 123, seed=7)
    assert idx.numel() == 123 and idx.unique().numel() == 123
    assert torch.all(idx[1:] > idx[:-1])  # sorted
    counts = torch.bincount(labels[idx], minlength=10)
    assert counts.max() - counts.min() <= 1
    assert torch.equal(idx, stratified_subset(labels, 123, seed=7))
    assert not torch.equal(idx, stratified_subset(labels, 123, seed=8))
    assert set(idx.tolist()) <= set(stratified_subset(labels, 200, seed=7).tolist())  # nested


def test_stratified_subset_with_a_small_class():
    labels = torch.tensor([0] * 3 + [1] * 40 + [2] * 40)
    counts = torch.bincount(labels[stratified_subset(labels, 30, seed=0)])
    assert counts.tolist() == [3, 14, 13] or counts.tolist() == [3, 13, 14]


def test_train_val_split_is_disjoint_and_stratified():
    labels = balanced_labels()
    train, val = train_val_split(labels, n_train=200, n_val=100, seed=3)
    assert val.numel() == 100 and train.numel() == 200
    assert not set(train.tolist()) & set(val.tolist())
    assert torch.bincount(labels[val], minlength=10).tolist() == [10] * 10
    assert torch.bincount(labels[train], minlength=10).tolist() == [20] * 10
    again = train_val_split(labels, n_train=200, n_val=100, seed=3)
    assert torch.equal(train, again[0]) and torch.equal(val, again[1])
    rest, val2 = train_val_split(labels, n_train=None, n_val=100, seed=3)
    assert torch.equal(val2, val) and rest.numel() == 400
    assert torch.equal(torch.sort(torch.cat([rest, val])).values, torch.arange(500))


@pytest.mark.parametrize(
    ("n_train", "n_val", "field", "maximum"),
    [
        (10, 0, "data.n_val", "499"),
        (10, 500, "data.n_val", "499"),
        (0, 10, "data.n_train", "490"),
        (491, 10, "data.n_train", "490"),
        (-5, 10, "data.n_train", "490"),
    ],
)
def test_train_val_split_rejects_bad_sizes(n_train, n_val, field, maximum):
    with pytest.raises(ConfigError, match=f"to {maximum}") as e:
        train_val_split(balanced_labels(), n_train=n_train, n_val=n_val, seed=0)
    assert e.value.field == field


def real_dir() -> Path | None:
    if not os.environ.get("NORMEXP_DATA_DIR"):
        return None
    path = resolve_data_dir(None)
    return path if (path / cifar10.FOLDER).is_dir() else None


@pytest.mark.real_data
@pytest.mark.skipif(real_dir() is None, reason="NORMEXP_DATA_DIR does not hold CIFAR-10")
def test_real_cifar10():
    ds = load_cifar10(real_dir(), verify=True)
    assert ds.train_x.shape == (50000, 3, 32, 32) and ds.test_x.shape == (10000, 3, 32, 32)
    assert ds.train_y[:5].tolist() == [6, 9, 9, 4, 1]
    assert ds.test_y[:5].tolist() == [3, 8, 8, 0, 6]
    assert torch.bincount(ds.train_y).tolist() == [5000] * 10
    assert torch.bincount(ds.test_y).tolist() == [1000] * 10
    assert ds.classes[0] == "airplane" and ds.classes[9] == "truck"
