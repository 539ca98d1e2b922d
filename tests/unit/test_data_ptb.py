"""Penn Treebank reader, vocabulary, batchify and BPTT windows."""

import hashlib
import os
from pathlib import Path

import pytest
import torch

from normexp.data import batchify, bptt_windows, load_ptb, ptb, resolve_data_dir
from normexp.errors import ConfigError, DataError
from tests.fake_data import WORDS

WORD = {
    "train": " the cat sat \n the dog <unk> \n",
    "valid": " the dog sat \n",
    "test": " cat <unk> \n the \n",
}


def char_text(word_text: str) -> str:
    # The real char files: symbols separated by spaces, `_` between words, and a lone space
    # after the last newline.
    lines = [" ".join("_".join(line.split())) + " \n" for line in word_text.splitlines()]
    return "".join(lines) + " "


@pytest.fixture
def ptb_dir(tmp_path, monkeypatch) -> Path:
    """Tiny copies of all six files, with MD5 patched to match them."""
    ptb.clear_cache()
    folder = tmp_path / "ptb"
    folder.mkdir()
    md5 = write_files(folder)
    monkeypatch.setattr(ptb, "MD5", md5)
    yield tmp_path
    ptb.clear_cache()


def write_files(folder: Path) -> dict[str, str]:
    md5 = {}
    for split, text in WORD.items():
        for level, content in (("word", text), ("char", char_text(text))):
            name = ptb.file_name(level, split)
            (folder / name).write_text(content)
            md5[name] = hashlib.md5(content.encode()).hexdigest()
    return md5


def test_word_level(ptb_dir):
    corpus = load_ptb(ptb_dir, "word")
    assert corpus.vocab.itos == ["the", "cat", "sat", "<eos>", "dog", "<unk>"]
    assert corpus.train.dtype == torch.int64
    train = ["the", "cat", "sat", "<eos>", "the", "dog", "<unk>", "<eos>"]
    assert corpus.vocab.decode(corpus.train) == train
    assert corpus.vocab.decode(corpus.valid) == ["the", "dog", "sat", "<eos>"]
    assert corpus.vocab.decode(corpus.test) == ["cat", "<unk>", "<eos>", "the", "<eos>"]
    assert load_ptb(ptb_dir, "word") is corpus  # cached


def test_word_level_of_files_in_the_real_format(fake_ptb):
    """The vocabulary is the training split's words plus <eos>; every split is its file's words
    in order, an <eos> after each line."""
    corpus = load_ptb(fake_ptb, "word")
    assert set(corpus.vocab.itos) == set(WORDS) | {"<eos>"}
    assert corpus.vocab.index("<unk>") >= 0  # the files' own unknown-word token is a word
    for split in ("train", "valid", "test"):
        lines = (fake_ptb / "ptb" / ptb.file_name("word", split)).read_text().splitlines()
        expected = [t for line in lines for t in (*line.split(), "<eos>")]
        assert corpus.vocab.decode(getattr(corpus, split)) == expected, split


def test_char_level(ptb_dir):
    corpus = load_ptb(ptb_dir, "char")
    train = corpus.vocab.decode(corpus.train)
    # No <eos> for the blank tail after the last newline.
    assert train == list("the_cat_sat") + ["<eos>"] + list("the_dog_<unk>") + ["<eos>"]
    assert set(corpus.vocab.itos) == set("thecasdog_<unk>") | {"<eos>"}
    assert corpus.vocab.decode(corpus.test)[-2:] == ["e", "<eos>"]


def test_unknown_level(ptb_dir):
    with pytest.raises(ConfigError, match="allowed: char, word") as e:
        load_ptb(ptb_dir, "byte")
    assert e.value.field == "data.level"


def test_md5_mismatch_names_the_file(ptb_dir):
    path = ptb_dir / "ptb" / "ptb.valid.txt"
    path.write_text(" the cat sat \n")
    with pytest.raises(DataError, match=r"ptb\.valid\.txt fails its md5"):
        load_ptb(ptb_dir, "word")
    load_ptb(ptb_dir, "char")  # the other level's files are intact


def test_token_missing_from_training_split(ptb_dir, monkeypatch):
    path = ptb_dir / "ptb" / "ptb.test.txt"
    path.write_text(" bird \n")
    monkeypatch.setitem(ptb.MD5, "ptb.test.txt", hashlib.md5(b" bird \n").hexdigest())
    with pytest.raises(DataError, match=r"ptb\.test\.txt holds token 'bird'"):
        load_ptb(ptb_dir, "word")


