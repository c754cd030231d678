"""A callback of your own, outside the rnnexp package: the norm of all weights every N steps, a
quick look at whether weight decay or a regulariser holds the weights down.

    PYTHONPATH=examples python train.py hydra.searchpath=[file://examples/conf] callbacks=with_weight_norm
"""

import pytorch_lightning as pl
import torch


class WeightNorm(pl.Callback):
    """Logs `weights/norm`, the L2 norm of every trainable parameter together, every `every_n_steps`."""

    def __init__(self, every_n_steps: int = 50) -> None:
        self.every_n_steps = every_n_steps

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args) -> None:
        step = trainer.global_step
        if step % self.every_n_steps == 0:  # read on the host only here, not at every step
            norm = torch.linalg.vector_norm(torch.stack([p.detach().norm() for p in pl_module.parameters()]))
            for logger in trainer.loggers:
                logger.log_metrics({"weights/norm": float(norm)}, step=step - 1)
