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
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

State = Tensor | tuple[Tensor, Tensor]

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


def peephole_lstm_step(xw: Tensor, h: Tensor, c: Tensor, w_hh: Tensor, b_hh: Tensor, peep: Tensor,
                       gates: list | None = None) -> tuple[Tensor, Tensor]:
    """LSTM with peephole connections (Gers & Schmidhuber 2000): the gates also see the cell state
    through diagonal weights p_i, p_f, p_o; i and f look at c, o at the new c'."""
    i, f, g, o = (xw + F.linear(h, w_hh, b_hh)).chunk(4, dim=-1)
    p_i, p_f, p_o = peep.chunk(3)
    i, f, g = torch.sigmoid(i + p_i * c), torch.sigmoid(f + p_f * c), torch.tanh(g)
    c = f * c + i * g
    o = torch.sigmoid(o + p_o * c)
    if gates is not None:
        gates.append({"input_gate": i, "forget_gate": f, "output_gate": o})
    return o * torch.tanh(c), c


def cifg_lstm_step(xw: Tensor, h: Tensor, c: Tensor, w_hh: Tensor, b_hh: Tensor, gates: list | None = None
                   ) -> tuple[Tensor, Tensor]:
    """Coupled input and forget gate (Greff et al. 2017): no input gate of its own, i = 1 - f."""
    f, g, o = (xw + F.linear(h, w_hh, b_hh)).chunk(3, dim=-1)
    f, g, o = torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c = f * c + (1 - f) * g
    if gates is not None:
        gates.append({"forget_gate": f, "output_gate": o})
    return o * torch.tanh(c), c


def no_output_gate_lstm_step(xw: Tensor, h: Tensor, c: Tensor, w_hh: Tensor, b_hh: Tensor,
                             gates: list | None = None) -> tuple[Tensor, Tensor]:
    """LSTM without its output gate (Greff et al.'s NOG): h' = tanh(c')."""
    i, f, g = (xw + F.linear(h, w_hh, b_hh)).chunk(3, dim=-1)
    i, f, g = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g)
    c = f * c + i * g
    if gates is not None:
        gates.append({"input_gate": i, "forget_gate": f})
    return torch.tanh(c), c


def no_forget_gate_lstm_step(xw: Tensor, h: Tensor, c: Tensor, w_hh: Tensor, b_hh: Tensor,
                             gates: list | None = None) -> tuple[Tensor, Tensor]:
    """LSTM without a forget gate (Greff et al.'s NFG, the 1997 LSTM): c' = c + i * g."""
    i, g, o = (xw + F.linear(h, w_hh, b_hh)).chunk(3, dim=-1)
    i, g, o = torch.sigmoid(i), torch.tanh(g), torch.sigmoid(o)
    c = c + i * g
    if gates is not None:
        gates.append({"input_gate": i, "output_gate": o})
    return o * torch.tanh(c), c


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


def cho_gru_step(xw: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor, gates: list | None = None) -> Tensor:
    """GRU as Cho et al. 2014 write it: the reset gate scales h before the recurrent matrix,
    n = tanh(W_in x + b_in + W_hn (r * h) + b_hn); r, z and h' as in `gru_step` (z keeps the old h)."""
    x_r, x_z, x_n = xw.chunk(3, dim=-1)
    w_rz, w_n = w_hh.split([2 * h.shape[-1], h.shape[-1]])
    b_rz, b_n = b_hh.split([2 * h.shape[-1], h.shape[-1]])
    h_r, h_z = F.linear(h, w_rz, b_rz).chunk(2, dim=-1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + F.linear(r * h, w_n, b_n))
    if gates is not None:
        gates.append({"reset_gate": r, "update_gate": z})
    return (1 - z) * n + z * h


