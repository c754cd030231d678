"""Text corpora as token streams for truncated backpropagation through time (TBPTT).

A corpus is read from the data directory (downloaded there first if missing), tokenized once and
cached as one compact array per split; later runs map the cached arrays from disk. Each split is
cut into `batch_size` parallel streams (the "cursors" of the text8 study): batch k holds the k-th
window of `unroll` tokens of every stream, so batch k+1 continues batch k in each column and the
hidden state can be carried from one to the next. In distributed training (trainer=ddp) each of N
processes takes its own batch_size / N of the streams (`StreamLoader`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from rnnexp.download import DownloadFailed, exclusive, fetch, sha256_of
from rnnexp.errors import DataError
from rnnexp.tokenizers import Vocab, build_vocab, normalize_text8, vocab_from_symbols

SPLITS = ("train", "valid", "test")


@dataclass
class Corpus:
    vocab: Vocab
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray


def read_source(path: Path, member: str | None = None, as_bytes: bool = False) -> str | bytes:
    """A data file's text (or raw bytes), or that of `member` inside the zip file `path`."""
    name = f"{path}:{member}" if member else str(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    if member is None:
        raw = path.read_bytes()
    else:
        try:
            with zipfile.ZipFile(path) as archive:
                raw = archive.read(member)
        except KeyError:
            raise DataError(f"zip file {path} has no member {member!r}") from None
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
            raise DataError(f"zip file {path} is truncated or corrupt ({e}); delete it to download it again") from None
    if not raw:
        raise DataError(f"data file {name} is empty")
    if as_bytes:
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"data file {name} is not UTF-8 text (bad byte at offset {e.start})") from None


