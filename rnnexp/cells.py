"""Recurrent cells written from their textbook equations, and the choice between them and torch's
fused kernels.

`ScratchRNN` is a drop-in for `torch.nn.RNN`, `nn.LSTM` and `nn.GRU` (sequence-first, state shaped
`(num_layers, batch, hidden)`, LSTM state a `(h, c)` pair). Its parameters have the same names,
shapes, gate order and initialisation as torch's, so with one seed both implementations start from
the same weights and a checkpoint of one loads into the other.

Notation: x is the input at step t, h the previous hidden state, W_ih / W_hh the input and
recurrent matrices with all gates stacked (one matmul for every gate), b_ih / b_hh their biases.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

State = Tensor | tuple[Tensor, Tensor]

GATES = {"rnn": 1, "lstm": 4, "gru": 3}
COMBINES = ("sum", "concat", "product")
ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {"tanh": torch.tanh, "relu": torch.relu}


# One time step of each cell. `xw` is the input already projected (W_ih x + b_ih): the projection of
# every step is done before the loop in one matmul, which is the main speed-up on a CPU.


def rnn_step(xw: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor, act: Callable) -> Tensor:
    """Elman RNN: h' = act(W_ih x + b_ih + W_hh h + b_hh)."""
    return act(xw + F.linear(h, w_hh, b_hh))


def rnn_product_step(xw: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor, act: Callable) -> Tensor:
    """Multiplicative combination: h' = act((W_ih x + b_ih) * (W_hh h + b_hh))."""
    return act(xw * F.linear(h, w_hh, b_hh))


def rnn_concat_step(
    xw: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor, act: Callable, w_mix: Tensor
) -> Tensor:
    """Concatenation mixed by one more matrix: h' = act(W_mix [W_ih x + b_ih ; W_hh h + b_hh])."""
    return act(F.linear(torch.cat((xw, F.linear(h, w_hh, b_hh)), dim=-1), w_mix))


def lstm_step(xw: Tensor, h: Tensor, c: Tensor, w_hh: Tensor, b_hh: Tensor) -> tuple[Tensor, Tensor]:
    """LSTM (Hochreiter & Schmidhuber, with a forget gate; torch's gate order i, f, g, o):
    i = σ(.), f = σ(.), g = tanh(.), o = σ(.) of W_ih x + b_ih + W_hh h + b_hh, split in four;
    c' = f * c + i * g;  h' = o * tanh(c')."""
    i, f, g, o = (xw + F.linear(h, w_hh, b_hh)).chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(c)
    return h, c


