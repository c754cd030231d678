"""Optimizers and learning-rate schedules, built from their config groups by Hydra's `_target_`.

`optim`: any `torch.optim.Optimizer` class; its config's keys are the class's arguments, except
`default_lr` (the top-level `lr` unless that is set). `sched`: any function or class that takes the
optimizer first and returns a scheduler (torch's own, or the two below); `sched=none` has no target.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from hydra.utils import instantiate

# Keys of the optim group that are ours, not the optimizer's.
OPTIM_OWN_KEYS = ("_target_", "default_lr")


def build_optimizer(params: Any, optim: dict[str, Any], lr: float) -> torch.optim.Optimizer:
    kwargs = {k: v for k, v in optim.items() if k not in OPTIM_OWN_KEYS}
    return instantiate({"_target_": optim["_target_"], **kwargs}, params, lr=lr, _convert_="all")


def build_scheduler(optimizer: torch.optim.Optimizer, sched: dict[str, Any] | None) -> Any:
    """The schedule `sched` describes for `optimizer`, or None for a constant learning rate."""
    if not sched or sched.get("_target_") is None:
        return None
    return instantiate(sched, optimizer, _convert_="all")


def exponential_decay(optimizer: torch.optim.Optimizer, decay_rate: float, decay_steps: int) -> Any:
    """lr = lr0 * decay_rate ** (step / decay_steps), TensorFlow's exponential_decay as used in the
    text8 study, applied smoothly at every step."""
    return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=decay_rate ** (1.0 / decay_steps))


def warmup_cosine(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                  min_lr_ratio: float = 0.1) -> Any:
    """nanoGPT's schedule: lr rises linearly to lr0 over `warmup_steps`, then follows half a cosine
    down to min_lr_ratio * lr0 at `total_steps`, and stays there."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
