"""The long-range memory tasks, the classic tests of how far back an RNN carries information:

- the adding problem (`data=adding`; Hochreiter & Schmidhuber 1997, Le et al. 2015): T steps of
  (value, marker), values uniform in [0, 1), one step marked in each half of the sequence; the answer,
  read from the last step, is the sum of the two marked values. Mean squared error; always answering
  1 (the mean of the sum) scores its variance, 2/12 = 1/6, the baseline.
- the copy-memory task (`data=copy_memory`; Hochreiter & Schmidhuber 1997, Arjovsky et al. 2016):
  10 symbols out of 8, then T blanks with a delimiter at the last of them, then 10 more blanks during
  which the 10 symbols are to be written again. Cross-entropy over all T + 20 steps; writing blanks
  and then guessing uniformly scores 10 ln(8) / (T + 20), the baseline.

A sequence longer than `unroll` is processed in chunks of `unroll` steps, the hidden state carried
from chunk to chunk and detached between them, so a loss reaches back at most `unroll` steps:
`unroll` limits what can be learned, as truncated BPTT does on a text stream. Batches are generated
from the seed, fresh at every step; validation is a fixed set generated from seed + 1.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnexp.data import process_rank
from rnnexp.model import make_recurrent
from rnnexp.schema import Data
from rnnexp.tasks.base import Task, TaskData, detach_state
from rnnexp.tasks.seq2seq import SymbolVocab

RECALL = 10  # copy-memory: symbols to remember
SYMBOLS = 8  # copy-memory: symbols 1..8; 0 is the blank, 9 the delimiter


def adding_batch(length: int, batch: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Inputs (T, B, 2): value and marker at each step; targets (B,): the sum of the marked values."""
    values = torch.rand(length, batch, generator=generator)
    half = length // 2
    first = torch.randint(0, half, (batch,), generator=generator)
    second = torch.randint(half, length, (batch,), generator=generator)
    markers = torch.zeros(length, batch)
    columns = torch.arange(batch)
    markers[first, columns] = 1.0
    markers[second, columns] = 1.0
    return torch.stack([values, markers], dim=-1), values[first, columns] + values[second, columns]