def mgu_step(xw: Tensor, h: Tensor, w_hh: Tensor, b_hh: Tensor, gates: list | None = None) -> Tensor:
    """Minimal gated unit (Zhou et al. 2016): one forget gate f does the work of the GRU's two,
    f = σ(W_if x + b_if + W_hf h + b_hf),  n = tanh(W_in x + b_in + W_hn (f * h) + b_hn),
    h' = (1 - f) * h + f * n."""
    x_f, x_n = xw.chunk(2, dim=-1)
    w_f, w_n = w_hh.chunk(2)
    b_f, b_n = b_hh.chunk(2)
    f = torch.sigmoid(x_f + F.linear(h, w_f, b_f))
    n = torch.tanh(x_n + F.linear(f * h, w_n, b_n))
    if gates is not None:
        gates.append({"forget_gate": f})
    return (1 - f) * h + f * n


# --- the built-in cells ----------------------------------------------------------------------------
# A new built-in cell is its step function above plus one entry here and one file in conf/cell/;
# everything else (config checks, state shapes, diagnostics) reads this table.
# A step takes (xw, h, c, p, gates) -> (h', c'): p holds the layer's recurrent parameters by name
# (weight_hh, bias_hh, any `extra` ones) and the activation `act`; c is None without a cell state.


@dataclass(frozen=True)
class Variant:
    rows: str  # the gate blocks stacked in W_ih / W_hh, in order (torch's order for its own cells)
    step: Callable[..., tuple[Tensor, Tensor | None]]
    fused: bool = False  # torch's kernel (nn.RNN/LSTM/GRU) computes exactly this variant
    identity_init: bool = False  # W_hh starts as the identity, biases at 0 (the IRNN)
    extra: tuple[tuple[str, int], ...] = ()  # more parameters per layer: (name, size in multiples of H)


@dataclass(frozen=True)
class CellType:
    variants: dict[str, Variant]
    cell_state: bool = False  # a second state c beside h, (h, c) as nn.LSTM has it
    activation: bool = False  # the step applies `cell.activation` (tanh or relu)
    forget_bias: float | None = None  # the starting bias of the forget gate "f", where there is one
    fused: tuple[type[nn.Module], type[nn.Module]] | None = None  # torch's (stack, single cell)


def _one_state(step: Callable) -> Callable:
    return lambda xw, h, c, p, gates: (step(xw, h, p["weight_hh"], p["bias_hh"], gates), None)


def _two_state(step: Callable) -> Callable:
    return lambda xw, h, c, p, gates: step(xw, h, c, p["weight_hh"], p["bias_hh"], gates)


def _vanilla(xw: Tensor, h: Tensor, c: None, p: dict, gates: list | None) -> tuple[Tensor, None]:
    return rnn_step(xw, h, p["weight_hh"], p["bias_hh"], p["act"]), None


def _peephole(xw: Tensor, h: Tensor, c: Tensor, p: dict, gates: list | None) -> tuple[Tensor, Tensor]:
    return peephole_lstm_step(xw, h, c, p["weight_hh"], p["bias_hh"], p["weight_peephole"], gates)


CELLS: dict[str, CellType] = {
    "rnn": CellType(
        {"standard": Variant("h", _vanilla, fused=True),
         "irnn": Variant("h", _vanilla, fused=True, identity_init=True)},
        activation=True, fused=(nn.RNN, nn.RNNCell)),
    "lstm": CellType(
        {"standard": Variant("ifgo", _two_state(lstm_step), fused=True),
         "peephole": Variant("ifgo", _peephole, extra=(("weight_peephole", 3),)),  # p_i, p_f, p_o
         "cifg": Variant("fgo", _two_state(cifg_lstm_step)),
         "no_output_gate": Variant("ifg", _two_state(no_output_gate_lstm_step)),
         "no_forget_gate": Variant("igo", _two_state(no_forget_gate_lstm_step))},
        cell_state=True, forget_bias=1.0, fused=(nn.LSTM, nn.LSTMCell)),
    "gru": CellType(
        {"standard": Variant("rzn", _one_state(gru_step), fused=True),
         "cho": Variant("rzn", _one_state(cho_gru_step))},
        fused=(nn.GRU, nn.GRUCell)),
    "mgu": CellType({"standard": Variant("fn", _one_state(mgu_step))}),
}


