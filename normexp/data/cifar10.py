"""CIFAR-10 (python version) read straight from its pickled batches, verified by content."""

import functools
import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from normexp.errors import DataError

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILES = ("test_batch",)
META_FILE = "batches.meta"
NUM_CLASSES = 10
IMAGE_SHAPE = (3, 32, 32)
ROW_SIZE = 3 * 32 * 32

# sha256 of the content (not of the files: rebuilt copies lack the `filenames` key, so file
# hashes differ while pixels and labels are identical). Data: the `data` arrays concatenated in
# file order, C order uint8; labels: the labels as uint8 bytes.
FINGERPRINTS = {
    "train": {
        "data": "9d5c2eddadb0deff02c14c350c0385aab7b1d5ff1edfeb4997c8dc8644960111",
        "labels": "2b7cd2f24487317614016b72ffd53071c3062f592f0eb300c18a770d41ae1253",
    },
    "test": {
        "data": "177777c33ba79825320efa646ad04a94bdc3c80e4ebe3bd21724f8cdfd4b9d56",
        "labels": "cec8a24a1e92aa2ecaa0bbd3dbfa86bf6cd8759fbd209a832824c8cf0afca9d5",
    },
}


@dataclass(frozen=True)
class Cifar10:
    """CIFAR-10 in memory. Shared by the per-process cache: do not modify the tensors in place."""

    train_x: torch.Tensor  # uint8 (50000, 3, 32, 32)
    train_y: torch.Tensor  # int64 (50000,)
    test_x: torch.Tensor  # uint8 (10000, 3, 32, 32)
    test_y: torch.Tensor  # int64 (10000,)
    classes: tuple[str, ...]


def load_cifar10(data_dir: Path, download: bool = False, verify: bool = True) -> Cifar10:
    """Load CIFAR-10 from `<data_dir>/cifar-10-batches-py`, downloading it first if asked."""
    data_dir = Path(data_dir).expanduser().resolve()
    folder = data_dir / FOLDER
    if not folder.is_dir():
        if not download:
            raise DataError(
                f"CIFAR-10 folder {folder} not found: set data.download=true to download it, or "
                f"point NORMEXP_DATA_DIR / paths.data_dir at a folder that holds {FOLDER}/"
            )
        _download(data_dir)
    return _load_cached(folder, verify)


def _download(data_dir: Path) -> None:
    # Imported here: torchvision adds about a second to every process start.
    from torchvision.datasets import utils

    try:
        utils.download_and_extract_archive(URL, download_root=str(data_dir), md5=ARCHIVE_MD5)
    except (OSError, RuntimeError) as e:
        raise DataError(
            f"downloading CIFAR-10 into {data_dir} failed ({e}); download {URL} by hand and "
            f"extract it there, or point NORMEXP_DATA_DIR / paths.data_dir at a copy"
        ) from e
    if not (data_dir / FOLDER).is_dir():
        raise DataError(f"the CIFAR-10 archive extracted into {data_dir} did not hold {FOLDER}/")


def clear_cache() -> None:
    """Forget the loaded datasets (tests, or after replacing files on disk)."""
    _load_cached.cache_clear()


@functools.lru_cache(maxsize=4)
def _load_cached(folder: Path, verify: bool) -> Cifar10:
    # Cached: a sweep worker runs many trials in one process and each would re-read 180 MB.
    train_data, train_labels = _read_split(folder, TRAIN_FILES)
    test_data, test_labels = _read_split(folder, TEST_FILES)
    if verify:
        _check_fingerprints(folder, "train", train_data, train_labels)
        _check_fingerprints(folder, "test", test_data, test_labels)
    return Cifar10(
        train_x=_images(train_data),
        train_y=torch.from_numpy(train_labels.astype(np.int64)),
        test_x=_images(test_data),
        test_y=torch.from_numpy(test_labels.astype(np.int64)),
        classes=_read_classes(folder / META_FILE),
    )


def _images(data: list[np.ndarray]) -> torch.Tensor:
    # Rows are channel-major (1024 red, 1024 green, 1024 blue; each row-major in h, w).
    return torch.from_numpy(np.concatenate(data).reshape(-1, *IMAGE_SHAPE))


def _read_split(folder: Path, names: tuple[str, ...]) -> tuple[list[np.ndarray], np.ndarray]:
    data, labels = [], []
    for name in names:
        d, y = _read_batch(folder / name)
        data.append(d)
        labels.append(y)
    return data, np.concatenate(labels)


def _unpickle(path: Path) -> dict:
    if not path.is_file():
        raise DataError(
            f"CIFAR-10 file {path} is missing: delete {path.parent} and rerun with "
            f"data.download=true, or point paths.data_dir at a complete copy"
        )
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="latin1")
    except Exception as e:  # truncated or foreign files raise many different errors
        raise DataError(
            f"CIFAR-10 file {path} is unreadable ({type(e).__name__}: {e}); expected a latin1 "
            f"pickle of the python version: replace it with an intact copy"
        ) from e
    if not isinstance(obj, dict):
        raise DataError(
            f"CIFAR-10 file {path} does not hold a dict: replace it with an intact copy"
        )
    return obj


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    obj = _unpickle(path)
    data, labels = obj.get("data"), obj.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2:
        raise DataError(f"CIFAR-10 file {path}: 'data' must be a 2-D uint8 array (N x {ROW_SIZE})")
    if data.shape[1] != ROW_SIZE:
        raise DataError(
            f"CIFAR-10 file {path}: 'data' has shape {data.shape}, expected (N, {ROW_SIZE})"
        )
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as e:
        raise DataError(f"CIFAR-10 file {path}: 'labels' must be a list of ints") from e
    if y.shape != (data.shape[0],):
        raise DataError(
            f"CIFAR-10 file {path}: {y.size} labels for {data.shape[0]} images; they must match"
        )
    if y.size and (y.min() < 0 or y.max() >= NUM_CLASSES):
        raise DataError(f"CIFAR-10 file {path}: labels must lie in 0..{NUM_CLASSES - 1}")
    return np.ascontiguousarray(data), y.astype(np.uint8)


def _read_classes(path: Path) -> tuple[str, ...]:
    names = _unpickle(path).get("label_names")
    if not isinstance(names, list) or len(names) != NUM_CLASSES:
        raise DataError(f"CIFAR-10 file {path}: 'label_names' must list {NUM_CLASSES} names")
    return tuple(str(n) for n in names)


def _check_fingerprints(
    folder: Path, split: str, data: list[np.ndarray], labels: np.ndarray
) -> None:
    h = hashlib.sha256()
    for d in data:  # hashing the arrays in turn equals hashing their concatenation
        h.update(memoryview(d).cast("B"))
    got = {"data": h.hexdigest(), "labels": hashlib.sha256(labels.tobytes()).hexdigest()}
    bad = [k for k, v in FINGERPRINTS[split].items() if got[k] != v]
    if bad:
        raise DataError(
            f"CIFAR-10 in {folder} fails its {split} {' and '.join(bad)} fingerprint: the copy "
            f"is altered or incomplete; replace it with an intact copy (or delete it and rerun "
            f"with data.download=true); data.verify=false skips this check"
        )