def copy_memory_batch(delay: int, batch: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Inputs and targets (T + 20, B) of symbols: 10 to remember, T - 1 blanks, the delimiter (9),
    10 blanks; the targets are blanks until the last 10 steps, which are the 10 symbols."""
    remember = torch.randint(1, SYMBOLS + 1, (RECALL, batch), generator=generator)
    blanks = torch.zeros(delay - 1, batch, dtype=torch.long)
    delimiter = torch.full((1, batch), SYMBOLS + 1, dtype=torch.long)
    recall_blanks = torch.zeros(RECALL, batch, dtype=torch.long)
    inputs = torch.cat([remember, blanks, delimiter, recall_blanks])
    targets = torch.cat([torch.zeros(delay + RECALL, batch, dtype=torch.long), remember])
    return inputs, targets


def baseline(data: dict[str, Any]) -> float:
    """The score of the memoryless answer: 1/6 (adding), 10 ln(8) / (T + 20) (copy-memory), where T
    is `data.length` (the adding problem's sequence length, the copy-memory task's delay)."""
    if data["name"] == "adding":
        return 1 / 6
    return RECALL * math.log(SYMBOLS) / (data["length"] + 2 * RECALL)


class GeneratedBatches:
    """`batches` batches per epoch, from `make(batch_size, generator)`: fresh ones from a generator
    seeded once (training; under DDP each process seeds its own, seed + rank, so that the processes
    train on different examples), or the same ones each time from a fixed seed (validation)."""

    def __init__(self, make: Any, batch_size: int, batches: int, seed: int, fixed: bool) -> None:
        self.make, self.batch_size, self.batches, self.fixed, self.seed = make, batch_size, batches, fixed, seed
        self.generator: torch.Generator | None = None

    def __len__(self) -> int:
        return self.batches

    def __iter__(self):
        if self.fixed:
            generator = torch.Generator().manual_seed(self.seed)
        else:  # made on first use, once this process knows its rank
            if self.generator is None:
                self.generator = torch.Generator().manual_seed(self.seed + 1_000_003 * process_rank()[0])
            generator = self.generator
        for _ in range(self.batches):
            yield self.make(self.batch_size, generator)


class LongRangeModel(nn.Module):
    """Input (values and markers, or symbol embeddings) -> the recurrent stack of `arch` -> a linear
    readout: of the last step (adding), or of every step (copy-memory). `forward` takes the sequence
    in chunks of `unroll` steps and detaches the state between them."""

    def __init__(self, task: str, cell: dict[str, Any], arch: dict[str, Any]) -> None:
        super().__init__()
        self.task = task
        if task == "adding":
            self.embed: nn.Module = nn.Identity()
            input_size, outputs = 2, 1
        else:
            self.embed = nn.Embedding(SYMBOLS + 2, arch["embedding_dim"])
            input_size, outputs = arch["embedding_dim"], SYMBOLS + 2
        self.rnn = make_recurrent(cell, arch, input_size)
        self.head = nn.Linear(cell["hidden_size"] * (2 if arch["name"] == "bidirectional" else 1), outputs)

    def forward(self, inputs: Tensor, unroll: int) -> Tensor:
        """Adding: the answers (B,); copy-memory: logits (T + 20, B, 10)."""
        state, outputs = None, []
        for chunk in self.embed(inputs).split(unroll):
            out, state = self.rnn(chunk, state)
            state = detach_state(state)  # the next chunk's gradients stop here: truncation at `unroll`
            outputs.append(out)
        if self.task == "adding":
            return self.head(outputs[-1][-1]).squeeze(-1)
        return self.head(torch.cat(outputs))


@dataclass
class LongRangeData(Data):
    length: int  # T: the adding problem's sequence length, the copy-memory task's delay
    train_batches: int
    valid_size: int


class LongRangeTask(Task):
    """Adding and copy-memory; main metric val/mse (adding) or val/loss (copy-memory), with
    val/baseline, the memoryless score, logged beside it."""

    data_schema = LongRangeData

    def __init__(self, config: dict[str, Any], vocab: list) -> None:
        super().__init__(config, vocab)
        data = config["data"]
        self.baseline = baseline(data)
        self.model = LongRangeModel(data["name"], config["cell"], config["arch"])

    @classmethod
    def load_data(cls, config: dict[str, Any], data_dir: Path, cache_dir: Path) -> TaskData:
        data, batch_size, seed = config["data"], config["batch_size"], config["seed"]
        generate = adding_batch if data["name"] == "adding" else copy_memory_batch
        make = functools.partial(generate, data["length"])
        valid_batches = -(-data["valid_size"] // batch_size)
        symbols = [] if data["name"] == "adding" else ["_", *"12345678", "|"]  # blank, symbols, delimiter
        train = GeneratedBatches(make, batch_size, data["train_batches"], seed, fixed=False)
        return TaskData(SymbolVocab(symbols), train, GeneratedBatches(make, batch_size, valid_batches, seed + 1,
                                                                      fixed=True))

    def loss(self, inputs: Tensor, targets: Tensor) -> Tensor:
        outputs = self.model(inputs, self.config["unroll"])
        if self.score_name == "mse":
            return F.mse_loss(outputs.float(), targets)
        return F.cross_entropy(outputs.flatten(0, 1).float(), targets.flatten())

    def step_loss(self, batch: tuple[Tensor, Tensor]) -> Tensor | None:
        inputs, targets = batch
        loss = self.loss(inputs, targets)
        if self.skip_nonfinite_loss(loss):
            return None
        self.count_train(loss, inputs.shape[0] * inputs.shape[1])  # steps read
        return loss

    def on_validation_epoch_start(self) -> None:
        self._sums = torch.zeros(2, device=self.device, dtype=torch.float64)  # loss x examples, examples

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        inputs, targets = batch
        examples = inputs.shape[1]
        self._sums += torch.stack([self.loss(inputs, targets).double() * examples,
                                   torch.tensor(float(examples), device=self.device, dtype=torch.float64)])

    def validation_metrics(self) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        total, examples = self.sum_over_ranks(self._sums)  # all DDP processes
        loss = (total / examples).float()
        return loss, {f"val/{self.score_name}": loss, "val/baseline": torch.tensor(self.baseline)}, loss

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.log_validation(*self.validation_metrics())

    def dashboard_layout(self) -> dict[str, dict[str, list]]:
        layout = super().dashboard_layout()
        layout["training"][f"validation {self.score_name} against the memoryless baseline"] = [
            "Multiline", [f"val/{self.score_name}$", "val/baseline"]]
        return layout
