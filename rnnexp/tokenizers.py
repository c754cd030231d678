"""Turning text into token ids and back: characters, bytes or words, plus text8's normalisation.

A vocabulary is a list of symbols (the checkpoint stores it with the `tokenizer` config, so any
checkpoint can rebuild its tokenizer); a token is a symbol's index.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from rnnexp.errors import DataError

ProgressFn = Callable[[int], None]  # called with the number of units just processed

CHUNK = 1 << 23  # characters encoded at a time: bounds the temporary memory of a large corpus


def compact_dtype(vocab_size: int) -> type:
    """The smallest integer type that holds every token: one byte per character for most alphabets."""
    return np.uint8 if vocab_size <= 256 else np.uint16 if vocab_size <= 65536 else np.int32


class CharVocab:
    """Unicode characters (any alphabet), sorted."""

    kind = "char"

    def __init__(self, symbols: list[str]) -> None:
        self.symbols = list(symbols)
        self.dtype = compact_dtype(len(self.symbols))
        # A lookup table from code point to token, for vectorised encoding.
        self._table = np.full(max(map(ord, self.symbols), default=0) + 1, -1, dtype=np.int64)
        self._table[[ord(s) for s in self.symbols]] = np.arange(len(self.symbols))

    @classmethod
    def build(cls, texts: Iterable[str]) -> CharVocab:
        present: set[str] = set()
        for text in texts:
            present.update(text)
        return cls(sorted(present))

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, text: str, progress: ProgressFn | None = None) -> np.ndarray:
        out = np.empty(len(text), dtype=self.dtype)
        for start in range(0, len(text), CHUNK):
            piece = text[start : start + CHUNK]
            codepoints = np.frombuffer(piece.encode("utf-32-le"), dtype=np.uint32)
            tokens = self._table[np.minimum(codepoints, len(self._table) - 1)]
            unknown = (tokens < 0) | (codepoints >= len(self._table))
            if unknown.any():
                raise DataError(f"character {chr(codepoints[np.argmax(unknown)])!r} is not in the vocabulary")
            out[start : start + len(piece)] = tokens
            if progress:
                progress(len(piece))
        return out

    def decode(self, tokens: Iterable[int]) -> str:
        return "".join(self.symbols[int(t)] for t in tokens)


class ByteVocab:
    """Raw bytes (enwik8 style): the byte values that occur, sorted."""

    kind = "byte"

    def __init__(self, symbols: list[int]) -> None:
        self.symbols = [int(s) for s in symbols]
        self.dtype = np.uint8
        self._table = np.full(256, -1, dtype=np.int64)
        self._table[self.symbols] = np.arange(len(self.symbols))

    @classmethod
    def build(cls, texts: Iterable[bytes]) -> ByteVocab:
        present = np.zeros(256, dtype=bool)
        for data in texts:
            present[np.unique(np.frombuffer(data, dtype=np.uint8))] = True
        return cls(np.flatnonzero(present).tolist())

    def __len__(self) -> int:
        return len(self.symbols)

    def encode(self, data: bytes | str, progress: ProgressFn | None = None) -> np.ndarray:
        raw = np.frombuffer(data.encode("utf-8") if isinstance(data, str) else data, dtype=np.uint8)
        tokens = self._table[raw]
        if (tokens < 0).any():
            raise DataError(f"byte {int(raw[np.argmax(tokens < 0)])} is not in the vocabulary")
        if progress:
            progress(len(raw))
        return tokens.astype(np.uint8)

    def decode(self, tokens: Iterable[int]) -> str:
        return bytes(self.symbols[int(t)] for t in tokens).decode("utf-8", errors="replace")


class WordVocab:
    """Whitespace-separated words. Special tokens come first: `<unk>` for every word outside the
    vocabulary, then the line-end token (`<eos>` in WikiText and PTB) and line-start token if set."""

    kind = "word"
    UNK = "<unk>"

    def __init__(self, symbols: list[str], line_end: str | None = None, line_start: str | None = None,
                 lowercase: bool = False) -> None:
        self.symbols = list(symbols)
        self.line_end, self.line_start, self.lowercase = line_end, line_start, lowercase
        self.index = {w: i for i, w in enumerate(self.symbols)}
        self.dtype = compact_dtype(len(self.symbols))

    @classmethod
    def build(cls, texts: Iterable[str], vocab_size: int | None = None, line_end: str | None = None,
              line_start: str | None = None, lowercase: bool = False) -> WordVocab:
        specials = [cls.UNK] + [t for t in (line_end, line_start) if t]
        counts: Counter[str] = Counter()
        for text in texts:
            for piece in pieces(text):
                counts.update((piece.lower() if lowercase else piece).split())
        for special in specials:
            counts.pop(special, None)
        # Most frequent first; ties broken alphabetically so the vocabulary is the same on every run.
        words = sorted(counts, key=lambda w: (-counts[w], w))
        keep = None if vocab_size is None else max(vocab_size - len(specials), 0)
        return cls(specials + words[:keep], line_end, line_start, lowercase)

    def __len__(self) -> int:
        return len(self.symbols)

    def words(self, text: str) -> Iterable[str]:
        """The words of `text` with the line markers; a last line without a newline gets no end marker."""
        at_line_start = True
        for piece in pieces(text):
            lines = (piece.lower() if self.lowercase else piece).split("\n")
            for i, line in enumerate(lines):
                words, ends_line = line.split(), i < len(lines) - 1
                if self.line_start and at_line_start and (words or ends_line):
                    yield self.line_start
                yield from words
                if ends_line:
                    if self.line_end:
                        yield self.line_end
                    at_line_start = True
                elif words:
                    at_line_start = False  # the line goes on in the next piece

    def encode(self, text: str, progress: ProgressFn | None = None) -> np.ndarray:
        unk = self.index[self.UNK]
        tokens = np.fromiter((self.index.get(w, unk) for w in self.words(text)), dtype=np.int64)
        if progress:
            progress(len(text))
        return tokens.astype(self.dtype)

    def decode(self, tokens: Iterable[int]) -> str:
        out: list[str] = []
        for token in tokens:
            word = self.symbols[int(token)]
            if word == self.line_end:
                out.append("\n")
            elif word != self.line_start:
                out.append(word if not out or out[-1] == "\n" else " " + word)
        return "".join(out)


def pieces(text: str, size: int = CHUNK) -> Iterable[str]:
    """`text` in slices of about `size` characters, cut after a newline or else a space, so that
    a large corpus is split into words without one list of all its words in memory."""
    start = 0
    while start < len(text):
        end = min(start + size, len(text))
        if end < len(text):
            cut = text.rfind("\n", start, end)
            cut = cut if cut >= 0 else text.rfind(" ", start, end)
            end = cut + 1 if cut >= 0 else end
        yield text[start:end]
        start = end


Vocab = CharVocab | ByteVocab | WordVocab


def build_vocab(tokenizer: dict[str, Any], train_texts: list, all_texts: list) -> Vocab:
    """Characters and bytes: every symbol of the corpus. Words: the most frequent of the training
    split (validation and test words outside it become <unk>, as in WikiText and PTB)."""
    if tokenizer["name"] == "char":
        return CharVocab.build(all_texts)
    if tokenizer["name"] == "byte":
        return ByteVocab.build(all_texts)
    if tokenizer["name"] == "word":
        return WordVocab.build(train_texts, tokenizer["vocab_size"], tokenizer["line_end"],
                               tokenizer["line_start"], tokenizer["lowercase"])
    raise ValueError(f"unknown tokenizer {tokenizer['name']!r}")


def vocab_from_symbols(tokenizer: dict[str, Any], symbols: list) -> Vocab:
    """The vocabulary a checkpoint saved, rebuilt with its tokenizer settings."""
    if tokenizer["name"] == "word":
        return WordVocab(symbols, tokenizer["line_end"], tokenizer["line_start"], tokenizer["lowercase"])
    return ByteVocab(symbols) if tokenizer["name"] == "byte" else CharVocab(symbols)


# text8 normalisation, after Matt Mahoney's wikifil.pl: lowercase a-z and single spaces only.
DIGIT_WORDS = " zero one two three four five six seven eight nine ".split()


def _text8_char(c: str) -> str:
    if "a" <= c <= "z":
        return c
    if "A" <= c <= "Z":
        return c.lower()
    if "0" <= c <= "9":
        return f" {DIGIT_WORDS[ord(c) - 48]} "
    # Letters with accents fold to their base letter (é -> e, Å -> a, æ stays out: no base letter).
    base = "".join(ch for ch in unicodedata.normalize("NFKD", c) if not unicodedata.combining(ch)).lower()
    return base if base and all("a" <= ch <= "z" for ch in base) else " "


def normalize_text8(text: str) -> str:
    """Lowercase letters a-z and single spaces: accents folded, digits spelled out, all else a space."""
    table = {ord(c): _text8_char(c) for c in set(text)}
    return re.sub(" +", " ", text.translate(table)).strip()
