"""The keys each config group option may hold, with their types, as OmegaConf structured configs.

The values live in conf/; these dataclasses say which keys exist, so that a key nothing reads
(`+unrol=40`, `+cell._target_=...`) is refused instead of silently ignored. Groups whose options
are `_target_` objects (optim, sched, trainer, logger, callbacks) are checked against the
arguments of their targets instead (see rnnexp/config.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any  # noqa: UP035 (OmegaConf reads Optional[...], not X | None)

# ruff: noqa: UP007


@dataclass
class Guard:
    on_nonfinite: str
    explode_factor: float


@dataclass
class Decode:
    beam_size: int


@dataclass
class DiagnosticsSettings:
    every_n_steps: int


@dataclass
class Sample:
    length: int
    val_length: int
    temperature: float
    prime: str | None


@dataclass
class Train:
    """Top-level keys; the groups below are checked option by option."""

    seed: int
    unroll: int
    batch_size: int
    lr: float
    clip: float | None
    ckpt_path: str | None
    init_from: str | None
    data_dir: str | None
    cache_dir: str | None
    scale: float
    run_dir: str
    guard: Guard
    decode: Decode
    diagnostics: DiagnosticsSettings
    sample: Sample
    optim: Any
    sched: Any
    tokenizer: Any
    data: Any
    cell: Any
    arch: Any
    trainer: Any
    logger: Any
    callbacks: Any


# --- cell ----------------------------------------------------------------------------------------

@dataclass
class GatedCell:  # lstm, gru, mgu
    name: str
    impl: str
    hidden_size: int
    variant: str


@dataclass
class VanillaCell(GatedCell):  # rnn
    activation: str


@dataclass
class CustomCell:
    name: str
    _target_: str
    impl: str
    hidden_size: int


# --- arch ----------------------------------------------------------------------------------------

@dataclass
class Arch1:
    name: str
    embedding_dim: int
    num_layers: int
    combine: str
    dropout: float


@dataclass
class Deep(Arch1):  # deep, bidirectional
    residual: bool


@dataclass
class Arch2:
    name: str
    embedding_dim: int
    feedback: str
    schedule_k: float
    dropout: float
    combine: str


@dataclass
class Seq2Seq:
    name: str
    encoder: str
    embedding_dim: int
    encoder_hidden_size: int | None
    encoder_bidirectional: bool
    context: str
    attention: bool
    teacher_forcing: float
    dropout: float
    combine: str


# --- tokenizer -----------------------------------------------------------------------------------

@dataclass
class Tokenizer:  # char, byte
    name: str


@dataclass
class WordTokenizer(Tokenizer):
    vocab_size: int | None
    line_end: str | None
    line_start: str | None
    lowercase: bool


# --- data ----------------------------------------------------------------------------------------

@dataclass
class OneFileCorpus:  # tinyshakespeare, text8, enwik8: downloaded, split by fractions
    name: str
    remote: str
    member: str | None
    val_fraction: float
    test_fraction: float
    normalize: str | None


@dataclass
class TextFile:
    name: str
    path: str
    val_fraction: float
    test_fraction: float
    normalize: str | None


@dataclass
class SplitCorpus:  # wikitext2, wikitext103, ptb: one file per split
    name: str
    folder: str
    files: dict[str, str]
    remote: Any  # one archive, or one file per split
    members: dict[str, str] | None
    normalize: str | None


@dataclass
class Segmentation:
    task: str
    name: str
    corpus: str
    member: str | None
    path: str | None
    val_fraction: float
    normalize: str | None


@dataclass
class SymbolTask:  # reverse, copy, sort
    task: str
    name: str
    num_symbols: int
    min_length: int
    max_length: int
    train_batches: int
    valid_size: int


@dataclass
class Addition:
    task: str
    name: str
    max_digits: int
    train_batches: int
    valid_size: int


@dataclass
class LongRange:  # adding, copy_memory
    task: str
    name: str
    length: int
    train_batches: int
    valid_size: int


@dataclass
class NumberWords:
    task: str
    name: str
    max_value: int
    train_batches: int
    valid_size: int


@dataclass
class ParallelText:
    task: str
    name: str
    path: str
    val_fraction: float


# Each group's options, by the `name` key they set.
GROUPS: dict[str, dict[str, type]] = {
    "cell": {"rnn": VanillaCell, "lstm": GatedCell, "gru": GatedCell, "mgu": GatedCell, "custom": CustomCell},
    "arch": {"arch1": Arch1, "deep": Deep, "bidirectional": Deep, "arch2": Arch2, "seq2seq": Seq2Seq},
    "tokenizer": {"char": Tokenizer, "byte": Tokenizer, "word": WordTokenizer},
    "data": {
        **dict.fromkeys(("tinyshakespeare", "text8", "enwik8"), OneFileCorpus),
        "text_file": TextFile,
        **dict.fromkeys(("wikitext2", "wikitext103", "ptb"), SplitCorpus),
        "segmentation": Segmentation,
        **dict.fromkeys(("reverse", "copy", "sort"), SymbolTask),
        "addition": Addition,
        "number_words": NumberWords,
        "parallel_text": ParallelText,
        **dict.fromkeys(("adding", "copy_memory"), LongRange),
    },
}
