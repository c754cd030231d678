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


def lstm_step(xw: Tensor, h: Tensor, c: Tensor, w_hh: Tensor, b_hh: Tensor, gates: list | None = None
              ) -> tuple[Tensor, Tensor]:
    """LSTM (Hochreiter & Schmidhuber, with a forget gate; torch's gate order i, f, g, o):
    i = σ(.), f = σ(.), g = tanh(.), o = σ(.) of W_ih x + b_ih + W_hh h + b_hh, split in four;
    c' = f * c + i * g;  h' = o * tanh(c'). `gates`, if given, receives this step's i, f, o."""
    i, f, g, o = (xw + F.linear(h, w_hh, b_hh)).chunk(4, dim=-1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c = f * c + i * g
    h = o * torch.tanh(c)
    if gates is not None:
        gates.append({"input_gate": i, "forget_gate": f, "output_gate": o})
    return h, c


def gru_step(xw: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor, gates: list | None = None) -> Tensor:
    """GRU (Cho et al. 2014, in the cuDNN/torch form where the reset gate scales W_hn h + b_hn):
    r = σ(W_ir x + b_ir + W_hr h + b_hr),  z = σ(W_iz x + b_iz + W_hz h + b_hz),
    n = tanh(W_in x + b_in + r * (W_hn h + b_hn)),  h' = (1 - z) * n + z * h.
    `gates`, if given, receives this step's r and z."""
    x_r, x_z, x_n = xw.chunk(3, dim=-1)
    h_r, h_z, h_n = F.linear(h, w_hh, b_hh).chunk(3, dim=-1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    if gates is not None:
        gates.append({"reset_gate": r, "update_gate": z})
    return (1 - z) * n + z * h


class ScratchRNN(nn.Module):
    """A stack of recurrent layers run step by step in Python, one readable equation per step;
    optionally bidirectional (a second RNN reads each sequence backwards; outputs concatenated)."""

    def __init__(
        self,
        cell: str,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        activation: str = "tanh",
        combine: str = "sum",
        dropout: float = 0.0,
        bidirectional: bool = False,
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
        self.directions = ["", "_reverse"] if bidirectional else [""]
        # Set to a dict by rnnexp.diagnostics: each layer's hidden states and gates of the next forward.
        self.probe: dict[str, dict] | None = None
        rows = GATES[cell] * hidden_size
        # Registered in torch's order (per layer and direction: w_ih, w_hh, b_ih, b_hh) so that
        # reset_parameters draws the same random numbers as nn.RNN/LSTM/GRU does.
        for layer in range(num_layers):
            layer_input = input_size if layer == 0 else hidden_size * len(self.directions)
            for sfx in self.directions:
                self.register_parameter(f"weight_ih_l{layer}{sfx}", nn.Parameter(torch.empty(rows, layer_input)))
                self.register_parameter(f"weight_hh_l{layer}{sfx}", nn.Parameter(torch.empty(rows, hidden_size)))
                self.register_parameter(f"bias_ih_l{layer}{sfx}", nn.Parameter(torch.empty(rows)))
                self.register_parameter(f"bias_hh_l{layer}{sfx}", nn.Parameter(torch.empty(rows)))
        if combine == "concat":
            for layer in range(num_layers):
                for sfx in self.directions:
                    w_mix = nn.Parameter(torch.empty(hidden_size, 2 * hidden_size))
                    self.register_parameter(f"weight_mix_l{layer}{sfx}", w_mix)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch's RNN initialisation: every parameter uniform in ±1/sqrt(hidden_size)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def initial_state(self, batch_size: int, like: Tensor) -> State:
        h = like.new_zeros(self.num_layers * len(self.directions), batch_size, self.hidden_size)
        return (h, h.clone()) if self.cell == "lstm" else h

    def forward(self, x: Tensor, state: State | None = None, lengths: Tensor | None = None) -> tuple[Tensor, State]:
        """x: (T, B, input_size) -> outputs (T, B, directions * hidden), final state shaped like
        nn.RNN/LSTM/GRU's. With `lengths` (B,), steps past each sequence's end leave its state
        unchanged and output zeros, and the backward direction starts at each sequence's last step."""
        if state is None:
            state = self.initial_state(x.shape[1], x)
        h0, c0 = state if self.cell == "lstm" else (state, None)
        mask = None if lengths is None else torch.arange(x.shape[0], device=x.device)[:, None] < lengths.to(x.device)
        final_h, final_c = [], []
        for layer in range(self.num_layers):
            if layer > 0 and self.dropout > 0:
                x = F.dropout(x, self.dropout, self.training)
            outputs = []
            for d, sfx in enumerate(self.directions):
                i = layer * len(self.directions) + d
                reverse = _reversal_index(mask, x) if sfx else None
                inputs = x if reverse is None else x.gather(0, reverse.expand(-1, -1, x.shape[2]))
                out, h, c = self._run(inputs, h0[i], None if c0 is None else c0[i], f"l{layer}{sfx}", mask)
                outputs.append(out if reverse is None else out.gather(0, reverse.expand(-1, -1, out.shape[2])))
                final_h.append(h)
                final_c.append(c)
            x = torch.cat(outputs, dim=-1) if len(outputs) > 1 else outputs[0]
        h_n = torch.stack(final_h)
        return x, ((h_n, torch.stack(final_c)) if self.cell == "lstm" else h_n)

    def _run(self, x: Tensor, h: Tensor, c: Tensor | None, name: str, mask: Tensor | None
             ) -> tuple[Tensor, Tensor, Tensor | None]:
        """One direction of one layer over time."""
        w_ih, w_hh = getattr(self, f"weight_ih_{name}"), getattr(self, f"weight_hh_{name}")
        b_ih, b_hh = getattr(self, f"bias_ih_{name}"), getattr(self, f"bias_hh_{name}")
        xw_all = F.linear(x, w_ih, b_ih)  # every step's input projection in one matmul
        step = self._rnn_or_gru_step(name)
        outputs = []
        gates = None if self.probe is None else []
        # unbind, not x[t]: indexing makes backward quadratic in T
        for t, xw in enumerate(xw_all.unbind(0)):
            if self.cell == "lstm":
                h_new, c_new = lstm_step(xw, h, c, w_hh, b_hh, gates)
            else:
                h_new, c_new = step(xw, h, w_hh, b_hh, gates), None
            if mask is None:
                h, c = h_new, c_new
                outputs.append(h)
            else:  # padding: keep the state, output zeros
                valid = mask[t][:, None]
                h = torch.where(valid, h_new, h)
                c = None if c is None else torch.where(valid, c_new, c)
                outputs.append(h_new * valid)
        if self.probe is not None:
            self.probe[name] = {"h": outputs, "gates": gates}
        return torch.stack(outputs), h, c

    def _rnn_or_gru_step(self, name: str) -> Callable[..., Tensor]:
        """The step of a gateless or GRU cell: (xw, h, w_hh, b_hh, gates) -> h'."""
        if self.cell == "gru":
            return gru_step
        if self.combine == "product":
            return lambda xw, h, w_hh, b_hh, _: rnn_product_step(xw, h, w_hh, b_hh, self.act)
        if self.combine == "concat":
            w_mix = getattr(self, f"weight_mix_{name}")
            return lambda xw, h, w_hh, b_hh, _: rnn_concat_step(xw, h, w_hh, b_hh, self.act, w_mix)
        return lambda xw, h, w_hh, b_hh, _: rnn_step(xw, h, w_hh, b_hh, self.act)


def _reversal_index(mask: Tensor | None, x: Tensor) -> Tensor:
    """A time index (T, B, 1) that reverses each sequence within its own length (padding stays put)."""
    steps = torch.arange(x.shape[0], device=x.device)[:, None].expand(x.shape[0], x.shape[1])
    if mask is None:
        return steps.flip(0)[:, :, None]
    lengths = mask.sum(0)
    return torch.where(mask, lengths - 1 - steps, steps)[:, :, None]


def make_rnn(
    cell: str,
    impl: str,
    input_size: int,
    hidden_size: int,
    num_layers: int = 1,
    activation: str = "tanh",
    combine: str = "sum",
    dropout: float = 0.0,
    bidirectional: bool = False,
) -> nn.Module:
    """The recurrent stack of `cell` in implementation `impl` ("scratch" or "fused"), initialised
    identically in both; LSTM forget-gate biases start at 1 (Gers et al.; Jozefowicz et al. 2015)."""
    if impl == "scratch":
        rnn: nn.Module = ScratchRNN(cell, input_size, hidden_size, num_layers, activation, combine, dropout,
                                    bidirectional)
    elif impl == "fused":
        if combine != "sum":
            raise ValueError(f"combine={combine!r} exists on the scratch path only (cell.impl=scratch)")
        fused = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}[cell]
        kwargs = {"nonlinearity": activation} if cell == "rnn" else {}
        rnn = fused(input_size, hidden_size, num_layers, dropout=dropout, bidirectional=bidirectional, **kwargs)
    else:
        raise ValueError(f"unknown cell implementation {impl!r}; choose 'scratch' or 'fused'")
    if cell == "lstm":
        with torch.no_grad():
            for name, bias in rnn.named_parameters():
                # b_ih + b_hh is the gate's bias: put the 1 in b_ih and zero b_hh's forget slice.
                if name.startswith("bias_"):
                    bias[hidden_size : 2 * hidden_size].fill_(1.0 if name.startswith("bias_ih") else 0.0)
    return rnn


class ScratchCell(nn.Module):
    """One step of a cell from its equations, with torch's cell parameter names (nn.RNNCell,
    nn.LSTMCell, nn.GRUCell): for architectures that choose each step's inputs themselves."""

    def __init__(self, cell: str, input_size: int, hidden_size: int, activation: str = "tanh") -> None:
        super().__init__()
        rows = GATES[cell] * hidden_size
        self.cell, self.hidden_size, self.act = cell, hidden_size, ACTIVATIONS[activation]
        self.weight_ih = nn.Parameter(torch.empty(rows, input_size))
        self.weight_hh = nn.Parameter(torch.empty(rows, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(rows))
        self.bias_hh = nn.Parameter(torch.empty(rows))
        bound = 1.0 / math.sqrt(hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def forward(self, x: Tensor, state: State) -> State:
        xw = F.linear(x, self.weight_ih, self.bias_ih)
        if self.cell == "lstm":
            return lstm_step(xw, state[0], state[1], self.weight_hh, self.bias_hh)
        if self.cell == "gru":
            return gru_step(xw, state, self.weight_hh, self.bias_hh)
        return rnn_step(xw, state, self.weight_hh, self.bias_hh, self.act)


def make_cell(cell: str, impl: str, input_size: int, hidden_size: int, activation: str = "tanh") -> nn.Module:
    """A single cell: ours (`scratch`) or torch's nn.RNNCell/LSTMCell/GRUCell (`fused`), same
    parameters from the same seed; LSTM forget-gate bias 1."""
    if impl == "scratch":
        module: nn.Module = ScratchCell(cell, input_size, hidden_size, activation)
    else:
        fused = {"rnn": nn.RNNCell, "lstm": nn.LSTMCell, "gru": nn.GRUCell}[cell]
        module = fused(input_size, hidden_size, **({"nonlinearity": activation} if cell == "rnn" else {}))
    if cell == "lstm":
        with torch.no_grad():
            module.bias_ih[hidden_size : 2 * hidden_size].fill_(1.0)
            module.bias_hh[hidden_size : 2 * hidden_size].zero_()
    return module
