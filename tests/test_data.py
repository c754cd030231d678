"""Reading, encoding and batching text; downloading with checksums."""

import hashlib
import urllib.error

import numpy as np
import pytest
import torch

from rnnexp import download
from rnnexp.data import CharVocab, TBPTTBatches, load_corpus, read_text
from rnnexp.download import RemoteFile, fetch
from rnnexp.errors import DataError


def test_consecutive_batches_continue_each_stream_and_targets_are_shifted_inputs():
    tokens = np.arange(203) % 251  # distinct enough to recognise every position
    batches = TBPTTBatches(tokens.astype(np.uint8), batch_size=4, unroll=6)
    stream_len = 203 // 4  # 50 tokens per stream, stream b starts at b * 50
    assert len(batches) == (stream_len - 1) // 6
    for k in range(len(batches)):
        x, y = batches[k]
        assert x.shape == y.shape == (6, 4) and x.dtype == torch.long
        for b in range(4):
            start = b * stream_len + k * 6
            assert x[:, b].tolist() == tokens[start : start + 6].tolist()  # stream b continues
            assert y[:, b].tolist() == tokens[start + 1 : start + 7].tolist()  # next token
        if k > 0:
            previous_x, previous_y = batches[k - 1]
            # The first input of batch k is the last target of batch k-1, in every stream.
            assert torch.equal(x[0], previous_y[-1])


def test_too_small_corpus_says_how_large_it_must_be():
    with pytest.raises(DataError, match=r"too few for batch_size=8 x unroll=10: it needs at least 88"):
        TBPTTBatches(np.zeros(50, dtype=np.uint8), batch_size=8, unroll=10, split="train")


def test_vocab_round_trips_any_alphabet_in_one_byte_per_character():
    text = "Привет, мир! 你好 — naïve café\n"
    vocab = CharVocab.from_text(text)
    tokens = vocab.encode(text)
    assert tokens.dtype == np.uint8 and len(tokens) == len(text)
    assert vocab.decode(tokens) == text
    with pytest.raises(DataError, match="not in the vocabulary"):
        vocab.encode("z")


def test_read_text_errors_are_clear(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_text(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(DataError, match="is empty"):
        read_text(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("abc caf\xe9".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8 text \\(bad byte at offset 7\\)"):
        read_text(tmp_path / "latin1.txt")


def test_text_file_splits_in_file_order(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abcdefghij" * 10)
    corpus = load_corpus({"name": "text_file", "path": str(path), "val_fraction": 0.1, "test_fraction": 0.2}, tmp_path)
    text = corpus.vocab.decode(np.concatenate([corpus.train, corpus.val, corpus.test]))
    assert text == "abcdefghij" * 10
    assert (len(corpus.train), len(corpus.val), len(corpus.test)) == (70, 10, 20)


@pytest.fixture
def remote(tmp_path, monkeypatch):
    """A 'remote' file served from a file:// URL, so the real download code runs offline."""
    source = tmp_path / "server" / "corpus.txt"
    source.parent.mkdir()
    source.write_bytes(b"hello world\n" * 1000)
    entry = RemoteFile(source.as_uri(), hashlib.sha256(source.read_bytes()).hexdigest(), "corpus.txt")
    monkeypatch.setitem(download.REMOTE_FILES, "toy", entry)
    return entry


def test_download_verifies_and_renames(tmp_path, remote):
    path = fetch("toy", tmp_path / "data")
    assert path == tmp_path / "data" / "corpus.txt"
    assert path.read_bytes() == b"hello world\n" * 1000
    assert not (tmp_path / "data" / "corpus.txt.part").exists()


def test_checksum_mismatch_leaves_no_file_under_the_final_name(tmp_path, remote, monkeypatch):
    monkeypatch.setitem(download.REMOTE_FILES, "toy", RemoteFile(remote.url, "0" * 64, "corpus.txt"))
    with pytest.raises(DataError, match="expected 0000"):
        fetch("toy", tmp_path / "data")
    assert list((tmp_path / "data").iterdir()) == []


def test_corrupt_local_file_is_refused(tmp_path, remote):
    (tmp_path / "corpus.txt").write_bytes(b"hello world\n" * 999)
    with pytest.raises(DataError, match="delete it to download it again"):
        fetch("toy", tmp_path)


def test_offline_error_names_the_url_and_the_manual_path(tmp_path, remote, monkeypatch):
    def no_network(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(download.urllib.request, "urlopen", no_network)
    with pytest.raises(DataError) as error:
        fetch("toy", tmp_path / "data")
    message = str(error.value)
    assert remote.url in message and str(tmp_path / "data" / "corpus.txt") in message
    assert "\n" not in message


def test_data_dir_comes_from_setting_then_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RNNEXP_DATA_DIR", str(tmp_path / "env"))
    assert download.resolve_data_dir(str(tmp_path / "cfg")) == tmp_path / "cfg"
    assert download.resolve_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv("RNNEXP_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert download.resolve_data_dir(None) == tmp_path / "cache" / "rnnexp"
