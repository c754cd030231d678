"""Reading, tokenizing, caching and batching corpora; downloading with checksums.

Each corpus format has a tiny stand-in here (a small text8.zip, a WikiText-style folder and zip,
PTB's three files, a non-Latin UTF-8 file) that runs through the real loading code."""

import hashlib
import itertools
import urllib.error
import zipfile

import numpy as np
import pytest
import torch

from rnnexp import data as data_module
from rnnexp import download
from rnnexp.data import TBPTTBatches, load_corpus, read_source
from rnnexp.download import RemoteFile, fetch
from rnnexp.errors import DataError
from rnnexp.tokenizers import CharVocab, WordVocab, normalize_text8
from tests.helpers import compose_config

CHAR = {"name": "char"}
WORD = {"name": "word", "vocab_size": None, "line_end": "<eos>", "line_start": None, "lowercase": False}


def data_config(name: str) -> dict:
    """The `data` group's shipped config for `name`, as train.py would get it."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(compose_config(f"data={name}").data, resolve=True)


def serve(monkeypatch, tmp_path, key: str, content: bytes, filename: str) -> RemoteFile:
    """Make REMOTE_FILES[key] a file:// URL to `content`, so the real download code runs offline."""
    source = tmp_path / "server" / filename
    source.parent.mkdir(exist_ok=True)
    source.write_bytes(content)
    entry = RemoteFile(source.as_uri(), hashlib.sha256(content).hexdigest(), filename)
    monkeypatch.setitem(download.REMOTE_FILES, key, entry)
    return entry


def zipped(members: dict[str, bytes]) -> bytes:
    import io

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


# --- batching ----------------------------------------------------------------------------------


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
            # The first input of batch k is the last target of batch k-1, in every stream.
            assert torch.equal(x[0], batches[k - 1][1][-1])


def test_evaluation_batches_hold_the_training_windows_end_to_end_and_score_the_same(tiny_text):
    tokens = (np.arange(203) % 251).astype(np.uint8)
    one, five = TBPTTBatches(tokens, 4, unroll=6), TBPTTBatches(tokens, 4, unroll=6, windows_per_batch=5)
    assert len(one) == 8 and [len(five[k][0]) for k in range(len(five))] == [30, 18]  # 5 windows, then the 3 left
    for side in (0, 1):  # the same windows, inputs and targets, none dropped and none added
        assert torch.equal(torch.cat([five[k][side] for k in range(len(five))]),
                           torch.cat([one[k][side] for k in range(len(one))]))
    ragged = TBPTTBatches(tokens, 4, unroll=6, windows_per_batch=3)
    assert [len(ragged[k][0]) for k in range(len(ragged))] == [18, 18, 12]
    # A task validates a batch of several windows as it would validate each window on its own.
    from rnnexp.data import StreamLoader
    from rnnexp.tasks.language_model import LanguageModelTask
    from rnnexp.train import resolve
    from tests.helpers import tiny_run_config

    config = resolve(tiny_run_config(tiny_text, tiny_text.parent / "run", "unroll=6"))
    torch.manual_seed(0)
    task = LanguageModelTask(config, [chr(i) for i in range(251)])
    scores = [task.evaluate(StreamLoader(batches)) for batches in (one, ragged)]
    assert scores[0]["loss"] == pytest.approx(scores[1]["loss"], rel=1e-6)


def test_too_small_corpus_says_how_large_it_must_be():
    with pytest.raises(DataError, match=r"too few for batch_size=8 x unroll=10: it needs at least 88"):
        TBPTTBatches(np.zeros(50, dtype=np.uint8), batch_size=8, unroll=10, split="train")
    with pytest.raises(DataError, match=r"^the train split has 5 tokens"):  # the split named by default
        TBPTTBatches(np.zeros(5, dtype=np.uint8), batch_size=1, unroll=10)


@pytest.mark.parametrize(("stream_len", "windows"), [(7, 1), (12, 1), (13, 2), (18, 2), (19, 3)])
def test_a_stream_of_n_tokens_holds_every_whole_window_that_has_its_next_token(stream_len, windows):
    """unroll 6: a window needs 7 tokens (6 inputs, the 6 targets shifted by one), the next one 6 more."""
    batches = TBPTTBatches(np.arange(2 * stream_len, dtype=np.int64) % 251, batch_size=2, unroll=6)
    assert len(batches) == windows
    assert batches[windows - 1][1][-1, 0].item() == windows * 6  # the last target is token 6k of stream 0


