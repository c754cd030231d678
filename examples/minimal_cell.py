"""A cell of your own, trained by rnnexp with every architecture:

    python train.py cell=custom cell._target_=examples.minimal_cell.LeakyRNNCell

or as a group option of its own, with examples/conf/cell/leaky.yaml:

    PYTHONPATH=examples python train.py hydra.searchpath=[file://examples/conf] cell=leaky
"""

import torch
from torch import nn


class LeakyRNNCell(nn.Module):
    """h' = (1 - a) * h + a * tanh(W_ih x + W_hh h + b): an Elman RNN that keeps a learned share of
    its old state, a = sigmoid(leak) per unit (0.5 at the start)."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.weight_ih = nn.Parameter(torch.randn(hidden_size, input_size) / input_size**0.5)
        self.weight_hh = nn.Parameter(torch.randn(hidden_size, hidden_size) / hidden_size**0.5)
        self.bias = nn.Parameter(torch.zeros(hidden_size))
        self.leak = nn.Parameter(torch.zeros(hidden_size))

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        a = torch.sigmoid(self.leak)
        return (1 - a) * h + a * torch.tanh(x @ self.weight_ih.T + h @ self.weight_hh.T + self.bias)