def test_missing_files_without_download(tmp_path):
    with pytest.raises(DataError, match=r"ptb\.char\.train\.txt.*data\.download=true"):
        load_ptb(tmp_path / "nowhere", "char")


def test_download_extracts_and_moves_the_files(tmp_path, monkeypatch):
    from torchvision.datasets import utils

    ptb.clear_cache()
    monkeypatch.setattr(ptb, "MD5", write_files(tmp_path))  # md5s of the tiny files
    calls = []

    def fake_download(url, download_root, **kwargs):
        calls.append(url)
        data = Path(download_root) / "simple-examples" / "data"
        data.mkdir(parents=True)
        write_files(data)
        (data / "README").write_text("other files in the archive stay behind")

    monkeypatch.setattr(utils, "download_and_extract_archive", fake_download)
    corpus = load_ptb(tmp_path / "root", "word", download=True)
    assert calls == [ptb.URL]
    assert corpus.vocab.decode(corpus.valid) == ["the", "dog", "sat", "<eos>"]
    assert sorted(p.name for p in (tmp_path / "root" / "ptb").iterdir()) == sorted(ptb.MD5)
    load_ptb(tmp_path / "root", "char", download=True)
    assert len(calls) == 1  # all six files came with the first download


def test_download_of_a_corrupt_archive(tmp_path, monkeypatch):
    from torchvision.datasets import utils

    ptb.clear_cache()

    def fake_download(url, download_root, **kwargs):
        data = Path(download_root) / "simple-examples" / "data"
        data.mkdir(parents=True)
        write_files(data)  # not the canonical md5s

    monkeypatch.setattr(utils, "download_and_extract_archive", fake_download)
    with pytest.raises(DataError, match="fails its md5"):
        load_ptb(tmp_path, "word", download=True)
    assert list((tmp_path / "ptb").iterdir()) == []  # nothing half-written is left


def test_batchify_rows_are_contiguous_slices():
    data = batchify(torch.arange(103), 4)
    assert data.shape == (4, 25)
    for b in range(4):
        assert torch.equal(data[b], torch.arange(b * 25, (b + 1) * 25))
    with pytest.raises(ValueError, match="too short"):
        batchify(torch.arange(5), 4)


def test_bptt_windows_shift_targets_by_one():
    data = batchify(torch.arange(40), 2)  # (2, 20)
    windows = list(bptt_windows(data, 7))
    assert [x.shape[1] for x, _ in windows] == [7, 7, 5]  # 19 input steps, last one shorter
    for x, y in windows:
        assert x.shape == y.shape and x.shape[0] == 2
        assert torch.equal(y, x + 1)
    assert torch.equal(torch.cat([x for x, _ in windows], 1), data[:, :-1])
    assert torch.equal(torch.cat([y for _, y in windows], 1), data[:, 1:])


def real_dir() -> Path | None:
    if not os.environ.get("NORMEXP_DATA_DIR"):
        return None
    path = resolve_data_dir(None)
    return path if (path / ptb.FOLDER / "ptb.train.txt").is_file() else None


@pytest.mark.real_data
@pytest.mark.skipif(real_dir() is None, reason="NORMEXP_DATA_DIR does not hold PTB")
def test_the_md5s_are_the_canonical_ones_and_the_files_match_them():
    # The data folder's ptb.MD5SUMS (md5sum format) holds the canonical md5s of simple-examples.
    sums = real_dir() / "ptb.MD5SUMS"
    if sums.is_file():
        listed = dict(reversed(line.split()) for line in sums.read_text().splitlines() if line)
        assert {Path(n).name: m for n, m in listed.items()} == ptb.MD5
    for name, md5 in ptb.MD5.items():  # verified by content
        assert hashlib.md5((real_dir() / "ptb" / name).read_bytes()).hexdigest() == md5, name


@pytest.mark.real_data
@pytest.mark.skipif(real_dir() is None, reason="NORMEXP_DATA_DIR does not hold PTB")
def test_real_ptb():
    ptb.clear_cache()
    word = load_ptb(real_dir(), "word")
    assert len(word.vocab) == 10_000
    assert (word.train.numel(), word.valid.numel(), word.test.numel()) == (929_589, 73_760, 82_430)
    char = load_ptb(real_dir(), "char")
    assert len(char.vocab) == 50
    assert "_" in char.vocab and "<eos>" in char.vocab
    # One <eos> per line, as at word level (42,068 training lines).
    assert int((char.train == char.vocab.index("<eos>")).sum()) == 42_068
