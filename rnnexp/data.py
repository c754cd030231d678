"""Text corpora as token streams for truncated backpropagation through time (TBPTT).

The corpus is encoded once into a compact array and cut into `batch_size` parallel streams (the
"cursors" of the text8 study). Batch k holds the k-th window of `unroll` tokens of every stream, so
batch k+1 continues batch k in each column and the hidden state can be carried from one to the next.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from rnnexp.download import fetch
from rnnexp.errors import DataError


class CharVocab:
    """The characters of a corpus, sorted; a token is a character's index."""

    def __init__(self, symbols: list[str]) -> None:
        self.symbols = list(symbols)
        self.index = {s: i for i, s in enumerate(self.symbols)}
        # One byte per token while the alphabet fits (a 100 MB corpus stays 100 MB in memory).
        self.dtype = np.uint8 if len(symbols) <= 256 else np.int32

    @classmethod
    def from_text(cls, text: str) -> CharVocab:
        return cls(sorted(set(text)))

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, text: str) -> np.ndarray:
        # Vectorised through code points: a lookup table maps each code point to its token.
        codepoints = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        table = np.full(max(map(ord, self.symbols)) + 1, -1, dtype=np.int64)
        table[[ord(s) for s in self.symbols]] = np.arange(len(self.symbols))
        tokens = table[np.minimum(codepoints, len(table) - 1)]
        unknown = (tokens < 0) | (codepoints >= len(table))
        if unknown.any():
            bad = chr(codepoints[np.argmax(unknown)])
            raise DataError(f"character {bad!r} is not in the vocabulary")
        return tokens.astype(self.dtype)

    def decode(self, tokens: list[int] | np.ndarray | Tensor) -> str:
        return "".join(self.symbols[int(t)] for t in tokens)


@dataclass
class Corpus:
    vocab: CharVocab
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def read_text(path: Path) -> str:
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    raw = path.read_bytes()
    if not raw:
        raise DataError(f"data file {path} is empty")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"data file {path} is not UTF-8 text (bad byte at offset {e.start})") from None


def load_corpus(data: dict, data_dir: Path) -> Corpus:
    """Read the corpus named by the `data` config and split it: train first, then validation, then
    test, as contiguous pieces in file order (as nanoGPT and the char-rnn tutorials split)."""
    if data["name"] == "text_file":
        path = Path(data["path"]).expanduser()
    else:
        path = fetch(data["name"], data_dir)
    text = read_text(path)
    vocab = CharVocab.from_text(text)
    tokens = vocab.encode(text)
    n_val, n_test = (int(len(tokens) * data[k]) for k in ("val_fraction", "test_fraction"))
    n_train = len(tokens) - n_val - n_test
    return Corpus(vocab, tokens[:n_train], tokens[n_train : n_train + n_val], tokens[n_train + n_val :])


class TBPTTBatches(Dataset):
    """Item k is `(inputs, targets)`, each `(unroll, batch_size)` (sequence-first); targets are the
    inputs shifted by one token, and item k+1 continues item k in every column."""

    def __init__(self, tokens: np.ndarray, batch_size: int, unroll: int, split: str = "train") -> None:
        stream_len = len(tokens) // batch_size
        self.unroll = unroll
        self.num_batches = (stream_len - 1) // unroll  # every window needs one more token for its targets
        if self.num_batches < 1:
            need = batch_size * (unroll + 1)
            raise DataError(
                f"the {split} split has {len(tokens)} tokens, too few for batch_size={batch_size} x "
                f"unroll={unroll}: it needs at least {need}"
            )
        # Column b is stream b: the b-th contiguous piece of the corpus. Kept in the compact dtype.
        streams = torch.from_numpy(np.ascontiguousarray(tokens[: stream_len * batch_size]))
        self.streams = streams.view(batch_size, stream_len).T.contiguous()

    def __len__(self) -> int:
        return self.num_batches

    def __getitem__(self, k: int) -> tuple[Tensor, Tensor]:
        start = k * self.unroll
        window = self.streams[start : start + self.unroll + 1].long()
        return window[:-1], window[1:]


class StreamLoader:
    """Yields the batches of a TBPTTBatches in stream order, resumably: Lightning keeps its
    `state_dict` in every checkpoint and restores it, so a resumed run goes on with the next batch
    of the same epoch rather than starting the corpus over."""

    def __init__(self, batches: TBPTTBatches) -> None:
        self.batches = batches
        self.position = 0  # batches of this epoch handed out so far
        self._resume_at = 0

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        start, self._resume_at = self._resume_at, 0
        for k in range(start, len(self.batches)):
            self.position = k + 1
            yield self.batches[k]

    def state_dict(self) -> dict[str, int]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.position = state["position"]
        self._resume_at = self.position % len(self.batches)  # a finished epoch resumes at the next
