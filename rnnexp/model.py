"""The language model of Arch 1: embed each token, run the recurrent stack (the hidden state is fed
back), and predict the next token from each hidden state."""

from __future__ import annotations

from torch import Tensor, nn

from rnnexp.cells import State, make_rnn


class RNNLanguageModel(nn.Module):
    """tokens (T, B) -> logits (T, B, vocab_size); sequence-first like torch.nn.RNN."""

    def __init__(
        self,
        vocab_size: int,
        embedding_dim: int,
        cell: str,
        impl: str,
        hidden_size: int,
        num_layers: int = 1,
        activation: str = "tanh",
        combine: str = "sum",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.rnn = make_rnn(cell, impl, embedding_dim, hidden_size, num_layers, activation, combine, dropout)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size, vocab_size)

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        outputs, state = self.rnn(self.embedding(tokens), state)
        return self.head(self.dropout(outputs)), state
