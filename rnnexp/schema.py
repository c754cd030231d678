"""The keys each config group option may hold, with their types, as OmegaConf structured configs.

The values live in conf/; these dataclasses say which keys exist, so that a key nothing reads
(`+unrol=40`, `+cell._target_=...`) is refused instead of silently ignored. Groups whose options
are `_target_` objects (optim, sched, trainer, logger, callbacks) are checked against the
arguments of their targets instead (see rnnexp/config.py), and the `data` group against the
schema its task declares (`Task.data_schema`, a subclass of `Data` below).
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
    seeds: int
    steps_per_batch: Any  # auto or a positive integer (rnnexp.config.steps_per_batch)
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
class Cell:  # the built-in cells (rnnexp/cells.py CELLS)
    name: str
    impl: str
    hidden_size: int
    variant: str
    activation: str | None = None  # for the cells that take one (rnn)


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
    # AWD-LSTM's regularisers (rnnexp/model.py REGULARISERS), language models only; off by default
    embedding_dropout: float = 0.0
    input_dropout: float = 0.0
    output_dropout: float = 0.0
    weight_drop: float = 0.0
    zoneout: float = 0.0
    ar: float = 0.0
    tar: float = 0.0
    tie_weights: bool = False


@dataclass
class Deep(Arch1):  # deep, bidirectional
    residual: bool = False


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
    lm_metric: str  # what a language model over these tokens is judged by: val/bpc, val/ppl


@dataclass
class WordTokenizer(Tokenizer):
    vocab_size: int | None
    line_end: str | None
    line_start: str | None
    lowercase: bool


# --- data ----------------------------------------------------------------------------------------

@dataclass
class Data:
    """What every data option names: its task (a `rnnexp.tasks.base.Task` subclass, by import path)
    and the task's main metric, the one best.ckpt, early stopping, summaries and searches follow.
    Each task extends this with its own keys (`Task.data_schema`)."""

    task: str
    name: str
    metric: str
    higher_is_better: bool


# Each group's options, by the `name` key they set (the data group: by its task's schema).
GROUPS: dict[str, dict[str, type]] = {
    "arch": {"arch1": Arch1, "deep": Deep, "bidirectional": Deep, "arch2": Arch2, "seq2seq": Seq2Seq},
    "tokenizer": {"char": Tokenizer, "byte": Tokenizer, "word": WordTokenizer},
}


def cell_schema(cell: dict[str, Any]) -> type:
    return CustomCell if cell.get("name") == "custom" else Cell
