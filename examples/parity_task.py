"""A task of your own, outside the rnnexp package: running parity. Each input is a string of random
bits; at every step the model says whether it has seen an odd number of ones so far, which needs
one bit of memory carried across the whole sequence (a classic test of vanishing gradients).

    PYTHONPATH=examples python train.py hydra.searchpath=[file://examples/conf] data=parity

The config examples/conf/data/parity.yaml names this class (`task:`), its settings and its main
metric (`val/acc`, higher is better). See docs/extending.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnexp.model import make_recurrent
from rnnexp.schema import Data
from rnnexp.tasks.base import Task, TaskData


@dataclass
class ParityData(Data):
    """The keys of conf/data/parity.yaml beyond every data config's task, name, metric, higher_is_better."""

    length: int  # bits per sequence
    train_batches: int  # batches per epoch
    valid_batches: int


@dataclass
class Bits:
    symbols: tuple[str, ...] = ("0", "1")

    def __len__(self) -> int:
        return len(self.symbols)


class ParityBatches:
    """Batch i of every epoch is drawn from seed + i: the same batches in every epoch and after a
    resume, with no generator state to save."""

    def __init__(self, length: int, batch_size: int, batches: int, seed: int) -> None:
        self.length, self.batch_size, self.batches, self.seed = length, batch_size, batches, seed

    def __len__(self) -> int:
        return self.batches

    def __iter__(self):
        for i in range(self.batches):
            generator = torch.Generator().manual_seed(self.seed * 100_003 + i)
            bits = torch.randint(0, 2, (self.length, self.batch_size), generator=generator)
            yield bits, bits.cumsum(0) % 2  # (T, B) inputs, (T, B) running parity


class ParityModel(nn.Module):
    """bits -> embedding -> the configured recurrent stack (any cell, arch1 or deep) -> odd or even."""

    def __init__(self, cell: dict[str, Any], arch: dict[str, Any]) -> None:
        super().__init__()
        self.embedding = nn.Embedding(2, arch["embedding_dim"])
        self.rnn = make_recurrent(cell, arch, arch["embedding_dim"])
        self.head = nn.Linear(cell["hidden_size"], 2)

    def forward(self, bits: Tensor) -> Tensor:
        outputs, _ = self.rnn(self.embedding(bits))
        return self.head(outputs)


class ParityTask(Task):
    """A Task subclass: builds `self.model`, loads its data, trains, and reports its metrics."""

    data_schema = ParityData

    def __init__(self, config: dict[str, Any], vocab: list) -> None:
        super().__init__(config, vocab)
        self.model = ParityModel(config["cell"], config["arch"])

    @classmethod
    def load_data(cls, config: dict[str, Any], data_dir: Path, cache_dir: Path) -> TaskData:
        data, batch, seed = config["data"], config["batch_size"], config["seed"]
        return TaskData(Bits(), ParityBatches(data["length"], batch, data["train_batches"], seed),
                        ParityBatches(data["length"], batch, data["valid_batches"], seed + 1))

    def forward(self, bits: Tensor) -> Tensor:
        return self.model(bits)

    def step_loss(self, batch: tuple[Tensor, Tensor]) -> Tensor | None:
        bits, parity = batch
        loss = F.cross_entropy(self(bits).flatten(0, 1), parity.flatten())
        if self.skip_nonfinite_loss(loss):
            return None
        self.count_train(loss, parity.numel())
        return loss

    def on_validation_epoch_start(self) -> None:
        self._sums = torch.zeros(3, device=self.device, dtype=torch.float64)  # nll, correct, count

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        bits, parity = batch
        logits = self(bits).float()
        self._sums += torch.stack([F.cross_entropy(logits.flatten(0, 1), parity.flatten(), reduction="sum"),
                                   (logits.argmax(-1) == parity).sum(), torch.tensor(parity.numel())]).double()

    def validation_metrics(self) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        nll, correct, count = self.sum_over_ranks(self._sums)
        accuracy = (correct / count).float()
        return (nll / count).float(), {"val/acc": accuracy}, accuracy

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self.log_validation(*self.validation_metrics())