def has_cell_state(cell: str) -> bool:
    """Whether the state is an (h, c) pair (the LSTM) rather than h alone (custom cells: h alone)."""
    return cell in CELLS and CELLS[cell].cell_state


def variant_of(cell: str, variant: str) -> Variant:
    if cell not in CELLS or variant not in CELLS[cell].variants:
        known = [(c, v) for c, t in CELLS.items() for v in t.variants]
        raise ValueError(f"unknown cell {cell!r} with variant {variant!r}; choose from {known}")
    return CELLS[cell].variants[variant]


def fused_classes(cell: str, variant: str) -> tuple[type[nn.Module], type[nn.Module]]:
    """torch's (stack, single cell) classes that compute `cell` `variant`; ValueError where none does."""
    kind = CELLS.get(cell)
    if kind is None or kind.fused is None or not variant_of(cell, variant).fused:
        raise ValueError(f"{cell} {variant} has no fused kernel (cell.impl=scratch)")
    return kind.fused


def step_function(cell: str, variant: str, params: dict[str, Tensor], act: Callable, combine: str = "sum"
                  ) -> Callable[..., tuple[Tensor, Tensor | None]]:
    """One step of a cell and variant with its recurrent parameters bound: (xw, h, c, gates) ->
    (h', c'), c None for cells without a cell state. `combine` (product, concat) is Arch 1's way of
    joining input and state, defined for the vanilla RNN."""
    p = {**params, "act": act}
    w_hh, b_hh = params["weight_hh"], params["bias_hh"]
    if combine == "product":
        return lambda xw, h, c, gates: (rnn_product_step(xw, h, w_hh, b_hh, act), None)
    if combine == "concat":
        w_mix = params["weight_mix"]
        return lambda xw, h, c, gates: (rnn_concat_step(xw, h, w_hh, b_hh, act, w_mix), None)
    step = variant_of(cell, variant).step
    return lambda xw, h, c, gates: step(xw, h, c, p, gates)


def initialise(module: nn.Module, cell: str, variant: str, hidden_size: int, suffixes: list[str]) -> None:
    """The initialisation beyond torch's uniform ±1/√H: LSTM forget-gate bias 1 (Gers et al.;
    Jozefowicz et al. 2015), the IRNN's identity recurrent matrix and zero biases (Le et al. 2015)."""
    kind, spec = CELLS[cell], variant_of(cell, variant)
    with torch.no_grad():
        for sfx in suffixes:
            if kind.forget_bias is not None and "f" in spec.rows:
                # b_ih + b_hh is the gate's bias: put it in b_ih and zero b_hh's forget slice.
                forget = slice(spec.rows.index("f") * hidden_size, (spec.rows.index("f") + 1) * hidden_size)
                getattr(module, f"bias_ih{sfx}")[forget] = kind.forget_bias
                getattr(module, f"bias_hh{sfx}")[forget] = 0.0
            if spec.identity_init:
                getattr(module, f"weight_hh{sfx}").copy_(torch.eye(hidden_size))
                getattr(module, f"bias_ih{sfx}").zero_()
                getattr(module, f"bias_hh{sfx}").zero_()


