"""Training a language model with truncated BPTT in Lightning.

Lightning 2.x has no TBPTT of its own: the batches arrive in stream order (see `data.TBPTTBatches`)
and the module carries the hidden state from one batch to the next, detached, so gradients flow
through exactly `unroll` steps. Automatic optimisation is kept, so the Trainer's gradient clipping,
precision and accumulation work unchanged.

Metrics are gathered on the device and read by the host only every `log_every_n_steps` steps.
"""

from __future__ import annotations

import math
import time
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from rnnexp.cells import State
from rnnexp.model import RNNLanguageModel


def detach_state(state: State) -> State:
    """Keep the values of the hidden state, drop the graph that produced them."""
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


class LanguageModelTask(pl.LightningModule):
    def __init__(self, config: dict[str, Any], vocab: list[str]) -> None:
        super().__init__()
        # The whole resolved config and the vocabulary go into every checkpoint.
        self.save_hyperparameters(logger=False)
        self.config, self.vocab = config, vocab
        cell, arch = config["cell"], config["arch"]
        self.model = RNNLanguageModel(
            vocab_size=len(vocab),
            embedding_dim=arch["embedding_dim"],
            cell=cell["name"],
            impl=cell["impl"],
            hidden_size=cell["hidden_size"],
            activation=cell.get("activation", "tanh"),
            combine=arch["combine"],
            dropout=arch["dropout"],
        )
        self.train_state: State | None = None
        self.val_state: State | None = None
        self.best_val_loss = math.inf
        self.last_val_step = -1
        # Host-side numbers for the progress bar, refreshed at logging steps only.
        self.progress_stats: dict[str, float] = {}
        self._reset_log_window()

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        return self.model(tokens, state)

    # --- training -------------------------------------------------------------------------------

    def on_train_epoch_start(self) -> None:
        self.train_state = None  # every stream restarts at the start of the corpus

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        inputs, targets = batch
        logits, state = self.model(inputs, self.train_state)
        self.train_state = detach_state(state)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())  # mean NLL per token
        self._loss_sum += loss.detach()
        self._window_steps += 1
        self._window_tokens += targets.numel()
        return loss

    def _is_log_step(self) -> bool:
        # Lightning writes logged values when (global_step + 1) % log_every_n_steps == 0.
        every = self.trainer.log_every_n_steps
        return every > 0 and (self.trainer.global_step + 1) % every == 0

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Runs after backward and before clipping, so the gradient norms are the pre-clip ones."""
        if not self._is_log_step():
            return
        norms = {
            f"grad_norm/{name}": torch.linalg.vector_norm(p.grad)
            for name, p in self.model.named_parameters()
            if p.grad is not None
        }
        norms["grad_norm/total"] = torch.linalg.vector_norm(torch.stack(list(norms.values())))
        train_loss = self._loss_sum / self._window_steps
        elapsed = time.perf_counter() - self._window_start
        tokens_per_sec = self._window_tokens / elapsed
        self.log_dict(norms)
        self.log("train/loss", train_loss)
        self.log("lr", optimizer.param_groups[0]["lr"])
        self.log("perf/tokens_per_sec", tokens_per_sec)
        self.progress_stats.update(loss=train_loss.item(), tok_per_s=tokens_per_sec)
        self._reset_log_window()

    def _reset_log_window(self) -> None:
        self._loss_sum = torch.zeros((), device=self.device)
        self._window_steps = 0
        self._window_tokens = 0
        self._window_start = time.perf_counter()

    def on_train_start(self) -> None:
        self._reset_log_window()  # now on the training device, and the clock starts here

    # --- validation -----------------------------------------------------------------------------

    def on_validation_epoch_start(self) -> None:
        self.val_state = None  # validation carries its own state, separate from training's
        self._val_nll = torch.zeros((), device=self.device, dtype=torch.float64)
        self._val_tokens = 0

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        inputs, targets = batch
        logits, self.val_state = self.model(inputs, self.val_state)
        self._val_nll += F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="sum")
        self._val_tokens += targets.numel()

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        val_loss = (self._val_nll / self._val_tokens).float()
        self.best_val_loss = min(self.best_val_loss, val_loss.item())
        self.log_dict(
            {
                "val/loss": val_loss,
                "val/bpc": val_loss / math.log(2),
                "hp/val_bpc": val_loss / math.log(2),
                "hp/best_val_bpc": self.best_val_loss / math.log(2),
            }
        )
        self.progress_stats["val_loss"] = val_loss.item()
        self.last_val_step = self.global_step

    # --- bookkeeping ----------------------------------------------------------------------------

    def on_fit_start(self) -> None:
        """Hyperparameters to TensorBoard's HParams tab, linked to the `hp/` metrics logged at each
        validation. They start at log2(vocab), the bits per character of a uniform guess."""
        uniform_bpc = math.log2(len(self.vocab))
        for logger in self.loggers:
            logger.log_hyperparams(
                {k: v for k, v in self.config.items() if k not in ("trainer", "logger", "callbacks")},
                {"hp/val_bpc": uniform_bpc, "hp/best_val_bpc": uniform_bpc},
            )

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["best_val_loss"] = self.best_val_loss

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.best_val_loss = checkpoint.get("best_val_loss", math.inf)

    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(self.parameters(), self.config["optim"], self.config["lr"])
        scheduler = build_scheduler(optimizer, self.config["sched"])
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def build_optimizer(params: Any, optim: dict[str, Any], lr: float) -> torch.optim.Optimizer:
    if optim["name"] == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=optim["momentum"], weight_decay=optim["weight_decay"])
    if optim["name"] == "adam":
        return torch.optim.Adam(params, lr=lr, betas=tuple(optim["betas"]), weight_decay=optim["weight_decay"])
    raise ValueError(f"unknown optimizer {optim['name']!r}")


def build_scheduler(optimizer: torch.optim.Optimizer, sched: dict[str, Any]) -> Any:
    """`exponential`: lr = lr0 * decay_rate ** (step / decay_steps), TensorFlow's exponential_decay
    as used in the text8 study, applied smoothly at every step."""
    if sched["name"] == "none":
        return None
    if sched["name"] == "exponential":
        gamma = sched["decay_rate"] ** (1.0 / sched["decay_steps"])
        return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=gamma)
    raise ValueError(f"unknown schedule {sched['name']!r}")