def test_a_single_process_is_rank_0_of_1_and_ranks_share_the_streams_without_overlap():
    from rnnexp.data import process_rank, streams_of_rank

    assert process_rank() == (0, 1)
    shares = [streams_of_rank(8, rank, 4) for rank in range(4)]
    assert [list(range(8))[share] for share in shares] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert streams_of_rank(8, 0, 1) == slice(0, 8)
    with pytest.raises(DataError, match=r"^batch_size=6 streams cannot be shared by 4 processes: "
                                        r"give a batch_size divisible by 4$"):
        streams_of_rank(6, 0, 4)


def test_the_training_stream_is_a_function_of_the_step_in_batches_that_end_on_multiples():
    from rnnexp.data import TrainStream

    batches = TBPTTBatches((np.arange(203) % 251).astype(np.uint8), batch_size=4, unroll=6)  # 8 windows a pass
    windows = [batches[k] for k in range(8)]

    def take(stream, n):
        return list(itertools.islice(iter(stream), n))

    stream = TrainStream(batches, steps_per_batch=3)
    first = take(stream, 4)  # windows 0-2, 3-5, 6-8 (8 is the next pass's first), 9-11
    assert [len(starts) for _, _, starts in first] == [3, 3, 3, 3]
    assert [starts for _, _, starts in first] == [(True, False, False), (False,) * 3, (False, False, True),
                                                  (False,) * 3]
    for b, (inputs, targets, _) in enumerate(first):
        for j, (x, y) in enumerate(zip(inputs.split(6), targets.split(6), strict=True)):
            k = (3 * b + j) % 8  # the run's window 3b + j is the corpus's window (3b + j) mod 8
            assert torch.equal(x, windows[k][0]) and torch.equal(y, windows[k][1])
    resumed = TrainStream(batches, steps_per_batch=3)
    resumed.start_at(7)  # a resume at step 7: a first batch of 2 steps realigns on 9
    again = take(resumed, 2)
    assert [starts for _, _, starts in again] == [(False, True), (False,) * 3]
    assert torch.equal(again[0][0], torch.cat([windows[7][0], windows[0][0]]))
    assert torch.equal(again[1][0], first[3][0])
    assert len(stream) >= 2**62  # Lightning never ends an epoch of it: training stops at max_steps or time


def test_under_ddp_the_stream_loader_yields_only_its_ranks_streams(monkeypatch):
    from rnnexp.data import StreamLoader, TrainStream

    batches = TBPTTBatches((np.arange(203) % 251).astype(np.uint8), batch_size=4, unroll=6)
    monkeypatch.setattr(data_module, "process_rank", lambda: (1, 2))  # the second of two processes
    shares = list(StreamLoader(batches))
    assert len(shares) == len(batches)
    for k, (x, y) in enumerate(shares):
        assert torch.equal(x, batches[k][0][:, 2:4]) and torch.equal(y, batches[k][1][:, 2:4])
    for k, (x, y, _) in enumerate(itertools.islice(iter(TrainStream(batches)), len(batches))):
        assert torch.equal(x, batches[k][0][:, 2:4]) and torch.equal(y, batches[k][1][:, 2:4])


# --- tokenizers --------------------------------------------------------------------------------


def test_char_vocab_round_trips_any_alphabet_in_one_byte_per_character():
    text = "Привет, мир! 你好 — naïve café\n"
    vocab = CharVocab.build([text])
    tokens = vocab.encode(text)
    assert tokens.dtype == np.uint8 and len(tokens) == len(text)
    assert vocab.decode(tokens) == text
    with pytest.raises(DataError, match="not in the vocabulary"):
        vocab.encode("z")


def test_word_vocab_keeps_the_most_frequent_words_and_marks_lines():
    vocab = WordVocab.build(["b a b c\nc b\n"], vocab_size=4, line_end="</s>", line_start="<s>")
    assert vocab.symbols == ["<unk>", "</s>", "<s>", "b"]  # specials, then by frequency
    assert vocab.decode(vocab.encode("b c\nb")) == "b <unk>\nb"
    assert list(vocab.words("b c\nb")) == ["<s>", "b", "c", "</s>", "<s>", "b"]
    all_words = WordVocab.build(["b a b c\nc b\n"], line_end="<eos>")
    assert all_words.symbols == ["<unk>", "<eos>", "b", "c", "a"]