class ScratchRNN(nn.Module):
    """A stack of recurrent layers run step by step in Python, one readable equation per step;
    optionally bidirectional (a second RNN reads each sequence backwards; outputs concatenated).
    `cell` is a name in CELLS with one of its variants, or "custom" with `custom` a class of your
    own: built as custom(input_size, hidden_size), stepped as h' = cell(x, h)."""

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
        variant: str = "standard",
        custom: type | None = None,
    ) -> None:
        super().__init__()
        spec = None if cell == "custom" else variant_of(cell, variant)
        if combine != "sum" and cell != "rnn":
            raise ValueError(f"combine={combine!r} is defined for the vanilla rnn cell only, not {cell!r}")
        if combine not in COMBINES:
            raise ValueError(f"unknown combine {combine!r}; choose from {list(COMBINES)}")
        self.cell, self.variant, self.combine, self.activation = cell, variant, combine, activation
        self.cell_state = has_cell_state(cell)
        self.act = ACTIVATIONS[activation]
        self.hidden_size, self.num_layers, self.dropout = hidden_size, num_layers, dropout
        self.directions = ["", "_reverse"] if bidirectional else [""]
        # Set to a dict by rnnexp.diagnostics: each layer's hidden states and gates of the next forward.
        self.probe: dict[str, dict] | None = None
        # Zoneout (Krueger et al. 2017; arch.zoneout, set by rnnexp.model): in training each unit keeps
        # its previous value (h, and the LSTM's c) with this probability at each step; at evaluation
        # h_t = z h_{t-1} + (1 - z) h~_t, its expectation.
        self.zoneout = 0.0
        layer_inputs = [input_size] + [hidden_size * len(self.directions)] * (num_layers - 1)
        if cell == "custom":  # one cell of yours per layer and direction, its parameters its own
            self.cells = nn.ModuleDict({f"l{layer}{sfx}": custom(size, hidden_size)
                                        for layer, size in enumerate(layer_inputs) for sfx in self.directions})
            return
        rows = len(spec.rows) * hidden_size
        # Registered in torch's order (per layer and direction: w_ih, w_hh, b_ih, b_hh) so that
        # reset_parameters draws the same random numbers as nn.RNN/LSTM/GRU does.
        for layer, size in enumerate(layer_inputs):
            for sfx in self.directions:
                self.register_parameter(f"weight_ih_l{layer}{sfx}", nn.Parameter(torch.empty(rows, size)))
                self.register_parameter(f"weight_hh_l{layer}{sfx}", nn.Parameter(torch.empty(rows, hidden_size)))
                self.register_parameter(f"bias_ih_l{layer}{sfx}", nn.Parameter(torch.empty(rows)))
                self.register_parameter(f"bias_hh_l{layer}{sfx}", nn.Parameter(torch.empty(rows)))
        for layer in range(num_layers):
            for sfx in self.directions:
                if combine == "concat":
                    w_mix = nn.Parameter(torch.empty(hidden_size, 2 * hidden_size))
                    self.register_parameter(f"weight_mix_l{layer}{sfx}", w_mix)
                for name, multiple in spec.extra:
                    self.register_parameter(f"{name}_l{layer}{sfx}", nn.Parameter(torch.empty(multiple * hidden_size)))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch's RNN initialisation: every parameter uniform in ±1/sqrt(hidden_size)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def initial_state(self, batch_size: int, like: Tensor) -> State:
        h = like.new_zeros(self.num_layers * len(self.directions), batch_size, self.hidden_size)
        return (h, h.clone()) if self.cell_state else h

    def forward(self, x: Tensor, state: State | None = None, lengths: Tensor | None = None) -> tuple[Tensor, State]:
        """x: (T, B, input_size) -> outputs (T, B, directions * hidden), final state shaped like
        nn.RNN/LSTM/GRU's. With `lengths` (B,), steps past each sequence's end leave its state
        unchanged and output zeros, and the backward direction starts at each sequence's last step."""
        if state is None:
            state = self.initial_state(x.shape[1], x)
        h0, c0 = state if self.cell_state else (state, None)
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
        return x, ((h_n, torch.stack(final_c)) if self.cell_state else h_n)

    def _run(self, x: Tensor, h: Tensor, c: Tensor | None, name: str, mask: Tensor | None
             ) -> tuple[Tensor, Tensor, Tensor | None]:
        """One direction of one layer over time."""
        if self.cell == "custom":
            cell = self.cells[name]
            xw_all, step = x, (lambda x_t, h, c, gates: (cell(x_t, h), None))
        else:
            params = {key.removesuffix(f"_{name}"): value for key, value in self.named_parameters(recurse=False)
                      if key.endswith(f"_{name}") and not key.startswith(("weight_ih", "bias_ih"))}
            step = step_function(self.cell, self.variant, params, self.act, self.combine)
            # every step's input projection in one matmul
            xw_all = F.linear(x, getattr(self, f"weight_ih_{name}"), getattr(self, f"bias_ih_{name}"))
        outputs = []
        gates = None if self.probe is None else []
        # unbind, not x[t]: indexing makes backward quadratic in T
        for t, xw in enumerate(xw_all.unbind(0)):
            h_new, c_new = step(xw, h, c, gates)
            if self.zoneout > 0:
                h_new, c_new = self._zone_out(h, h_new), None if c is None else self._zone_out(c, c_new)
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


    def _zone_out(self, old: Tensor, new: Tensor) -> Tensor:
        if self.training:
            return torch.where(torch.rand_like(new) < self.zoneout, old.to(new.dtype), new)
        return self.zoneout * old + (1 - self.zoneout) * new


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
    variant: str = "standard",
    custom: type | None = None,
) -> nn.Module:
    """The recurrent stack of `cell` in implementation `impl` ("scratch" or "fused"), initialised
    identically in both (see `initialise`)."""
    if impl == "scratch":
        rnn: nn.Module = ScratchRNN(cell, input_size, hidden_size, num_layers, activation, combine, dropout,
                                    bidirectional, variant, custom)
    elif impl == "fused":
        if combine != "sum":
            raise ValueError(f"combine={combine!r} exists on the scratch path only (cell.impl=scratch)")
        fused = fused_classes(cell, variant)[0]
        kwargs = {"nonlinearity": activation} if CELLS[cell].activation else {}
        rnn = fused(input_size, hidden_size, num_layers, dropout=dropout, bidirectional=bidirectional, **kwargs)
    else:
        raise ValueError(f"unknown cell implementation {impl!r}; choose 'scratch' or 'fused'")
    if cell != "custom":
        directions = ["", "_reverse"] if bidirectional else [""]
        initialise(rnn, cell, variant, hidden_size, [f"_l{k}{d}" for k in range(num_layers) for d in directions])
    return rnn


