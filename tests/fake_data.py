"""Tiny datasets in the real on-disk formats, for tests that must not need the real data."""

import pickle
from pathlib import Path

import numpy as np

from normexp.data import cifar10

PER_BATCH = 20  # images per tiny batch file


def write_cifar(root: Path, seed: int = 0, per_batch: int = PER_BATCH) -> Path:
    """Latin1 pickles of `data` (K x 3072 uint8) and `labels`, as in cifar-10-batches-py."""
    folder = root / cifar10.FOLDER
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for name in (*cifar10.TRAIN_FILES, *cifar10.TEST_FILES):
        batch = {
            "batch_label": name,
            "data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            "labels": [i % 10 for i in range(per_batch)],  # balanced, so stratified splits fit
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072}
    (folder / cifar10.META_FILE).write_bytes(pickle.dumps(meta, protocol=2))
    return folder
