"""Sequence to sequence: an encoder RNN reads the source, its final state (the context vector)
starts the decoder and/or feeds every decoder step, and the decoder writes the target one symbol
at a time (Sutskever et al. 2014, Cho et al. 2014), optionally attending over the encoder's outputs
(Bahdanau et al. 2015).

Tasks are generated on the fly from a seed (`reverse`, `copy`, `sort`, `addition`, `number_words`) or
read from a TSV of source/target pairs (`parallel_text`). With `arch.encoder=vector` there is no
encoder RNN: the source is one fixed vector (its symbols one-hot, concatenated), which starts the
decoder and/or feeds each of its steps, as in "unfolding" a vector into a sequence
(`data=number_words`: 407 -> "four hundred seven"). Batches are padded; the loss ignores padding, the
encoder skips it (packed sequences on the fused path, masked steps on the scratch path), and
attention never looks at it. Metrics: val/loss, val/token_acc, val/seq_acc (exact match).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from rnnexp.cells import ScratchRNN, has_cell_state, make_cell, make_rnn
from rnnexp.data import read_source
from rnnexp.errors import DataError
from rnnexp.model import cell_kind
from rnnexp.schema import Data
from rnnexp.tasks.base import Task, TaskData

PAD, BOS, EOS = "<pad>", "<s>", "</s>"
SYMBOLS = "abcdefghijklmnopqrstuvwxyz"

# --- tasks -------------------------------------------------------------------------------------


ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
        "sixteen seventeen eighteen nineteen").split()
TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()


def number_words(n: int) -> str:
    """0 <= n < 10**6 in English words: 407 -> "four hundred seven", 1042 -> "one thousand forty two"."""
    if n < 20:
        return ONES[n]
    if n < 100:
        return TENS[n // 10] + (f" {ONES[n % 10]}" if n % 10 else "")
    if n < 1000:
        return f"{ONES[n // 100]} hundred" + (f" {number_words(n % 100)}" if n % 100 else "")
    return f"{number_words(n // 1000)} thousand" + (f" {number_words(n % 1000)}" if n % 1000 else "")


def max_source_length(data: dict[str, Any]) -> int:
    """The longest source a generated task makes (the size of a vector encoder's input)."""
    if data["name"] == "number_words":
        return len(str(data["max_value"]))
    if data["name"] == "addition":
        return 2 * data["max_digits"] + 1
    return data["max_length"]


def make_pair(task: str, rng: random.Random, data: dict[str, Any]) -> tuple[str, str]:
    """One (source, target) example of a generated task."""
    if task == "number_words":  # the digits, zero-padded to a fixed length: one vector per number
        n = rng.randint(0, data["max_value"])
        return str(n).zfill(max_source_length(data)), number_words(n)
    if task == "addition":
        a, b = (rng.randint(0, 10 ** rng.randint(1, data["max_digits"]) - 1) for _ in range(2))
        return f"{a}+{b}", str(a + b)
    alphabet = SYMBOLS[: data["num_symbols"]]
    source = "".join(rng.choice(alphabet) for _ in range(rng.randint(data["min_length"], data["max_length"])))
    target = {"reverse": source[::-1], "copy": source, "sort": "".join(sorted(source))}[task]
    return source, target


def task_alphabet(data: dict[str, Any]) -> str:
    if data["name"] == "number_words":
        return "0123456789 " + SYMBOLS
    return "0123456789+" if data["name"] == "addition" else SYMBOLS[: data["num_symbols"]]


@dataclass
class SymbolVocab:
    """<pad> (token 0), <s>, </s>, then the characters of the task."""

    symbols: list[str]

    def __len__(self) -> int:
        return len(self.symbols)


class PairBatches:
    """Padded batches of pairs: (source (S, B), source lengths (B,), target (T + 1, B)), the target
    framed as <s> y </s>. A fixed list of pairs, or `batches` fresh ones per epoch from `generate`."""

    def __init__(self, vocab: SymbolVocab, batch_size: int, pairs: list[tuple[str, str]] | None = None,
                 generate: Any = None, batches: int = 0) -> None:
        self.vocab, self.batch_size, self.pairs = vocab, batch_size, pairs
        self.generate, self.batches = generate, batches

    def __len__(self) -> int:
        return self.batches if self.pairs is None else -(-len(self.pairs) // self.batch_size)

    def __iter__(self):
        for k in range(len(self)):
            if self.pairs is None:
                yield self.collate(self.generate(self.batch_size))
            else:
                yield self.collate(self.pairs[k * self.batch_size : (k + 1) * self.batch_size])

    def collate(self, pairs: list[tuple[str, str]]) -> tuple[Tensor, Tensor, Tensor]:
        index = {s: i for i, s in enumerate(self.vocab.symbols)}
        sources = [[index[c] for c in s] for s, _ in pairs]
        targets = [[index[BOS]] + [index[c] for c in t] + [index[EOS]] for _, t in pairs]
        return pad(sources), torch.tensor([len(s) for s in sources]), pad(targets)


def pad(sequences: list[list[int]]) -> Tensor:
    """(max length, batch), padded with token 0 (<pad>)."""
    out = torch.zeros(max(map(len, sequences)), len(sequences), dtype=torch.long)
    for b, seq in enumerate(sequences):
        out[: len(seq), b] = torch.tensor(seq, dtype=torch.long)
    return out


def load_seq2seq(config: dict[str, Any], data_dir: Path) -> TaskData:
    data, batch_size, seed = config["data"], config["batch_size"], config["seed"]
    if data["name"] == "parallel_text":
        return _parallel_text(data, batch_size, seed)
    rng = random.Random(seed + 1)
    held_out: dict[str, tuple[str, str]] = {}
    for _ in range(50 * data["valid_size"]):  # distinct sources, never seen in training
        source, target = make_pair(data["name"], rng, data)
        held_out[source] = (source, target)
        if len(held_out) == data["valid_size"]:
            break
    else:
        raise DataError(f"data={data['name']} has fewer than {data['valid_size']} distinct examples")
    vocab = SymbolVocab([PAD, BOS, EOS, *task_alphabet(data)])
    train_rng = random.Random(seed)

    def fresh(n: int) -> list[tuple[str, str]]:
        pairs = []
        while len(pairs) < n:
            pair = make_pair(data["name"], train_rng, data)
            if pair[0] not in held_out:
                pairs.append(pair)
        return pairs

    return TaskData(vocab, PairBatches(vocab, batch_size, generate=fresh, batches=data["train_batches"]),
                       PairBatches(vocab, batch_size, pairs=list(held_out.values())))


def _parallel_text(data: dict[str, Any], batch_size: int, seed: int) -> TaskData:
    """A UTF-8 TSV file, one `source<TAB>target` pair per line; the last val_fraction is validation."""
    path = Path(data["path"]).expanduser()
    pairs = []
    for number, line in enumerate(read_source(path).splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2 or not fields[0] or not fields[1]:
            raise DataError(f"{path} line {number}: expected 'source<TAB>target', got {line[:60]!r}")
        pairs.append((fields[0], fields[1]))
    n_val = max(1, int(len(pairs) * data["val_fraction"]))
    if len(pairs) - n_val < 1:
        raise DataError(f"{path} has {len(pairs)} pairs: too few to hold out {n_val} for validation")
    symbols = sorted({c for s, t in pairs for c in s + t})
    vocab = SymbolVocab([PAD, BOS, EOS, *symbols])
    train_pairs = pairs[:-n_val]
    rng = random.Random(seed)
    queue: list[tuple[str, str]] = []

    def shuffled(n: int) -> list[tuple[str, str]]:
        """The next n pairs of a stream of permutations: every pair once per epoch."""
        batch = []
        while len(batch) < min(n, len(train_pairs)):
            if not queue:
                queue.extend(rng.sample(train_pairs, len(train_pairs)))
            batch.append(queue.pop())
        return batch

    batches = -(-len(train_pairs) // batch_size)
    return TaskData(vocab, PairBatches(vocab, batch_size, generate=shuffled, batches=batches),
                       PairBatches(vocab, batch_size, pairs=pairs[-n_val:]))


# --- the model ---------------------------------------------------------------------------------


class AdditiveAttention(nn.Module):
    """Bahdanau attention: score_j = v . tanh(W_s s + W_h h_j); weights softmax over the source
    positions that are not padding; context = sum_j weight_j h_j."""

    def __init__(self, decoder_size: int, encoder_size: int, size: int) -> None:
        super().__init__()
        self.query = nn.Linear(decoder_size, size, bias=False)
        self.key = nn.Linear(encoder_size, size)
        self.v = nn.Linear(size, 1, bias=False)

    def forward(self, s: Tensor, keys: Tensor, encoder_outputs: Tensor, mask: Tensor) -> Tensor:
        scores = self.v(torch.tanh(self.query(s)[None] + keys)).squeeze(-1)  # (S, B)
        weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=0)
        return (weights[:, :, None] * encoder_outputs).sum(0)


class Seq2Seq(nn.Module):
    def __init__(self, vocab_size: int, cell: dict[str, Any], arch: dict[str, Any], source_length: int = 0) -> None:
        super().__init__()
        kind = cell_kind(cell)
        self.two_states, self.context_mode = has_cell_state(cell["name"]), arch["context"]
        emb, dec = arch["embedding_dim"], cell["hidden_size"]
        enc = arch["encoder_hidden_size"] or dec
        directions = 2 if arch["encoder_bidirectional"] else 1
        self.embedding = nn.Embedding(vocab_size, emb, padding_idx=0)
        self.vocab_size, self.source_length = vocab_size, source_length
        if arch.get("encoder", "rnn") == "vector":  # no encoder: the source is one vector, its symbols one-hot
            self.encoder = None
            self.bridge = nn.Linear(source_length * vocab_size, dec)
        else:
            self.encoder = make_rnn(input_size=emb, hidden_size=enc, bidirectional=directions == 2, **kind)
            # The learned bridge from the encoder's final state (both directions) to the decoder's size.
            self.bridge = nn.Linear(enc * directions, dec)
        every_step = self.context_mode in ("every_step", "both")
        self.attention = AdditiveAttention(dec, enc * directions, dec) if arch["attention"] else None
        cell_input = emb + dec * every_step + enc * directions * (self.attention is not None)
        self.decoder = make_cell(input_size=cell_input, hidden_size=dec, **kind)
        self.dropout = nn.Dropout(arch["dropout"])
        self.head = nn.Linear(dec + enc * directions * (self.attention is not None), vocab_size)

    def encode(self, source: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Encoder outputs (S, B, directions * enc) and the context vector (B, dec)."""
        if self.encoder is None:  # vector to sequence: context = tanh(W [onehot(x_1); ...; onehot(x_S)] + b)
            padded = F.pad(source, (0, 0, 0, self.source_length - source.shape[0]))  # <pad> is symbol 0
            vector = F.one_hot(padded, self.vocab_size).transpose(0, 1).flatten(1).float()
            context = torch.tanh(self.bridge(vector))
            return context[None], context  # no per-step outputs (attention is refused with it)
        embedded = self.embedding(source)
        if isinstance(self.encoder, ScratchRNN):
            outputs, state = self.encoder(embedded, lengths=lengths)
        else:  # torch's kernels skip the padding of packed sequences
            packed = pack_padded_sequence(embedded, lengths.cpu(), enforce_sorted=False)
            packed_out, state = self.encoder(packed)
            outputs, _ = pad_packed_sequence(packed_out, total_length=source.shape[0])
        h = state[0] if self.two_states else state  # (directions, B, enc): final h of each direction
        final = torch.cat(tuple(h), dim=-1)
        return outputs, torch.tanh(self.bridge(final))

    def start(self, source: Tensor, lengths: Tensor) -> dict[str, Any]:
        outputs, context = self.encode(source, lengths)
        h = context if self.context_mode in ("init", "both") else torch.zeros_like(context)
        mask = torch.arange(source.shape[0], device=source.device)[:, None] < lengths.to(source.device)[None]
        return {"state": (h, torch.zeros_like(h)) if self.two_states else h, "context": context, "outputs": outputs,
                "keys": self.attention.key(outputs) if self.attention else None, "mask": mask}

    def step(self, token: Tensor, memory: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        """One decoder step: previous symbol (B,) -> logits (B, vocab), the memory updated."""
        state = memory["state"]
        h_prev = state[0] if self.two_states else state
        inputs = [self.embedding(token)]
        if self.context_mode in ("every_step", "both"):
            inputs.append(memory["context"])
        attended = None
        if self.attention is not None:
            attended = self.attention(h_prev, memory["keys"], memory["outputs"], memory["mask"])
            inputs.append(attended)
        state = self.decoder(torch.cat(inputs, dim=-1), state)
        h = state[0] if self.two_states else state
        features = h if attended is None else torch.cat([h, attended], dim=-1)
        return self.head(self.dropout(features)), {**memory, "state": state}

    def forward(self, source: Tensor, lengths: Tensor, target: Tensor, teacher_prob: float = 1.0) -> Tensor:
        """Logits (T, B, vocab) for target[1:], each step fed target[t] (teacher forcing) with
        probability `teacher_prob`, else the model's own previous prediction."""
        memory, token, logits = self.start(source, lengths), target[0], []
        for t in range(target.shape[0] - 1):
            step_logits, memory = self.step(token, memory)
            logits.append(step_logits)
            token = target[t + 1]
            if teacher_prob < 1.0:
                own = step_logits.argmax(-1)
                token = torch.where(torch.rand(own.shape, device=own.device) < teacher_prob, token, own)
        return torch.stack(logits)

    @torch.no_grad()
    def greedy(self, source: Tensor, lengths: Tensor, bos: int, eos: int, max_length: int) -> Tensor:
        """Each step feeds back the most likely symbol; (max_length, B), padded with 0 after </s>."""
        memory = self.start(source, lengths)
        token = torch.full((source.shape[1],), bos, dtype=torch.long, device=source.device)
        done = torch.zeros_like(token, dtype=torch.bool)
        out = []
        for _ in range(max_length):
            step_logits, memory = self.step(token, memory)
            token = step_logits.argmax(-1)
            out.append(token.masked_fill(done, 0))
            done |= token == eos
        return torch.stack(out)

    @torch.no_grad()
    def beam_search(self, source: Tensor, lengths: Tensor, bos: int, eos: int, max_length: int,
                    beam_size: int) -> Tensor:
        """The most likely output of a beam of `beam_size` hypotheses per example (by total log
        probability), one example at a time; (max_length, B) like `greedy`."""
        results = []
        for b in range(source.shape[1]):
            n = int(lengths[b])
            memory = self.start(source[:n, b : b + 1].expand(n, beam_size), lengths[b : b + 1].expand(beam_size))
            beams = [([bos], 0.0)]
            finished: list[tuple[list[int], float]] = []
            for _ in range(max_length):
                tokens = torch.tensor([seq[-1] for seq, _ in beams], device=source.device)
                memory = _select(memory, len(beams))
                step_logits, memory = self.step(tokens, memory)
                log_probs = torch.log_softmax(step_logits.float(), -1)
                totals = torch.tensor([score for _, score in beams], device=source.device)[:, None] + log_probs
                top = totals.flatten().topk(min(beam_size, totals.numel()))
                chosen, new_beams = [], []
                for score, flat in zip(top.values.tolist(), top.indices.tolist(), strict=True):
                    row, symbol = divmod(flat, log_probs.shape[1])
                    (finished if symbol == eos else new_beams).append((beams[row][0] + [symbol], score))
                    if symbol != eos:
                        chosen.append(row)
                if not new_beams or (finished and max(s for _, s in finished) >= new_beams[0][1]):
                    break
                beams, memory = new_beams, _select(memory, chosen)
            best = max(finished or beams, key=lambda item: item[1])[0][1:]
            results.append(best[:max_length] + [0] * (max_length - len(best[:max_length])))
        return torch.tensor(results, device=source.device).T


def _select(memory: dict[str, Any], rows: int | list[int]) -> dict[str, Any]:
    """The memory of the chosen beam rows (an int: the first `rows` rows)."""
    index = list(range(rows)) if isinstance(rows, int) else rows
    state = memory["state"]
    return {
        "state": tuple(s[index] for s in state) if isinstance(state, tuple) else state[index],
        "context": memory["context"][index],
        "outputs": memory["outputs"][:, index],
        "keys": None if memory["keys"] is None else memory["keys"][:, index],
        "mask": memory["mask"][:, index],
    }


# --- the task ----------------------------------------------------------------------------------


@dataclass
class PairData(Data):
    """Generated pairs (reverse, copy, sort: `num_symbols`, lengths; addition: `max_digits`;
    number_words: `max_value`), or a tab-separated file of pairs (parallel_text: `path`)."""

    num_symbols: int
    min_length: int
    max_length: int
    max_digits: int
    max_value: int
    train_batches: int
    valid_size: int
    path: str
    val_fraction: float


class Seq2SeqTask(Task):
    """Source to target pairs through an encoder and a decoder; judged by val/seq_acc."""

    data_schema = PairData

    @classmethod
    def arch_refusal(cls, arch: str, data: str) -> str | None:
        return None if arch == "seq2seq" else f"data={data} is a sequence-to-sequence task: use arch=seq2seq"

    def __init__(self, config: dict[str, Any], vocab: list) -> None:
        super().__init__(config, vocab)
        data = config["data"]
        source_length = max_source_length(data) if data["name"] != "parallel_text" else 0
        self.model = Seq2Seq(len(vocab), config["cell"], config["arch"], source_length)
        self.bos, self.eos = vocab.index(BOS), vocab.index(EOS)

    @classmethod
    def load_data(cls, config: dict[str, Any], data_dir: Path, cache_dir: Path) -> TaskData:
        return load_seq2seq(config, data_dir)

    def step_loss(self, batch: tuple[Tensor, Tensor, Tensor]) -> Tensor | None:
        source, lengths, target = batch
        logits = self.model(source, lengths, target, self.config["arch"]["teacher_forcing"])
        loss = F.cross_entropy(logits.flatten(0, 1), target[1:].flatten(), ignore_index=0)  # padding ignored
        if self.skip_nonfinite_loss(loss):
            return None
        self.count_train(loss, int(lengths.sum()))  # source symbols read (host-side lengths: no sync)
        return loss

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        source, lengths, target = batch
        return source.to(device), lengths, target.to(device)  # lengths stay on the host for packing

    def decode(self, source: Tensor, lengths: Tensor, max_length: int) -> Tensor:
        beam = self.config["decode"]["beam_size"]
        if beam > 1:
            return self.model.beam_search(source, lengths, self.bos, self.eos, max_length, beam)
        return self.model.greedy(source, lengths, self.bos, self.eos, max_length)

    def on_validation_epoch_start(self) -> None:
        # nll, target tokens, correct tokens, exact sequences, sequences: summed on the device
        self._sums = torch.zeros(5, device=self.device, dtype=torch.float64)
        self._examples: list[tuple[str, str, str]] = []

    def validation_step(self, batch: tuple[Tensor, Tensor, Tensor], batch_idx: int) -> None:
        source, lengths, target = batch
        logits = self.model(source, lengths, target).float()
        gold = target[1:]  # y </s>, padded
        real = gold != 0
        decoded = self.decode(source, lengths, gold.shape[0])
        matches = (decoded == gold) & real
        exact = (matches | ~real).all(0)
        self._sums += torch.stack([
            F.cross_entropy(logits.flatten(0, 1), gold.flatten(), ignore_index=0, reduction="sum"),
            real.sum(), matches.sum(), exact.sum(), torch.tensor(gold.shape[1], device=self.device),
        ]).double()
        if batch_idx == 0:
            for b in range(min(4, source.shape[1])):
                self._examples.append(tuple(self._text(x[:, b]) for x in (source, gold, decoded)))

    def _text(self, tokens: Tensor) -> str:
        symbols = []
        for t in tokens.tolist():
            if t in (0, self.eos):
                break
            symbols.append(self.vocab[t])
        return "".join(symbols)

    def validation_metrics(self) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        nll, tokens, correct, exact, count = self.sum_over_ranks(self._sums)  # all DDP processes
        seq_acc = (exact / count).float()
        return (nll / tokens).float(), {"val/token_acc": (correct / tokens).float(), "val/seq_acc": seq_acc}, seq_acc

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.log_validation(*self.validation_metrics())
        table = "| source | target | prediction |\n|---|---|---|\n" + "\n".join(
            f"| {s} | {t} | {p}{'' if p == t else ' ✗'} |" for s, t, p in self._examples)
        self.log_text("val/examples", table, preformatted=False)
