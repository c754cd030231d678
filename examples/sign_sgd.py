"""An optimizer of your own, outside the rnnexp package: signSGD (Bernstein et al. 2018), each weight
moved by lr in the direction against the sign of its gradient, whatever the gradient's size.

    PYTHONPATH=examples python train.py hydra.searchpath=[file://examples/conf] optim=sign_sgd
"""

import torch


class SignSGD(torch.optim.Optimizer):
    """w <- w - lr * sign(g). rnnexp passes the parameters and `lr`; other keys come from the config."""

    def __init__(self, params, lr: float = 1e-3) -> None:
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad.sign(), alpha=-group["lr"])
        return loss
