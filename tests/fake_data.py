"""Tiny datasets in the real on-disk formats, for tests that must not need the real data."""

import hashlib
import pickle
import random
from pathlib import Path

import numpy as np

from normexp.data import cifar10, ptb

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


WORDS = ["the", "cat", "sat", "on", "a", "mat", "dog", "ran", "far", "and", "then", "it", "was"]
WORDS += ["over", "<unk>", "n", "'s", "of", "to", "in"]


def write_fake_ptb(root: Path, seed: int = 0, lines: dict | None = None) -> dict[str, str]:
    """All six PTB files in the real format (word files: a space before each word and a newline
    per sentence; char files: symbols separated by spaces, `_` between words, a lone space after
    the last newline), from random sentences; returns their md5s."""
    rng = random.Random(seed)
    lines = lines or {"train": 2000, "valid": 400, "test": 400}
    folder = root / ptb.FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    md5 = {}
    for split, n in lines.items():
        sentences = [[rng.choice(WORDS) for _ in range(rng.randint(3, 9))] for _ in range(n)]
        if split == "train":  # every word and character appears in training
            sentences.append(list(WORDS))
        word = "".join(" " + " ".join(s) + " \n" for s in sentences)
        char = "".join(" ".join("_".join(s)) + " \n" for s in sentences) + " "
        for level, text in (("word", word), ("char", char)):
            name = ptb.file_name(level, split)
            (folder / name).write_text(text)
            md5[name] = hashlib.md5(text.encode()).hexdigest()
    return md5
