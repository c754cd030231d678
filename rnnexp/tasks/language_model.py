"""The language model: next-token prediction over token streams, trained with truncated BPTT.

Lightning 2.x has no TBPTT of its own: the windows arrive in stream order (see `data.TrainStream`),
`steps_per_batch` of them to a Lightning batch, each its own optimizer step (`Task.training_step`),
and the task carries the hidden state from one window to the next, detached, so gradients flow
through exactly `unroll` steps.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from rnnexp.cells import State
from rnnexp.data import StreamLoader, TBPTTBatches, TrainStream, load_corpus, process_rank, streams_of_rank
from rnnexp.errors import CheckpointError, DataError
from rnnexp.model import build_language_model
from rnnexp.sample import generate
from rnnexp.schema import Data
from rnnexp.tasks.base import Task, TaskData, apply_to_state, detach_state
from rnnexp.tokenizers import Vocab, vocab_from_symbols

log = logging.getLogger("rnnexp")
# Validation and test batches span this many time steps (unroll windows, each run in turn, as training
# runs them): Lightning's cost per batch, about as much as a short step's own, is paid once per span.
EVAL_STEPS_PER_BATCH = 256


@dataclass
class CorpusData(Data):
    """A corpus in one file split by fractions (downloaded: `remote`, `member`; or your own: `path`),
    or one file per split in `folder` (`files`, downloaded as `remote`, `members`)."""

    remote: Any
    member: str | None
    path: str | None
    folder: str
    files: dict[str, str]
    members: dict[str, str] | None
    val_fraction: float
    test_fraction: float
    normalize: str | None


class LanguageModelTask(Task):
    """Next-token prediction over token streams, with the hidden state carried between batches."""

    data_schema = CorpusData
    batch_holds_steps = True  # steps_per_batch windows (data.TrainStream)
    plain_attributes = Task.plain_attributes | {"train_state", "replay_batch", "val_state", "_val_nll", "_val_tokens"}

    @classmethod
    def arch_refusal(cls, arch: str, data: str) -> str | None:
        if arch == "bidirectional":
            return ("arch=bidirectional cannot be a causal language model: its backward RNN reads the very symbols "
                    "it must predict; use it on a task that gives the whole input, e.g. data=segmentation")
        return None if arch == "arch2" else super().arch_refusal(arch, data)

    @classmethod
    def load_data(cls, config: dict[str, Any], data_dir: Path, cache_dir: Path) -> TaskData:
        corpus = load_corpus(config["data"], config["tokenizer"], data_dir, cache_dir)
        # Stream order matters (the hidden state is carried from batch to batch), so no shuffling;
        # no worker processes either: a batch is a slice of a tensor.
        batch_size, unroll = config["batch_size"], config["unroll"]
        has_test = len(corpus.test) > batch_size * (unroll + 1)  # a split that can fill one batch
        per_batch = max(1, EVAL_STEPS_PER_BATCH // unroll)
        train = TrainStream(TBPTTBatches(corpus.train, batch_size, unroll, "train"), config["steps_per_batch"])
        return TaskData(corpus.vocab, train,
                        StreamLoader(TBPTTBatches(corpus.valid, batch_size, unroll, "validation", per_batch)),
                        StreamLoader(TBPTTBatches(corpus.test, batch_size, unroll, "test", per_batch))
                        if has_test else None)

    def __init__(self, config: dict[str, Any], vocab: list) -> None:
        super().__init__(config, vocab)
        self.model = build_language_model(len(vocab), config["cell"], config["arch"])
        self.train_state: State | None = None
        self._saved_train_states: list[State | None] | None = None
        self.val_state: State | None = None

    def check_processes(self, processes: int) -> None:
        streams_of_rank(self.config["batch_size"], 0, processes)  # each process carries its share of the streams

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        return self.model(tokens, state)

    def score(self, loss: Tensor) -> Tensor:
        """Mean NLL in nats as perplexity (word level) or bits per symbol (character and byte level)."""
        return torch.exp(loss) if self.score_name == "ppl" else loss / math.log(2)

    def split_batch(self, batch: tuple[Tensor, Tensor, tuple[bool, ...]]) -> Any:
        """A batch's unroll windows, each with whether it starts a pass over the corpus (data.TrainStream)."""
        inputs, targets, starts_pass = batch
        unroll = self.config["unroll"]
        return zip(inputs.split(unroll), targets.split(unroll), starts_pass, strict=True)

    def step_loss(self, window: tuple[Tensor, Tensor, bool]) -> Tensor | None:
        inputs, targets, starts_pass = window
        if starts_pass:
            self.train_state = None  # a new pass: every stream restarts at the start of the corpus
        self.replay_batch = (inputs, targets, self.train_state)  # for rnnexp.diagnostics: references, no copy
        logits, state = self.model(inputs, self.train_state, targets, self.teacher_prob())
        self.train_state = detach_state(state)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())  # mean NLL per token
        # AR/TAR (arch.ar, arch.tar): trained on, logged apart from the data loss (train/activation_penalty)
        penalty, self.model.penalty = getattr(self.model, "penalty", None), None
        if self.skip_nonfinite_loss(loss):
            self.train_state = None  # the carried state may be what blew up
            return None  # no backward, no update
        self.count_train(loss, targets.numel(), penalty)
        return loss if penalty is None else loss + penalty

    def on_train_start(self) -> None:
        super().on_train_start()
        # The training batches are a function of the step (data.TrainStream): a resume starts at its own.
        self.trainer.train_dataloader.start_at(self.global_step)
        if self._saved_train_states is not None:  # restored from a checkpoint: one state per process
            rank, processes = process_rank()
            if len(self._saved_train_states) != processes:
                raise CheckpointError(
                    f"the checkpoint was trained by {len(self._saved_train_states)} processes, each carrying the "
                    f"hidden state of its streams; resume it with as many (trainer.devices), not {processes}")
            state = self._saved_train_states[rank]
            self.train_state = None if state is None else apply_to_state(state, lambda s: s.to(self.device))
            self._saved_train_states = None

    def on_validation_epoch_start(self) -> None:
        self.val_state = None  # validation carries its own state, separate from training's
        self._val_nll = torch.zeros((), device=self.device, dtype=torch.float64)
        self._val_tokens = 0

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        unroll = self.config["unroll"]  # a batch holds several windows: each is run as training runs one
        for inputs, targets in zip(batch[0].split(unroll), batch[1].split(unroll), strict=True):
            logits, self.val_state = self.model(inputs, self.val_state)
            self._val_nll += F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="sum")
            self._val_tokens += targets.numel()

    def validation_metrics(self) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        # Under DDP each process scored its share of the streams: the sums are taken over all of them.
        tokens = self.sum_over_ranks(torch.tensor(self._val_tokens, device=self._val_nll.device, dtype=torch.float64))
        val_loss = (self.sum_over_ranks(self._val_nll) / tokens).float()
        score = self.score(val_loss)
        return val_loss, {f"val/{self.score_name}": score}, score

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.log_validation(*self.validation_metrics())
        length = self.config["sample"]["val_length"]
        if length > 0 and self.trainer.state.fn == "fit" and self.trainer.is_global_zero:  # how the writing changes
            self.log_text("samples/validation", self.generate_sample(length))

    def extra_state(self) -> dict[str, Any]:
        # Every DDP process carries the state of its own streams: all of them are saved, in rank order.
        state = None if self.train_state is None else apply_to_state(self.train_state, Tensor.cpu)
        return {"train_states": self.gather_from_ranks(state)}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        # Taken up in on_train_start, once this process knows its rank.
        self._saved_train_states = state["train_states"] if "train_states" in state else [state["train_state"]]

    def generate_sample(self, length: int | None = None) -> str | None:
        """`length` (default `sample.length`) tokens after `sample.prime`, seeded by `seed`."""
        sample = self.config["sample"]
        length = sample["length"] if length is None else length
        if length <= 0:
            return None
        vocab = vocab_from_symbols(self.config["tokenizer"], self.vocab)
        generator = torch.Generator().manual_seed(self.config["seed"])
        prime = sample_prime(sample["prime"], vocab, self.trainer.train_dataloader)
        return generate(self.model, vocab, prime, length, sample["temperature"], generator)


def sample_prime(prime: str | None, vocab: Vocab, train: TrainStream) -> str:
    """The text a sample starts from: `prime`, or by default (null) a line break; where the
    vocabulary cannot spell it (no line breaks in text8, say), the corpus's first symbol."""
    wanted = "\n" if prime is None else prime
    try:
        if len(vocab.encode(wanted)) > 0:
            return wanted
    except DataError:
        pass
    fallback = vocab.decode(train.batches[0][0][:1, 0].tolist())
    log.warning("sample.prime %r is not in this vocabulary; the sample starts from %r", wanted, fallback)
    return fallback
