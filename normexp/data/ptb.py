"""Penn Treebank (Mikolov's preprocessed `simple-examples`), word or character level."""

import functools
import hashlib
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from normexp.errors import ConfigError, DataError

URL = "http://www.fit.vutbr.cz/~imikolov/rnnlm/simple-examples.tgz"
FOLDER = "ptb"
ARCHIVE_DATA = Path("simple-examples") / "data"  # where the archive keeps the text files
EOS = "<eos>"
LEVELS = ("char", "word")
SPLITS = ("train", "valid", "test")
MD5 = {
    "ptb.train.txt": "f26c4b92c5fdc7b3f8c7cdcb991d8420",
    "ptb.valid.txt": "aa0affc06ff7c36e977d7cd49e3839bf",
    "ptb.test.txt": "8b80168b89c18661a38ef683c0dc3721",
    "ptb.char.train.txt": "874909f99060142f6b88cc74c34baaa2",
    "ptb.char.valid.txt": "9e0fe5bec2a8bf43fd686dc23d5ab8bb",
    "ptb.char.test.txt": "1f9a2d1afe00f76e8bfbe09a65439681",
}


def file_name(level: str, split: str) -> str:
    return f"ptb.{'char.' if level == 'char' else ''}{split}.txt"


class Vocabulary:
    """Token <-> index, in order of first appearance in the training split."""

    def __init__(self, tokens: Iterable[str]) -> None:
        self.stoi: dict[str, int] = {}
        for t in tokens:
            self.stoi.setdefault(t, len(self.stoi))
        self.itos: list[str] = list(self.stoi)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def index(self, token: str) -> int:
        return self.stoi[token]

    def token(self, index: int) -> str:
        return self.itos[index]

    def encode(self, tokens: list[str]) -> torch.Tensor:
        """1-D int64 indices; KeyError on a token outside the vocabulary."""
        ids = np.fromiter(map(self.stoi.__getitem__, tokens), dtype=np.int64, count=len(tokens))
        return torch.from_numpy(ids)

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.itos[int(i)] for i in ids]


@dataclass
class PTBCorpus:
    """Token streams of the three splits, encoded with the training vocabulary."""

    vocab: Vocabulary
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor


def load_ptb(data_dir: Path, level: str, download: bool = False) -> PTBCorpus:
    """Read `<data_dir>/ptb/ptb[.char].{train,valid,test}.txt`, md5-checked; cached per process.

    Word level: the words of each line, then <eos>. Char level: the space-separated symbols of
    each line (`_` marks word boundaries), then <eos>.
    """
    if level not in LEVELS:
        raise ConfigError("data.level", f"got {level!r}; allowed: {', '.join(LEVELS)}")
    folder = Path(data_dir).expanduser().resolve() / FOLDER
    missing = [n for n in MD5 if not (folder / n).is_file()]
    needed = [file_name(level, s) for s in SPLITS]
    if any(n in missing for n in needed):
        if not download:
            raise DataError(
                f"PTB files {', '.join(n for n in needed if n in missing)} not found in {folder}: "
                f"set data.download=true to download them, or point NORMEXP_DATA_DIR / "
                f"paths.data_dir at a folder that holds {FOLDER}/"
            )
        _download(folder, missing)
    return _load_cached(folder, level)


def clear_cache() -> None:
    """Forget the loaded corpora (tests, or after replacing files on disk)."""
    _load_cached.cache_clear()


def _download(folder: Path, names: list[str]) -> None:
    # Imported here: torchvision adds about a second to every process start.
    from torchvision.datasets import utils

    folder.mkdir(parents=True, exist_ok=True)
    # Extract beside the target so the final moves are renames on one file system; the archive
    # has no published md5, so each file is checked against its own md5 instead.
    with tempfile.TemporaryDirectory(dir=folder, prefix=".download-") as tmp:
        try:
            utils.download_and_extract_archive(URL, download_root=tmp)
        except (OSError, RuntimeError) as e:
            raise DataError(
                f"downloading PTB into {folder} failed ({e}); download {URL} by hand and put "
                f"its simple-examples/data/ptb.*.txt files in {folder}"
            ) from e
        sources = [Path(tmp) / ARCHIVE_DATA / name for name in names]
        for src in sources:  # all checked before any is moved: no half-updated folder
            if not src.is_file():
                raise DataError(f"the PTB archive from {URL} lacks {ARCHIVE_DATA / src.name}")
            _check_md5(src, src.read_bytes())
        for src in sources:
            shutil.move(src, folder / src.name)


@functools.lru_cache(maxsize=4)
def _load_cached(folder: Path, level: str) -> PTBCorpus:
    # Cached: a sweep worker runs many trials in one process.
    streams = {s: _read_tokens(folder / file_name(level, s)) for s in SPLITS}
    vocab = Vocabulary(streams["train"])
    encoded = {}
    for split, tokens in streams.items():
        try:
            encoded[split] = vocab.encode(tokens)
        except KeyError as e:
            raise DataError(
                f"PTB file {folder / file_name(level, split)} holds token {e.args[0]!r} that the "
                f"training split lacks: replace the files with intact copies"
            ) from None
    return PTBCorpus(vocab=vocab, **encoded)


def _read_tokens(path: Path) -> list[str]:
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"PTB file {path} is unreadable ({e})") from e
    _check_md5(path, raw)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"PTB file {path} is not UTF-8 text ({e}); replace it") from e
    lines = text.split("\n")
    # Every newline ends a line (one <eos> each); a blank tail after the last newline is no line
    # (the char files end with a lone space there).
    if not lines[-1].strip():
        lines.pop()
    tokens: list[str] = []
    for line in lines:
        tokens.extend(line.split())
        tokens.append(EOS)
    return tokens


def _check_md5(path: Path, raw: bytes) -> None:
    expected = MD5.get(path.name)
    if expected is not None and hashlib.md5(raw).hexdigest() != expected:
        raise DataError(
            f"PTB file {path} fails its md5 check (expected {expected}): the copy is altered or "
            f"incomplete; replace it, or delete it and rerun with data.download=true"
        )


def batchify(stream: torch.Tensor, batch_size: int) -> torch.Tensor:
    """(batch_size, T) with T = len // batch_size; row b is the b-th contiguous slice of the
    stream, and the remainder is dropped."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    steps = stream.numel() // batch_size
    if steps < 2:
        raise ValueError(
            f"a stream of {stream.numel()} tokens is too short for batch_size {batch_size}"
        )
    return stream[: batch_size * steps].reshape(batch_size, steps)


def bptt_windows(data: torch.Tensor, seq_len: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(inputs, targets) windows of shape (batch, L <= seq_len) over the columns of `data`;
    targets are inputs shifted by one step; the last window may be shorter."""
    if seq_len < 1:
        raise ValueError(f"seq_len must be at least 1, got {seq_len}")
    steps = data.shape[1]
    for i in range(0, steps - 1, seq_len):
        n = min(seq_len, steps - 1 - i)
        yield data[:, i : i + n], data[:, i + 1 : i + 1 + n]