def gru_step(xw: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor) -> Tensor:
    """GRU (Cho et al. 2014, in the cuDNN/torch form where the reset gate scales W_hn h + b_hn):
    r = σ(W_ir x + b_ir + W_hr h + b_hr),  z = σ(W_iz x + b_iz + W_hz h + b_hz),
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),  h' = (1 - z) * n + z * h."""
    x_r, x_z, x_n = xw.chunk(3, dim=-1)
    h_r, h_z, h_n = F.linear(h, w_hh, b_hh).chunk(3, dim=-1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    return (1 - z) * n + z * h


class ScratchRNN(nn.Module):
    """A stack of recurrent layers run step by step in Python, one readable equation per step."""

    def __init__(
        self,
        cell: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        activation: str = "tanh",
        combine: str = "sum",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if cell not in GATES:
            raise ValueError(f"unknown cell {cell!r}; choose from {sorted(GATES)}")
        if combine != "sum" and cell != "rnn":
            raise ValueError(f"combine={combine!r} is defined for the vanilla rnn cell only, not {cell!r}")
        if combine not in COMBINES:
            raise ValueError(f"unknown combine {combine!r}; choose from {list(COMBINES)}")
        self.cell, self.combine, self.activation = cell, combine, activation
        self.act = ACTIVATIONS[activation]
        self.hidden_size, self.num_layers, self.dropout = hidden_size, num_layers, dropout
        rows = GATES[cell] * hidden_size
        # Registered in torch's order (w_ih, w_hh, b_ih, b_hh per layer) so reset_parameters draws
        # the same random numbers as nn.RNN/LSTM/GRU does.
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size
            self.register_parameter(f"weight_ih_l{layer}", nn.Parameter(torch.empty(rows, layer_input)))
            self.register_parameter(f"weight_hh_l{layer}", nn.Parameter(torch.empty(rows, hidden_size)))
            self.register_parameter(f"bias_ih_l{layer}", nn.Parameter(torch.empty(rows)))
            self.register_parameter(f"bias_hh_l{layer}", nn.Parameter(torch.empty(rows)))
        if combine == "concat":
            for layer in range(num_layers):
                w_mix = nn.Parameter(torch.empty(hidden_size, 2 * hidden_size))
                self.register_parameter(f"weight_mix_l{layer}", w_mix)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch's RNN initialisation: every parameter uniform in ±1/sqrt(hidden_size)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def initial_state(self, batch_size: int, like: Tensor) -> State:
        h = like.new_zeros(self.num_layers, batch_size, self.hidden_size)
        return (h, h.clone()) if self.cell == "lstm" else h

    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """x: (T, B, input_size) -> outputs (T, B, hidden), final state like nn.RNN/LSTM/GRU's."""
        if state is None:
            state = self.initial_state(x.shape[1], x)
        final_h, final_c = [], []
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0:
                x = F.dropout(x, self.dropout, self.training)
            w_ih, w_hh = getattr(self, f"weight_ih_l{layer}"), getattr(self, f"weight_hh_l{layer}")
            b_ih, b_hh = getattr(self, f"bias_ih_l{layer}"), getattr(self, f"bias_hh_l{layer}")
            xw_all = F.linear(x, w_ih, b_ih)  # every step's input projection in one matmul
            outputs = []
            if self.cell == "lstm":
                h, c = state[0][layer], state[1][layer]
                for xw in xw_all.unbind(0):  # unbind, not x[t]: indexing makes backward quadratic in T
                    h, c = lstm_step(xw, h, c, w_hh, b_hh)
                    outputs.append(h)
                final_c.append(c)
            else:
                h = state[layer]
                step = self._rnn_or_gru_step(layer)
                for xw in xw_all.unbind(0):
                    h = step(xw, h, w_hh, b_hh)
                    outputs.append(h)
            final_h.append(h)
            x = torch.stack(outputs)
        h_n = torch.stack(final_h)
        return x, ((h_n, torch.stack(final_c)) if self.cell == "lstm" else h_n)

    def _rnn_or_gru_step(self, layer: int) -> Callable[[Tensor, Tensor, Tensor, Tensor], Tensor]:
        if self.cell == "gru":
            return gru_step
        if self.combine == "product":
            return lambda xw, h, w_hh, b_hh: rnn_product_step(xw, h, w_hh, b_hh, self.act)
        if self.combine == "concat":
            w_mix = getattr(self, f"weight_mix_l{layer}")
            return lambda xw, h, w_hh, b_hh: rnn_concat_step(xw, h, w_hh, b_hh, self.act, w_mix)
        return lambda xw, h, w_hh, b_hh: rnn_step(xw, h, w_hh, b_hh, self.act)


def make_rnn(
    cell: str,
    impl: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    activation: str = "tanh",
    combine: str = "sum",
    dropout: float = 0.0,
) -> nn.Module:
    """The recurrent stack of `cell` in implementation `impl` ("scratch" or "fused"), initialised
    identically in both; LSTM forget-gate biases start at 1 (Gers et al.; Jozefowicz et al. 2015)."""
    if impl == "scratch":
        rnn: nn.Module = ScratchRNN(cell, input_size, hidden_size, num_layers, activation, combine, dropout)
    elif impl == "fused":
        if combine != "sum":
            raise ValueError(f"combine={combine!r} exists on the scratch path only (cell.impl=scratch)")
        fused = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell]
        kwargs = {"nonlinearity": activation} if cell == "rnn" else {}
        rnn = fused(input_size, hidden_size, num_layers, dropout=dropout, **kwargs)
    else:
        raise ValueError(f"unknown cell implementation {impl!r}; choose 'scratch' or 'fused'")
    if cell == "lstm":
        with torch.no_grad():
            for layer in range(num_layers):
                # b_ih + b_hh is the gate's bias: put the 1 in b_ih and zero b_hh's forget slice.
                getattr(rnn, f"bias_ih_l{layer}")[hidden_size : 2 * hidden_size].fill_(1.0)
                getattr(rnn, f"bias_hh_l{layer}")[hidden_size : 2 * hidden_size].zero_()
    return rnn