class ScratchCell(nn.Module):
    """One step of a cell from its equations, with torch's cell parameter names (nn.RNNCell,
    nn.LSTMCell, nn.GRUCell): for architectures that choose each step's inputs themselves."""

    def __init__(self, cell: str, input_size: int, hidden_size: int, activation: str = "tanh",
                 variant: str = "standard") -> None:
        super().__init__()
        spec = variant_of(cell, variant)
        rows = len(spec.rows) * hidden_size
        self.cell, self.variant, self.hidden_size, self.act = cell, variant, hidden_size, ACTIVATIONS[activation]
        self.cell_state = has_cell_state(cell)
        self.weight_ih = nn.Parameter(torch.empty(rows, input_size))
        self.weight_hh = nn.Parameter(torch.empty(rows, hidden_size))
        self.bias_ih = nn.Parameter(torch.empty(rows))
        self.bias_hh = nn.Parameter(torch.empty(rows))
        for name, multiple in spec.extra:
            self.register_parameter(name, nn.Parameter(torch.empty(multiple * hidden_size)))
        bound = 1.0 / math.sqrt(hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def forward(self, x: Tensor, state: State) -> State:
        params = {key: value for key, value in self.named_parameters() if not key.endswith("_ih")}
        step = step_function(self.cell, self.variant, params, self.act)
        h, c = state if self.cell_state else (state, None)
        h, c = step(F.linear(x, self.weight_ih, self.bias_ih), h, c, None)
        return (h, c) if self.cell_state else h


def make_cell(cell: str, impl: str, input_size: int, hidden_size: int, activation: str = "tanh",
              variant: str = "standard", custom: type | None = None) -> nn.Module:
    """A single cell: ours (`scratch`), torch's nn.RNNCell/LSTMCell/GRUCell (`fused`), same
    parameters from the same seed, or yours (`custom`: custom(input_size, hidden_size))."""
    if cell == "custom":
        return custom(input_size, hidden_size)
    if impl == "scratch":
        module: nn.Module = ScratchCell(cell, input_size, hidden_size, activation, variant)
    else:
        fused = fused_classes(cell, variant)[1]
        module = fused(input_size, hidden_size, **({"nonlinearity": activation} if CELLS[cell].activation else {}))
    initialise(module, cell, variant, hidden_size, [""])
    return module
