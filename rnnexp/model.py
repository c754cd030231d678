"""Language models and the recurrent stacks every architecture is built from.

- Arch 1 (`arch1`, `deep`): the hidden state is fed back. Embed each token, run the recurrent
  stack, predict the next token from each hidden state.
- Arch 2 (`arch2`): the previous *output* is fed back instead of the hidden state.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from rnnexp.cells import ScratchRNN, State, has_cell_state, make_cell, make_rnn
from rnnexp.errors import import_object


def split_state(state: State | None, index: slice) -> State | None:
    if state is None:
        return None
    return tuple(s[index] for s in state) if isinstance(state, tuple) else state[index]


def join_states(states: list[State]) -> State:
    if isinstance(states[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*states, strict=True))
    return torch.cat(states)


class ResidualStack(nn.Module):
    """Single-layer RNNs stacked, with dropout between them and each layer above the first adding
    its input to its output (Wu et al. 2016): deep stacks train as easily as shallow ones."""

    def __init__(self, num_layers: int, dropout: float, **layer: Any) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            make_rnn(input_size=layer["input_size"] if i == 0 else layer["hidden_size"] * layer["directions"],
                     **{k: v for k, v in layer.items() if k not in ("input_size", "directions")})
            for i in range(num_layers)
        )
        self.per_layer = layer["directions"]  # state rows per layer
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        states = []
        for i, rnn in enumerate(self.layers):
            rows = slice(i * self.per_layer, (i + 1) * self.per_layer)
            out, layer_state = rnn(self.dropout(x) if i else x, split_state(state, rows))
            x = out + x if i else out
            states.append(layer_state)
        return x, join_states(states)


def cell_kind(cell: dict[str, Any]) -> dict[str, Any]:
    """The arguments of make_rnn and make_cell that a `cell` config names: which cell, its variant,
    implementation and activation, or the class of a custom cell (`cell._target_`)."""
    custom = import_object(cell["_target_"], "cell._target_") if cell["name"] == "custom" else None
    return dict(cell=cell["name"], impl=cell["impl"], activation=cell.get("activation", "tanh"),
                variant=cell.get("variant", "standard"), custom=custom)


def make_recurrent(cell: dict[str, Any], arch: dict[str, Any], input_size: int) -> nn.Module:
    """The recurrent stack an `arch` config describes, of `cell`: one layer (arch1), several with
    dropout and optional residual connections (deep), one or several bidirectional (bidirectional)."""
    num_layers, bidirectional = arch.get("num_layers", 1), arch["name"] == "bidirectional"
    layer = dict(**cell_kind(cell), hidden_size=cell["hidden_size"], combine=arch.get("combine", "sum"),
                 bidirectional=bidirectional)
    if arch.get("residual") and num_layers > 1:
        return ResidualStack(num_layers, arch["dropout"], input_size=input_size, directions=1 + bidirectional,
                             **layer)
    return make_rnn(input_size=input_size, num_layers=num_layers, dropout=arch["dropout"] if num_layers > 1 else 0.0,
                    **layer)


# The regularisers of AWD-LSTM (Merity et al. 2017) an Arch 1 language model takes (`arch.<key>`), with
# the value that turns each off. docs/architectures.md gives each one's rule and source.
REGULARISERS = {"embedding_dropout": 0.0, "input_dropout": 0.0, "output_dropout": 0.0, "weight_drop": 0.0,
                "zoneout": 0.0, "ar": 0.0, "tar": 0.0, "tie_weights": False}


class LockedDropout(nn.Module):
    """Variational dropout (Gal & Ghahramani 2016): one mask per sequence and unit, the same at every
    time step of the window, where nn.Dropout draws a new one at each step. x: (T, B, D)."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0:
            return x
        mask = x.new_empty(1, *x.shape[1:]).bernoulli_(1 - self.p) / (1 - self.p)
        return x * mask