def test_text8_normalisation():
    text = "Héllo, WÖRLD!\tIn 1984 ... naïve\n"
    assert normalize_text8(text) == "hello world in one nine eight four naive"


# --- reading files -----------------------------------------------------------------------------


def test_errors_inside_a_zip_name_the_zip_and_its_member(tmp_path):
    archive = tmp_path / "corpus.zip"
    archive.write_bytes(zipped({"empty": b"", "latin1": "caf\xe9".encode("latin-1")}))
    with pytest.raises(DataError, match=f"^zip file {archive} has no member 'text8'$"):
        read_source(archive, "text8")
    with pytest.raises(DataError, match=f"^data file {archive}:empty is empty$"):
        read_source(archive, "empty")
    with pytest.raises(DataError, match=f"^data file {archive}:latin1 is not UTF-8"):
        read_source(archive, "latin1")


def test_a_text_file_that_is_not_there_or_a_folder_without_its_splits_is_refused(tmp_path):
    config = {"name": "text_file", "val_fraction": 0.1, "test_fraction": 0.0, "normalize": None}
    with pytest.raises(DataError, match=f"^data file {tmp_path / 'none.txt'} does not exist$"):
        load_corpus({**config, "path": str(tmp_path / "none.txt")}, CHAR, tmp_path, tmp_path / "cache")
    for present in ("train", "valid"):
        folder = tmp_path / present
        folder.mkdir()
        (folder / f"{present}.txt").write_text("some text\n" * 20)
        with pytest.raises(DataError, match=f"^folder {folder} needs train.txt and valid.txt"):
            load_corpus({**config, "path": str(folder)}, CHAR, tmp_path, tmp_path / "cache")


def test_read_errors_are_clear(tmp_path):
    """Each names the file itself (a zip's member is named path:member: the test above)."""
    with pytest.raises(DataError) as refused:
        read_source(tmp_path / "missing.txt")
    assert str(refused.value) == f"data file {tmp_path / 'missing.txt'} does not exist"
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(DataError) as refused:
        read_source(tmp_path / "empty.txt")
    assert str(refused.value) == f"data file {tmp_path / 'empty.txt'} is empty"
    (tmp_path / "latin1.txt").write_bytes("abc caf\xe9".encode("latin-1"))
    with pytest.raises(DataError) as refused:
        read_source(tmp_path / "latin1.txt")
    assert str(refused.value) == f"data file {tmp_path / 'latin1.txt'} is not UTF-8 text (bad byte at offset 7)"


