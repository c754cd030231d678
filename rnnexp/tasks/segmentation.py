"""Word segmentation, a task that needs both directions: remove the spaces from a text and predict,
for every character, whether a space followed it. Whether "t" ends a word depends on what comes
after it, which a forward RNN has not read yet and a bidirectional one has.

Metrics: val/acc (per character) and val/f1 of the "space follows" class (precision and recall of
the word boundaries), the score people compare.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnexp.data import locate_sources, read_source, split_by_fractions
from rnnexp.errors import DataError
from rnnexp.model import make_recurrent
from rnnexp.schema import Data
from rnnexp.tasks.base import Task, TaskData
from rnnexp.tokenizers import CharVocab, normalize_text8


def remove_spaces(text: str) -> tuple[str, np.ndarray]:
    """The text without whitespace, and for each remaining character 1 if whitespace followed it."""
    codepoints = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    is_space = np.isin(codepoints, [ord(c) for c in " \t\n\r\f\v\u00a0"])
    keep = ~is_space
    followed_by_space = np.append(is_space[1:], False)
    chars = codepoints[keep].astype("<u4").tobytes().decode("utf-32-le")
    return chars, followed_by_space[keep].astype(np.uint8)


class Windows:
    """Fixed-length windows of (characters, labels), in a new random order every epoch (seeded);
    each batch is (inputs, labels), both (window, batch_size)."""

    def __init__(self, tokens: np.ndarray, labels: np.ndarray, window: int, batch_size: int, shuffle: bool,
                 seed: int, split: str) -> None:
        count = len(tokens) // window
        if count < 1:
            raise DataError(f"the {split} split has {len(tokens)} characters, fewer than one window of {window}")
        self.tokens = torch.from_numpy(np.asarray(tokens[: count * window]).astype(np.int64)).view(count, window)
        self.labels = torch.from_numpy(np.asarray(labels[: count * window]).astype(np.int64)).view(count, window)
        self.batch_size, self.shuffle, self.seed, self.epoch = batch_size, shuffle, seed, 0

    def __len__(self) -> int:
        return -(-len(self.tokens) // self.batch_size)

    def __iter__(self):
        order = torch.arange(len(self.tokens))
        if self.shuffle:
            order = torch.randperm(len(self.tokens), generator=torch.Generator().manual_seed(self.seed + self.epoch))
            self.epoch += 1
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            yield self.tokens[rows].T.contiguous(), self.labels[rows].T.contiguous()


def load_segmentation(config: dict[str, Any], data_dir: Path) -> TaskData:
    """The corpus named by `data.corpus` (or the file `data.path`), without its spaces."""
    data = config["data"]
    if data["corpus"] == "text_file":
        source = {"name": "text_file", "path": data["path"]}
    else:
        source = {"name": data["corpus"], "remote": data["corpus"], "member": data["member"]}
    sources = locate_sources(source, data_dir)
    if "all" not in sources:
        raise DataError("data=segmentation reads one text file (data.path), not a folder of splits")
    path, member = sources["all"]
    text = read_source(path, member)
    chars, labels = remove_spaces(normalize_text8(text) if data.get("normalize") == "text8" else text)
    vocab = CharVocab.build([chars])
    tokens = vocab.encode(chars)
    token_splits = split_by_fractions(tokens, data["val_fraction"], 0.0)
    label_splits = split_by_fractions(labels, data["val_fraction"], 0.0)
    window, batch, seed = config["unroll"], config["batch_size"], config["seed"]
    return TaskData(
        vocab,
        Windows(token_splits["train"], label_splits["train"], window, batch, True, seed, "train"),
        Windows(token_splits["valid"], label_splits["valid"], window, batch, False, seed, "validation"),
    )


class SequenceTagger(nn.Module):
    """A label for every position: embedding -> recurrent stack (one direction or both) -> linear."""

    def __init__(self, vocab_size: int, num_labels: int, cell: dict[str, Any], arch: dict[str, Any]) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, arch["embedding_dim"])
        self.rnn = make_recurrent(cell, arch, arch["embedding_dim"])
        directions = 2 if arch["name"] == "bidirectional" else 1
        self.dropout = nn.Dropout(arch["dropout"])
        self.head = nn.Linear(cell["hidden_size"] * directions, num_labels)

    def forward(self, tokens: Tensor) -> Tensor:
        outputs, _ = self.rnn(self.embedding(tokens))
        return self.head(self.dropout(outputs))


@dataclass
class SegmentationData(Data):
    corpus: str  # a corpus of conf/data/ (its remote file), or null with `path`
    member: str | None
    path: str | None
    val_fraction: float
    normalize: str | None


class SegmentationTask(Task):
    """Tags each character with whether a space followed it; judged by val/f1 of the boundaries."""

    data_schema = SegmentationData

    def __init__(self, config: dict[str, Any], vocab: list) -> None:
        super().__init__(config, vocab)
        self.model = SequenceTagger(len(vocab), 2, config["cell"], config["arch"])

    @classmethod
    def load_data(cls, config: dict[str, Any], data_dir: Path, cache_dir: Path) -> TaskData:
        return load_segmentation(config, data_dir)

    def step_loss(self, batch: tuple[Tensor, Tensor]) -> Tensor | None:
        inputs, labels = batch
        loss = F.cross_entropy(self.model(inputs).flatten(0, 1), labels.flatten())
        if self.skip_nonfinite_loss(loss):
            return None
        self.count_train(loss, labels.numel())
        return loss

    def on_validation_epoch_start(self) -> None:
        # nll, correct, true positives, false positives, false negatives, count: summed on the device
        self._sums = torch.zeros(6, device=self.device, dtype=torch.float64)

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        inputs, labels = batch
        logits = self.model(inputs).float()
        predicted = logits.argmax(-1)
        if batch_idx == 0:  # one window of the first batch, for the TEXT tab
            self._example = (inputs[:, 0], predicted[:, 0], labels[:, 0])
        self._sums += torch.stack([
            F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="sum"),
            (predicted == labels).sum(),
            ((predicted == 1) & (labels == 1)).sum(),
            ((predicted == 1) & (labels == 0)).sum(),
            ((predicted == 0) & (labels == 1)).sum(),
            torch.tensor(labels.numel(), device=self.device),
        ]).double()

    def validation_metrics(self) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        nll, correct, tp, fp, fn, count = self.sum_over_ranks(self._sums)  # all DDP processes
        f1 = (2 * tp / (2 * tp + fp + fn).clamp(min=1)).float()
        return (nll / count).float(), {"val/acc": (correct / count).float(), "val/f1": f1}, f1

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.log_validation(*self.validation_metrics())
        chars, predicted, labels = (x.tolist() for x in self._example)
        spaced = ["".join(self.vocab[c] + " " * s for c, s in zip(chars, marks, strict=True))
                  for marks in (predicted, labels)]
        self.log_text("samples/segmentation", f"predicted:\n{spaced[0]}\ntrue:\n{spaced[1]}")