def embedding_dropout(embedding: nn.Embedding, tokens: Tensor, p: float) -> Tensor:
    """Embedding dropout (Gal & Ghahramani 2016; AWD-LSTM's `dropoute`): whole rows of the embedding,
    every occurrence of a token, dropped for this batch, the kept rows scaled by 1 / (1 - p)."""
    weight = embedding.weight
    if p > 0:
        weight = weight * weight.new_empty(weight.shape[0], 1).bernoulli_(1 - p) / (1 - p)
    return nn.functional.embedding(tokens, weight)


class RNNLanguageModel(nn.Module):
    """Arch 1: tokens (T, B) -> logits (T, B, vocab_size); sequence-first like torch.nn.RNN.

    With AWD-LSTM's regularisers (`arch.<key>`, each off by default): embedding dropout, locked dropout
    on the embeddings' output and on the last layer's output, weight drop on the recurrent matrices,
    zoneout (scratch cells), tied input and output embeddings (Press
    & Wolf 2017; Inan et al. 2017), and in training the activation penalties `self.penalty`
    = ar * mean(o_t^2) (AR, on the dropped output) + tar * mean((h_t - h_{t-1})^2) (TAR, on the raw
    output), which the task adds to the loss."""

    def __init__(self, vocab_size: int, cell: dict[str, Any], arch: dict[str, Any]) -> None:
        super().__init__()
        reg = {key: arch.get(key, off) for key, off in REGULARISERS.items()}
        self.embedding = nn.Embedding(vocab_size, arch["embedding_dim"])
        self.rnn = make_recurrent(cell, arch, arch["embedding_dim"])
        self.dropout = nn.Dropout(arch["dropout"])
        self.input_dropout = LockedDropout(reg["input_dropout"])
        self.output_dropout = LockedDropout(reg["output_dropout"])
        self.embedding_p, self.ar, self.tar = reg["embedding_dropout"], reg["ar"], reg["tar"]
        self.weight_drop = reg["weight_drop"]
        for module in self.rnn.modules():  # the scratch layers run the steps zoneout acts in
            if isinstance(module, ScratchRNN):
                module.zoneout = reg["zoneout"]
        self.head = nn.Linear(cell["hidden_size"], vocab_size)
        if reg["tie_weights"]:  # one tensor: the readout's rows are the tokens' embeddings
            # U(-0.1, 0.1) as AWD-LSTM and word_language_model start it: nn.Embedding's N(0, 1) rows as
            # the readout give logits of std ~sqrt(hidden_size), a near one-hot softmax that learns slowly
            nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
            self.head.weight = self.embedding.weight
        self.penalty: Tensor | None = None  # this forward's AR + TAR (training only)

    def forward(self, tokens: Tensor, state: State | None = None, targets: Tensor | None = None,
                teacher_prob: float = 1.0) -> tuple[Tensor, State]:
        embedded = embedding_dropout(self.embedding, tokens, self.embedding_p if self.training else 0.0)
        outputs, state = self.recurrent(self.input_dropout(embedded), state)
        dropped = self.dropout(self.output_dropout(outputs))
        self.penalty = None
        if self.training and (self.ar or self.tar):
            self.penalty = self.ar * dropped.float().pow(2).mean() + \
                self.tar * (outputs[1:] - outputs[:-1]).float().pow(2).mean()
        return self.head(dropped), state

    def recurrent(self, x: Tensor, state: State | None) -> tuple[Tensor, State]:
        """The recurrent stack; in training with weight drop (DropConnect on the recurrent matrices, Wan et
        al. 2013; AWD-LSTM's `wdrop`), run with W_hh dropped for this window, one mask for all its steps.
        The parameters keep the raw weights (what checkpoints save); torch's fused kernels still run, given
        the dropped matrices for this call."""
        if not (self.training and self.weight_drop > 0):
            return self.rnn(x, state)
        dropped = {name: nn.functional.dropout(weight, self.weight_drop, training=True)
                   for name, weight in self.rnn.named_parameters() if "weight_hh" in name}
        return torch.func.functional_call(self.rnn, dropped, (x, state))