def _fetch_split_files(data: dict[str, Any], folder: Path) -> None:
    """Put a split-file corpus's missing files in `folder`: downloaded, or extracted from the
    downloaded zip, each written under a temporary name and renamed."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, filename in data["files"].items():
        target = folder / filename
        if target.exists():
            continue
        remote = data["remote"][split] if isinstance(data["remote"], dict) else data["remote"]
        source = fetch(remote, folder.parent)
        partial = target.with_name(target.name + ".part")
        if data.get("members"):
            partial.write_bytes(read_source(source, data["members"][split], as_bytes=True))
        else:
            shutil.copyfile(source, partial)
        os.replace(partial, target)


def locate_sources(data: dict[str, Any], data_dir: Path) -> dict[str, tuple[Path, str | None]]:
    """Where each split's text is: {split: (file, zip member or None)}, or {"all": ...} for a corpus
    in one file that is split by fractions."""
    if data["name"] == "text_file":
        path = Path(data["path"]).expanduser()
        if path.is_dir():  # a folder with train.txt, valid.txt and optionally test.txt
            found = {split: (path / f"{split}.txt", None) for split in SPLITS if (path / f"{split}.txt").exists()}
            if "train" not in found or "valid" not in found:
                raise DataError(f"folder {path} needs train.txt and valid.txt (and may have test.txt)")
            return found
        if not path.is_file():
            raise DataError(f"data file {path} does not exist")
        return {"all": (path, None)}
    if data.get("files"):
        folder = data_dir / data["folder"]
        missing = [split for split, name in data["files"].items() if not (folder / name).exists()]
        if missing:
            try:
                _fetch_split_files(data, folder)
            except DownloadFailed as e:
                if len(missing) == len(data["files"]):
                    raise  # nothing there: the download's error says what to put where
                missing = [split for split, name in data["files"].items() if not (folder / name).exists()]
                raise DataError(_missing_split_files(data, folder, missing, e)) from None
        return {split: (folder / name, None) for split, name in data["files"].items()}
    return {"all": (fetch(data["remote"], data_dir), data.get("member"))}


# Which file to use instead of a missing split's, in order of preference (the hint of the error).
STAND_INS = {"train": ("test", "valid"), "valid": ("test", "train"), "test": ("valid", "train")}


def _missing_split_files(data: dict[str, Any], folder: Path, missing: list[str], error: DownloadFailed) -> str:
    """The one-line error for a folder that has some of a corpus's split files but not all (e.g.
    WikiText-2's valid.txt and test.txt without train.txt) when the rest cannot be downloaded: the
    missing files, and how to train with the files at hand."""
    files = data["files"]
    present = [files[split] for split in files if split not in missing]
    hints = []
    for split in missing:
        stand_in = next((files[other] for other in STAND_INS.get(split, ()) if other in files and other not in missing),
                        present[0])
        hints.append(f"data.files.{split}={stand_in}")
    absent = " or ".join(files[split] for split in missing)
    return (f"data folder {folder} has {' and '.join(present)} but no {absent}, and {error.url} "
            f"(which has {'it' if len(missing) == 1 else 'them'}) "
            f"could not be downloaded ({error.reason}): put {absent} there, or use a file you have: {' '.join(hints)}")


def split_by_fractions(text: str | bytes, val_fraction: float, test_fraction: float) -> dict[str, Any]:
    """Train first, then validation, then test, in file order (as nanoGPT, char-rnn and the
    standard text8 split of 90M/5M/5M do)."""
    n_val, n_test = int(len(text) * val_fraction), int(len(text) * test_fraction)
    n_train = len(text) - n_val - n_test
    return {"train": text[:n_train], "valid": text[n_train : n_train + n_val], "test": text[n_train + n_val :]}


def cache_key(sources: dict[str, tuple[Path, str | None]], data: dict[str, Any], tokenizer: dict[str, Any]) -> str:
    """Changes when a source file's content or any setting that shapes the tokens changes."""
    settings = {k: v for k, v in data.items() if k not in ("path", "folder")}
    described = {split: (sha256_of(path), member) for split, (path, member) in sorted(sources.items())}
    blob = json.dumps([described, settings, tokenizer], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def load_corpus(data: dict[str, Any], tokenizer: dict[str, Any], data_dir: Path, cache_dir: Path) -> Corpus:
    """The corpus named by the `data` config, tokenized as `tokenizer` says: from the cache when
    this exact file and these settings were encoded before, else encoded now and cached."""
    sources = locate_sources(data, data_dir)
    cached = cache_dir / cache_key(sources, data, tokenizer)
    if not (cached / "vocab.json").exists():
        with exclusive(cached):  # parallel jobs on a new corpus: one encodes, the others wait for it
            if not (cached / "vocab.json").exists():
                _encode_into(cached, sources, data, tokenizer)
    vocab = vocab_from_symbols(tokenizer, json.loads((cached / "vocab.json").read_text(encoding="utf-8")))
    # Memory-mapped: a 100 MB corpus is read from the page cache, not copied into the process.
    splits = {split: np.load(cached / f"{split}.npy", mmap_mode="r") for split in SPLITS}
    return Corpus(vocab, splits["train"], splits["valid"], splits["test"])


def _encode_into(cached: Path, sources: dict[str, tuple[Path, str | None]], data: dict[str, Any],
                 tokenizer: dict[str, Any]) -> None:
    from rich.progress import Progress

    as_bytes = tokenizer["name"] == "byte"
    texts = {split: read_source(path, member, as_bytes) for split, (path, member) in sources.items()}
    if data.get("normalize") == "text8":
        texts = {split: normalize_text8(text) for split, text in texts.items()}
    if "all" in texts:
        texts = split_by_fractions(texts["all"], data["val_fraction"], data["test_fraction"])
    texts.setdefault("test", texts["train"][:0])

    vocab = build_vocab(tokenizer, [texts["train"]], list(texts.values()))
    partial = cached.with_name(cached.name + f".part{os.getpid()}")
    partial.mkdir(parents=True, exist_ok=True)
    with Progress(transient=True) as bar:
        task = bar.add_task("encoding the corpus (once; cached)", total=sum(len(t) for t in texts.values()))
        for split in SPLITS:
            tokens = vocab.encode(texts[split], progress=lambda n: bar.advance(task, n))
            np.save(partial / f"{split}.npy", tokens)
    (partial / "vocab.json").write_text(json.dumps(vocab.symbols, ensure_ascii=False), encoding="utf-8")
    if cached.exists():
        shutil.rmtree(cached)  # an incomplete earlier attempt
    os.replace(partial, cached)


class TBPTTBatches:
    """Item k is `(inputs, targets)`, each `(unroll, batch_size)` (sequence-first); targets are the
    inputs shifted by one token, and item k+1 continues item k in every column.

    With `windows_per_batch=K` an item holds K consecutive windows (K * unroll steps; the last item
    what is left of them): validation and test run each window in turn inside one batch, which saves
    K - 1 of Lightning's per-batch costs and measures the very same windows."""

    def __init__(self, tokens: np.ndarray, batch_size: int, unroll: int, split: str = "train",
                 windows_per_batch: int = 1) -> None:
        stream_len = len(tokens) // batch_size
        self.unroll = unroll
        self.num_windows = (stream_len - 1) // unroll  # every window needs one more token for its targets
        if self.num_windows < 1:
            need = batch_size * (unroll + 1)
            raise DataError(
                f"the {split} split has {len(tokens)} tokens, too few for batch_size={batch_size} x "
                f"unroll={unroll}: it needs at least {need}"
            )
        self.windows_per_batch = windows_per_batch
        self.num_batches = -(-self.num_windows // windows_per_batch)
        # Row b is stream b, the b-th contiguous piece of the corpus: a view, no copy (the tokens
        # may be a memory-mapped file); each batch copies only its own window.
        self.streams = np.asarray(tokens[: stream_len * batch_size]).reshape(batch_size, stream_len)

    def __len__(self) -> int:
        return self.num_batches

    def __getitem__(self, k: int) -> tuple[Tensor, Tensor]:
        return self.window(k)

    def window(self, k: int, streams: slice = slice(None)) -> tuple[Tensor, Tensor]:
        """Batch k of the chosen streams (rows), by default of all of them."""
        start = k * self.windows_per_batch * self.unroll
        end = min((k + 1) * self.windows_per_batch, self.num_windows) * self.unroll
        window = self.streams[streams, start : end + 1]
        window = torch.from_numpy(np.ascontiguousarray(window.T)).long()
        return window[:-1], window[1:]


def process_rank() -> tuple[int, int]:
    """(this process's rank, number of processes) in distributed training; (0, 1) in a single one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def streams_of_rank(batch_size: int, rank: int, processes: int) -> slice:
    """The streams (batch columns) rank `rank` of `processes` trains on: its own contiguous share, so
    no two ranks see the same text, and together they see exactly what one process would."""
    if batch_size % processes:
        raise DataError(f"batch_size={batch_size} streams cannot be shared by {processes} processes: "
                        f"give a batch_size divisible by {processes}")
    share = batch_size // processes
    return slice(rank * share, (rank + 1) * share)


# The length a TrainStream reports to Lightning: it never ends an epoch (training stops at max_steps,
# max_time, early stopping or a signal); a known length keeps Lightning from fetching a batch ahead.
ENDLESS = 2**62


class TrainStream:
    """The training windows of a TBPTTBatches, pass after pass over the corpus, `steps_per_batch`
    windows to a Lightning batch: each window is one optimizer step (`Task.training_step`), and
    Lightning's per-batch cost is paid once per batch.

    Window w of the run (counted across passes: w is the step that trains on it) is window
    w % num_windows of the corpus, so the batches are a function of the step alone: a resume starts at
    its checkpoint's step (`start_at`), and batches end on multiples of `steps_per_batch` (a first,
    shorter batch realigns a resume at another step), where validations, checkpoints and diagnostics
    fall. A batch is `(inputs, targets, starts_pass)`: `(n * unroll, batch_size)` tokens of n <=
    steps_per_batch windows, and for each window whether it is the first of a pass (its hidden state
    starts afresh). Under DDP each process gets only its rank's streams (`streams_of_rank`)."""

    endless = True  # for the progress bar: it counts steps, not batches of an epoch

    def __init__(self, batches: TBPTTBatches, steps_per_batch: int = 1) -> None:
        self.batches, self.steps_per_batch = batches, steps_per_batch
        self.first_window = 0

    def __len__(self) -> int:
        return ENDLESS

    def start_at(self, window: int) -> None:
        """The next iteration starts at this window of the run (a resumed run's step)."""
        self.first_window = window

    def __iter__(self):
        streams = streams_of_rank(self.batches.streams.shape[0], *process_rank())
        window, per_batch = self.first_window, self.steps_per_batch
        while True:
            end = (window // per_batch + 1) * per_batch  # the next multiple of steps_per_batch
            yield self.windows(window, end, streams)
            window = end

    def windows(self, start: int, end: int, streams: slice = slice(None)) -> tuple[Tensor, Tensor, tuple[bool, ...]]:
        """Windows [start, end) of the run, as one batch."""
        n, unroll = self.batches.num_windows, self.batches.unroll
        pieces, w = [], start
        while w < end:  # consecutive windows of one pass are one slice of the streams
            first = w % n
            count = min(end - w, n - first)
            pieces.append(self.batches.streams[streams, first * unroll: (first + count) * unroll + 1])
            w += count
        inputs = np.concatenate([p[:, :-1] for p in pieces], axis=1)
        targets = np.concatenate([p[:, 1:] for p in pieces], axis=1)
        return (torch.from_numpy(np.ascontiguousarray(inputs.T)).long(),
                torch.from_numpy(np.ascontiguousarray(targets.T)).long(),
                tuple(w % n == 0 for w in range(start, end)))


class StreamLoader:
    """Yields the batches of a TBPTTBatches in stream order, one pass: validation and test (training
    runs on a TrainStream). Under DDP, each process gets only its rank's streams (`streams_of_rank`);
    Lightning's DistributedSampler does not apply to streams."""

    def __init__(self, batches: TBPTTBatches) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        streams = streams_of_rank(self.batches.streams.shape[0], *process_rank())
        for k in range(len(self.batches)):
            yield self.batches.window(k, streams)