def test_text_file_splits_in_file_order(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abcdefghij" * 10)
    config = {"name": "text_file", "path": str(path), "val_fraction": 0.1, "test_fraction": 0.2, "normalize": None}
    corpus = load_corpus(config, CHAR, tmp_path, tmp_path / "cache")
    text = corpus.vocab.decode(np.concatenate([corpus.train, corpus.valid, corpus.test]))
    assert text == "abcdefghij" * 10
    assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == (70, 10, 20)


def test_text_file_with_any_alphabet_and_the_text8_normalisation(tmp_path):
    path = tmp_path / "mixed.txt"
    path.write_text("Ἐν ἀρχῇ ἦν ὁ λόγος. 東京タワー. Zoë 7\n" * 20, encoding="utf-8")
    config = {"name": "text_file", "path": str(path), "val_fraction": 0.1, "test_fraction": 0.0, "normalize": None}
    corpus = load_corpus(config, CHAR, tmp_path, tmp_path / "cache")
    assert "東" in corpus.vocab.symbols and corpus.train.dtype == np.uint8
    normalized = load_corpus({**config, "normalize": "text8"}, CHAR, tmp_path, tmp_path / "cache")
    assert set(normalized.vocab.symbols) <= set("abcdefghijklmnopqrstuvwxyz ")
    assert normalized.vocab.decode(normalized.train[:15]) == "zoe seven zoe s"


def test_text_file_folder_with_split_files_and_word_tokens(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "train.txt").write_text("the cat sat\nthe dog sat\n")
    (folder / "valid.txt").write_text("the bird sat\n")
    config = {"name": "text_file", "path": str(folder), "val_fraction": 0.1, "test_fraction": 0.0, "normalize": None}
    corpus = load_corpus(config, WORD, tmp_path, tmp_path / "cache")
    assert corpus.vocab.decode(corpus.valid) == "the <unk> sat\n"  # "bird" is not in the training split
    assert len(corpus.test) == 0


# --- the named corpora, as stand-ins -----------------------------------------------------------


def test_text8_reads_its_zip_with_the_standard_split(tmp_path, monkeypatch):
    text = ("anarchism originated as a term of abuse first used against early working class radicals " * 30)[:2000]
    serve(monkeypatch, tmp_path, "text8", zipped({"text8": text.encode()}), "text8.zip")
    corpus = load_corpus(data_config("text8"), CHAR, tmp_path / "data", tmp_path / "cache")
    assert (tmp_path / "data" / "text8.zip").exists()
    assert (len(corpus.train), len(corpus.valid), len(corpus.test)) == (1800, 100, 100)  # 90% / 5% / 5%
    assert corpus.vocab.decode(corpus.test) == text[1900:]


def test_enwik8_is_modelled_byte_by_byte(tmp_path, monkeypatch):
    content = "<page><title>Zürich</title> ü é 東京</page>\n".encode() * 50
    serve(monkeypatch, tmp_path, "enwik8", zipped({"enwik8": content}), "enwik8.zip")
    config = compose_config("data=enwik8")
    assert config.tokenizer.name == "byte"
    corpus = load_corpus(data_config("enwik8"), {"name": "byte"}, tmp_path / "data", tmp_path / "cache")
    assert len(corpus.train) + len(corpus.valid) + len(corpus.test) == len(content)  # bytes, not characters
    assert bytes(corpus.vocab.symbols[t] for t in corpus.train[:30]) == content[:30]


def test_wikitext_folder_is_read_and_missing_files_come_from_its_zip(tmp_path, monkeypatch):
    splits = {"train": " = Valkyria = \n the game <unk> began \n", "valid": " the game \n", "test": " = Tower = \n"}
    members = {f"wikitext-2/wiki.{s}.tokens": t.encode() for s, t in splits.items()}
    serve(monkeypatch, tmp_path, "wikitext2", zipped(members), "wikitext-2-v1.zip")
    config = compose_config("data=wikitext2")
    assert config.tokenizer.name == "word"
    corpus = load_corpus(data_config("wikitext2"), WORD, tmp_path / "data", tmp_path / "cache")
    assert (tmp_path / "data" / "wikitext-2" / "valid.txt").read_text() == splits["valid"]
    assert corpus.vocab.decode(corpus.train) == "= Valkyria =\nthe game <unk> began\n"
    assert corpus.vocab.decode(corpus.test) == "= <unk> =\n"  # "Tower" is not a training word


def test_ptb_downloads_its_three_files(tmp_path, monkeypatch):
    for split in ("train", "valid", "test"):
        serve(monkeypatch, tmp_path, f"ptb_{split}", f" a {split} line \n".encode(), f"ptb.{split}.txt")
    corpus = load_corpus(data_config("ptb"), WORD, tmp_path / "data", tmp_path / "cache")
    assert corpus.vocab.decode(corpus.valid) == "a <unk> line\n"
    assert sorted(p.name for p in (tmp_path / "data" / "ptb").iterdir()) == ["test.txt", "train.txt", "valid.txt"]


def test_a_corrupt_zip_is_refused(tmp_path, monkeypatch):
    whole = zipped({"text8": b"some text " * 500})
    serve(monkeypatch, tmp_path, "text8", whole[: len(whole) // 2], "text8.zip")  # truncated, checksum matches
    with pytest.raises(DataError, match="text8.zip is truncated or corrupt .*; delete it to download it again"):
        load_corpus(data_config("text8"), CHAR, tmp_path / "data", tmp_path / "cache")


# --- the cache ---------------------------------------------------------------------------------


def test_cache_is_reused_and_invalidated_by_content_or_settings(tmp_path, monkeypatch):
    path = tmp_path / "t.txt"
    path.write_text("one two three\n" * 50)
    config = {"name": "text_file", "path": str(path), "val_fraction": 0.1, "test_fraction": 0.0, "normalize": None}
    encodings = []
    real_encode = data_module._encode_into
    monkeypatch.setattr(data_module, "_encode_into", lambda *a: (encodings.append(a[0]), real_encode(*a)))

    first = load_corpus(config, CHAR, tmp_path, tmp_path / "cache")
    second = load_corpus(config, CHAR, tmp_path, tmp_path / "cache")
    assert len(encodings) == 1  # the second load read the cache
    assert isinstance(second.train, np.memmap)  # mapped from disk, not held in memory
    assert np.array_equal(first.train, second.train)

    load_corpus(config, WORD, tmp_path, tmp_path / "cache")  # another tokenizer
    load_corpus({**config, "val_fraction": 0.2}, CHAR, tmp_path, tmp_path / "cache")  # another split
    path.write_text("one two four\n" * 50)  # another content
    changed = load_corpus(config, CHAR, tmp_path, tmp_path / "cache")
    assert len(encodings) == 4
    assert "f" in changed.vocab.symbols


def test_the_cache_is_keyed_by_content_and_settings_not_by_where_the_file_is_or_key_order(tmp_path):
    from rnnexp.data import cache_key, locate_sources

    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text("the same text\n" * 20)
    config = {"name": "text_file", "val_fraction": 0.1, "test_fraction": 0.0, "normalize": None}
    keys = [cache_key(locate_sources(c, tmp_path), c, CHAR) for c in (
        {**config, "path": str(tmp_path / "a.txt")},
        {**config, "path": str(tmp_path / "b.txt")},  # a copy elsewhere
        {"path": str(tmp_path / "a.txt"), **dict(reversed(config.items()))},  # the keys in another order
        {**config, "path": str(tmp_path / "a.txt"), "folder": "elsewhere"},  # where a download would go
    )]
    assert len(set(keys)) == 1


def test_an_incomplete_cache_entry_or_a_partial_folder_of_this_process_is_replaced(tmp_path):
    import os

    from rnnexp.data import cache_key, locate_sources

    path = tmp_path / "t.txt"
    path.write_text("one two three\n" * 50)
    config = {"name": "text_file", "path": str(path), "val_fraction": 0.1, "test_fraction": 0.0, "normalize": None}
    entry = tmp_path / "cache" / cache_key(locate_sources(config, tmp_path), config, CHAR)
    entry.mkdir(parents=True)
    (entry / "train.npy").write_bytes(b"torn")  # an attempt killed before it wrote vocab.json
    partial = entry.with_name(f"{entry.name}.part{os.getpid()}")
    partial.mkdir()  # an earlier attempt of this very process (a notebook), interrupted
    corpus = load_corpus(config, CHAR, tmp_path, tmp_path / "cache")
    assert corpus.vocab.decode(corpus.train) == ("one two three\n" * 50)[:len(corpus.train)]
    assert sorted(p.name for p in entry.iterdir()) == ["test.npy", "train.npy", "valid.npy", "vocab.json"]
    assert not partial.exists()


def test_a_load_that_waits_for_another_encoding_the_same_corpus_reads_its_cache(tmp_path, monkeypatch):
    """The double check under the lock: the waiting load finds the entry the first one made."""
    import threading

    path = tmp_path / "t.txt"
    path.write_text("one two three\n" * 50)
    config = {"name": "text_file", "path": str(path), "val_fraction": 0.1, "test_fraction": 0.0, "normalize": None}
    real_encode, started, encodings = data_module._encode_into, threading.Event(), []

    def slow_encode(*args):
        encodings.append(args[0])
        started.set()
        threading.Event().wait(0.3)  # the second load arrives meanwhile and waits on the lock
        real_encode(*args)

    monkeypatch.setattr(data_module, "_encode_into", slow_encode)
    first = threading.Thread(target=load_corpus, args=(config, CHAR, tmp_path, tmp_path / "cache"))
    first.start()
    started.wait(10)
    second = load_corpus(config, CHAR, tmp_path, tmp_path / "cache")
    first.join()
    assert len(encodings) == 1 and len(second.train) > 0


CONCURRENT_LOAD = """
import sys, time
from pathlib import Path
from rnnexp import data
real_encode = data._encode_into
def slow_encode(*args):  # a long encoding, so that the other process arrives while it runs
    print("encoding", flush=True)
    time.sleep(1.0)
    real_encode(*args)
data._encode_into = slow_encode
go = Path(sys.argv[1]) / "go"
while not go.exists():
    time.sleep(0.01)
corpus = data.load_corpus({"name": "text_file", "path": sys.argv[2], "val_fraction": 0.1, "test_fraction": 0.0,
                           "normalize": None}, {"name": "char"}, Path(sys.argv[1]), Path(sys.argv[1]) / "cache")
print(int(corpus.train.sum()), len(corpus.vocab))
"""


def test_two_processes_building_the_same_cache_at_once_both_succeed(tmp_path):
    """Jobs of a parallel sweep start together on a corpus never encoded: one encodes, the other
    waits and reads its result; no torn file, no crash, one cache entry."""
    import subprocess
    import sys

    from tests.helpers import REPO, make_text

    text = tmp_path / "t.txt"
    text.write_text(make_text(3000))
    jobs = [subprocess.Popen([sys.executable, "-c", CONCURRENT_LOAD, str(tmp_path), str(text)], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    (tmp_path / "go").touch()
    outputs = [job.communicate(timeout=120) for job in jobs]
    assert [job.returncode for job in jobs] == [0, 0], [err[-2000:] for _, err in outputs]
    results = [out.splitlines()[-1] for out, _ in outputs]
    assert results[0] == results[1]  # the same tokens
    assert sum(out.count("encoding") for out, _ in outputs) == 1  # the second waited for the first
    entries = [p for p in (tmp_path / "cache").iterdir() if not p.name.endswith(".lock")]
    assert len(entries) == 1 and entries[0].is_dir()  # one entry, no partial folder left


# --- downloads ---------------------------------------------------------------------------------


@pytest.fixture
def remote(tmp_path, monkeypatch):
    return serve(monkeypatch, tmp_path, "toy", b"hello world\n" * 1000, "corpus.txt")


def test_download_verifies_and_renames(tmp_path, remote):
    path = fetch("toy", tmp_path / "data")
    assert path == tmp_path / "data" / "corpus.txt"
    assert path.read_bytes() == b"hello world\n" * 1000
    assert not (tmp_path / "data" / "corpus.txt.part").exists()


def test_checksum_mismatch_leaves_no_file_under_the_final_name(tmp_path, remote, monkeypatch):
    monkeypatch.setitem(download.REMOTE_FILES, "toy", RemoteFile(remote.url, "0" * 64, "corpus.txt"))
    with pytest.raises(DataError, match="expected 0000"):
        fetch("toy", tmp_path / "data")
    assert [p.name for p in (tmp_path / "data").iterdir()] == [".corpus.txt.lock"]  # only the lock of parallel jobs


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


def test_every_named_corpus_has_a_url_and_a_sha256():
    for name, remote in download.REMOTE_FILES.items():
        assert remote.url.startswith(("http://", "https://")), name
        assert len(remote.sha256) == 64 and int(remote.sha256, 16) >= 0, name


def test_data_dir_comes_from_setting_then_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("RNNEXP_DATA_DIR", str(tmp_path / "env"))
    assert download.resolve_data_dir(str(tmp_path / "cfg")) == tmp_path / "cfg"
    assert download.resolve_data_dir(None) == tmp_path / "env"
    monkeypatch.delenv("RNNEXP_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert download.resolve_data_dir(None) == tmp_path / "cache" / "rnnexp"


def test_an_interrupted_download_resumes_from_its_partial_file(tmp_path, monkeypatch):
    """A local HTTP server that honours Range requests; the first half is already in `.part`."""
    import http.server
    import threading

    content = bytes(range(256)) * 400
    requested_ranges = []

    class RangeHandler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            start = int(self.headers.get("Range", "bytes=0-")[6:].rstrip("-"))
            requested_ranges.append(start)
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(content) - start))
            self.end_headers()
            self.wfile.write(content[start:])

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), RangeHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/corpus.bin"
        monkeypatch.setitem(download.REMOTE_FILES, "toy",
                            RemoteFile(url, hashlib.sha256(content).hexdigest(), "corpus.bin"))
        (tmp_path / "corpus.bin.part").write_bytes(content[:40000])
        path = fetch("toy", tmp_path)
    finally:
        server.shutdown()
        server.server_close()  # its listening socket (else a ResourceWarning)
    assert requested_ranges == [40000]  # only the missing part was asked for
    assert path.read_bytes() == content and not (tmp_path / "corpus.bin.part").exists()