class OutputFeedbackLM(nn.Module):
    """Arch 2, the output-recurrent RNN (Goodfellow et al. 2016, sec. 10.2.1): the cell's recurrent
    input is the previous step's output symbol y, as a learned vector F[y] of hidden size, not h:

        h_t = cell(W_ih x_t, F[y_{t-1}])      (LSTM: its cell state c is still carried)

    y_{t-1} is the true previous symbol (teacher forcing), the model's own prediction (sampled in
    training, the most likely one at validation), or a per-step mix of the two (scheduled sampling).
    The state carried between batches is the symbol to feed back next (and the LSTM's c)."""

    def __init__(self, vocab_size: int, cell: dict[str, Any], arch: dict[str, Any]) -> None:
        super().__init__()
        self.vocab_size, self.feedback_mode = vocab_size, arch["feedback"]
        self.two_states = has_cell_state(cell["name"])  # the LSTM's (h, c)
        self.embedding = nn.Embedding(vocab_size, arch["embedding_dim"])
        # Row vocab_size is "no output yet", a fixed zero vector, for the very first step.
        self.feedback = nn.Embedding(vocab_size + 1, cell["hidden_size"], padding_idx=vocab_size)
        self.cell = make_cell(input_size=arch["embedding_dim"], hidden_size=cell["hidden_size"], **cell_kind(cell))
        self.dropout = nn.Dropout(arch["dropout"])
        self.head = nn.Linear(cell["hidden_size"], vocab_size)

    def forward(self, tokens: Tensor, state: State | None = None, targets: Tensor | None = None,
                teacher_prob: float = 1.0) -> tuple[Tensor, State]:
        """`targets` (the true next symbols) are needed for teacher forcing in training; at
        validation and in generation the model feeds back its own most likely output."""
        batch = tokens.shape[1]
        if state is None:
            fed = tokens.new_full((batch,), self.vocab_size)
            c = tokens.new_zeros(batch, self.cell.hidden_size, dtype=torch.float) if self.two_states else None
        else:
            fed, c = state[0], (state[1] if self.two_states else None)
        teacher = self.training and targets is not None and self.feedback_mode != "sampled"
        embedded, logits = self.embedding(tokens), []
        for t in range(tokens.shape[0]):
            fb = self.feedback(fed)
            if self.two_states:
                h, c = self.cell(embedded[t], (fb, c.to(fb.dtype)))
            else:
                h = self.cell(embedded[t], fb)
            step_logits = self.head(self.dropout(h))
            logits.append(step_logits)
            fed = self._next_feedback(step_logits.detach(), targets[t] if teacher else None, teacher_prob)
        return torch.stack(logits), ((fed, c) if self.two_states else (fed,))

    def _next_feedback(self, logits: Tensor, target: Tensor | None, teacher_prob: float) -> Tensor:
        if not self.training:
            return logits.argmax(-1)  # its own most likely output
        if target is not None and self.feedback_mode == "teacher":
            return target
        # A sample by the Gumbel-max trick: unlike torch.multinomial it needs no host sync.
        noise = torch.empty_like(logits, dtype=torch.float).exponential_().log()
        own = (logits.float() - noise).argmax(-1)
        if target is None:
            return own
        use_teacher = torch.rand(target.shape, device=target.device) < teacher_prob  # scheduled sampling
        return torch.where(use_teacher, target, own)

    @staticmethod
    def with_feedback(state: State, token: Tensor) -> State:
        """The state with `token` (an emitted sample) as the output to feed back next."""
        return (token.view(-1), *state[1:])


def build_language_model(vocab_size: int, cell: dict[str, Any], arch: dict[str, Any]) -> nn.Module:
    return (OutputFeedbackLM if arch["name"] == "arch2" else RNNLanguageModel)(vocab_size, cell, arch)
