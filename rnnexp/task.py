"""Training tasks in Lightning: what is shared by every task (`Task`), and the language model
trained with truncated BPTT (`LanguageModelTask`).

Lightning 2.x has no TBPTT of its own: the batches arrive in stream order (see `data.TBPTTBatches`)
and the LM task carries the hidden state from one batch to the next, detached, so gradients flow
through exactly `unroll` steps. Automatic optimisation is kept, so the Trainer's gradient clipping,
precision and accumulation work unchanged.

Metrics are gathered on the device and read by the host only every `log_every_n_steps` steps.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from rnnexp.cells import State
from rnnexp.errors import CheckpointError, TrainingDiverged
from rnnexp.model import build_language_model

log = logging.getLogger("rnnexp")


def apply_to_state(state: State, fn: Any) -> State:
    """`fn` applied to the hidden state: one tensor, or a tuple of them (LSTM's (h, c))."""
    return tuple(fn(s) for s in state) if isinstance(state, tuple) else fn(state)


def detach_state(state: State) -> State:
    """Keep the values of the hidden state, drop the graph that produced them."""
    return apply_to_state(state, Tensor.detach)


class Task(pl.LightningModule):
    """What every task shares: logging every N steps without host syncs in between, pre-clip
    gradient norms, the NaN guard, the HParams metrics, checkpoint extras and the optimizer.

    A subclass builds `self.model`, computes its loss in `training_step` (calling `count_train`),
    and reports validation through `log_validation`. `score_name` is the metric the HParams tab
    shows (`hp/val_<score_name>`, `hp/best_val_<score_name>`), `score()` turns a loss into it."""

    score_name = "loss"
    higher_is_better = False

    def __init__(self, config: dict[str, Any], vocab: list) -> None:
        super().__init__()
        # The whole resolved config and the vocabulary go into every checkpoint.
        self.save_hyperparameters(logger=False)
        self.config, self.vocab, self.guard = config, vocab, config["guard"]
        self.best_val_loss = math.inf
        self.best_score: float | None = None
        self.last_val_step = -1
        self.first_logged_loss: float | None = None
        # The first step whose loss or gradient was NaN/inf, kept on the device (-1: none yet).
        self._first_bad_step = torch.tensor(-1)
        # Host-side numbers for the progress bar, refreshed at logging steps only.
        self.progress_stats: dict[str, float] = {}
        self._reset_log_window()

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any]) -> Task:
        """The trained module of a checkpoint loaded by `rnnexp.checkpoint.load_checkpoint`."""
        saved = checkpoint.get("hyper_parameters") or {}
        if "config" not in saved or "vocab" not in saved:
            raise CheckpointError("the checkpoint has no rnnexp config and vocabulary: not made by rnnexp")
        task = task_class(saved["config"])(saved["config"], saved["vocab"])
        try:
            task.load_state_dict(checkpoint["state_dict"])
        except RuntimeError as e:
            first_line = str(e).splitlines()[0]
            raise CheckpointError(f"the checkpoint's weights do not fit its own config ({first_line})") from None
        return task

    def score(self, loss: Tensor) -> Tensor:
        return loss

    def teacher_prob(self) -> float:
        """Scheduled sampling: the chance of feeding the true symbol decays as k / (k + exp(step / k)),
        the inverse sigmoid of Bengio et al. 2015; 1 without `arch.schedule_k`."""
        k = self.config["arch"].get("schedule_k") if self.config["arch"].get("feedback") == "scheduled" else None
        return k / (k + math.exp(min(self.global_step / k, 700))) if k else 1.0

    # --- training -------------------------------------------------------------------------------

    def count_train(self, loss: Tensor, tokens: int) -> None:
        """Add a step's loss to the window averaged at the next logging step (no host sync)."""
        self._flag_if_nonfinite(loss.detach())
        self._loss_sum += loss.detach()
        self._window_steps += 1
        self._window_tokens += tokens

    def skip_nonfinite_loss(self, loss: Tensor) -> bool:
        """guard.on_nonfinite=skip: True (and a warning) for a NaN/inf loss; a host sync every step."""
        if self.guard["on_nonfinite"] == "skip" and not torch.isfinite(loss):
            log.warning("step %d: loss is %s; step skipped", self.global_step, loss.item())
            return True
        return False

    def _is_log_step(self) -> bool:
        # Lightning writes logged values when (global_step + 1) % log_every_n_steps == 0.
        every = self.trainer.log_every_n_steps
        return every > 0 and (self.trainer.global_step + 1) % every == 0

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Runs after backward and before clipping, so the gradient norms are the pre-clip ones."""
        named_grads = [(name, p.grad) for name, p in self.model.named_parameters() if p.grad is not None]
        if not named_grads:
            return
        if not self._is_log_step():
            self._guard_gradients(torch.nn.utils.get_total_norm([g for _, g in named_grads]), optimizer)
            return
        norms = {f"grad_norm/{name}": torch.linalg.vector_norm(grad) for name, grad in named_grads}
        norms["grad_norm/total"] = torch.linalg.vector_norm(torch.stack(list(norms.values())))
        self._guard_gradients(norms["grad_norm/total"], optimizer)
        self.raise_if_diverged()
        train_loss = self._loss_sum / max(self._window_steps, 1)
        elapsed = time.perf_counter() - self._window_start
        tokens_per_sec = self._window_tokens / elapsed
        self.log_dict(norms)
        self.log("train/loss", train_loss)
        self.log("lr", optimizer.param_groups[0]["lr"])
        self.log("perf/tokens_per_sec", tokens_per_sec)
        self.progress_stats.update(loss=train_loss.item(), tok_per_s=tokens_per_sec)
        self._report_explosion(self.progress_stats["loss"])
        self._reset_log_window()

    def _guard_gradients(self, total_norm: Tensor, optimizer: torch.optim.Optimizer) -> None:
        if getattr(self.trainer.precision_plugin, "scaler", None) is not None:
            return  # fp16's GradScaler skips overflowing steps itself; losses are still guarded
        if self.guard["on_nonfinite"] == "skip":
            if not torch.isfinite(total_norm):  # a host sync, every step: the price of skipping
                log.warning("step %d: gradient norm is %s; step skipped", self.global_step, total_norm.item())
                optimizer.zero_grad(set_to_none=True)  # parameters without a gradient are not updated
            return
        self._flag_if_nonfinite(total_norm)

    def _flag_if_nonfinite(self, value: Tensor) -> None:
        """Remember the first bad step on the device; it is read at logging steps and before saving."""
        bad = ~torch.isfinite(value) & (self._first_bad_step < 0)
        self._first_bad_step = torch.where(bad, self.global_step, self._first_bad_step)

    def raise_if_diverged(self) -> None:
        """Stop training once the loss or a gradient has been NaN or infinite (reads the device)."""
        first_bad = int(self._first_bad_step)
        if first_bad >= 0:
            raise TrainingDiverged(
                f"loss or gradient became NaN/inf at step {first_bad}; training stopped, the checkpoints "
                "hold the last finite state (try a lower lr, clip > 0, or guard.on_nonfinite=skip)"
            )

    def _report_explosion(self, train_loss: float) -> None:
        if self.first_logged_loss is None:
            self.first_logged_loss = train_loss
        factor = self.guard["explode_factor"]
        if factor and train_loss > factor * self.first_logged_loss:
            log.warning(
                "step %d: train loss %.3f is over %gx its first value %.3f: exploding?",
                self.global_step, train_loss, factor, self.first_logged_loss,
            )

    def _reset_log_window(self) -> None:
        self._loss_sum = torch.zeros((), device=self.device)
        self._window_steps = 0
        self._window_tokens = 0
        self._window_start = time.perf_counter()

    def on_train_start(self) -> None:
        # Now on the training device: move what __init__ or a checkpoint made there; start the clock.
        self._first_bad_step = self._first_bad_step.to(self.device)
        self._loss_sum = self._loss_sum.to(self.device)
        self._window_start = time.perf_counter()

    # --- validation -----------------------------------------------------------------------------

    def on_validation_start(self) -> None:
        self._validation_started = time.perf_counter()

    def on_validation_end(self) -> None:
        # Validation time is not training time: shift the throughput window's start past it.
        self._window_start += time.perf_counter() - self._validation_started

    def log_validation(self, val_loss: Tensor, metrics: dict[str, Tensor], score: Tensor) -> None:
        """Log a finished validation: val/loss, the task's metrics, and the HParams score."""
        if not torch.isfinite(val_loss):
            raise TrainingDiverged(f"validation loss is {val_loss.item()} at step {self.global_step}")
        self.best_val_loss = min(self.best_val_loss, val_loss.item())
        value = score.item()
        better = max if self.higher_is_better else min
        self.best_score = value if self.best_score is None else better(self.best_score, value)
        name = self.score_name
        hp = {f"hp/val_{name}": value, f"hp/best_val_{name}": self.best_score}
        self.log_dict({"val/loss": val_loss, **metrics, **hp})
        self.progress_stats["val_loss"] = val_loss.item()
        self.last_val_step = self.global_step

    # --- bookkeeping ----------------------------------------------------------------------------

    def initial_score(self) -> float:
        """The score before training, e.g. that of a uniform guess: the HParams tab starts there."""
        return 0.0

    def on_fit_start(self) -> None:
        """Hyperparameters to TensorBoard's HParams tab, linked to the `hp/` metrics logged at each
        validation."""
        if self.trainer.ckpt_path is not None:
            return  # resumed: the run folder has them already
        start = self.initial_score()
        for logger in self.loggers:
            logger.log_hyperparams(
                {k: v for k, v in self.config.items() if k not in ("trainer", "logger", "callbacks")},
                {f"hp/val_{self.score_name}": start, f"hp/best_val_{self.score_name}": start},
            )

    def extra_state(self) -> dict[str, Any]:
        """What a subclass needs, beyond Lightning's state and the base's, to resume exactly."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Everything beyond Lightning's own state that an exact resume needs."""
        self.raise_if_diverged()  # never write NaN weights over the last good checkpoint
        checkpoint["rnnexp"] = {
            "best_val_loss": self.best_val_loss,
            "best_score": self.best_score,
            "first_logged_loss": self.first_logged_loss,
            "log_window": (self._loss_sum, self._window_steps, self._window_tokens),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            **self.extra_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        saved = checkpoint["rnnexp"]
        self.best_val_loss, self.best_score = saved["best_val_loss"], saved["best_score"]
        self.first_logged_loss = saved["first_logged_loss"]
        self._loss_sum, self._window_steps, _ = saved["log_window"]  # the clock restarts: so do its tokens
        torch.set_rng_state(saved["torch_rng"])
        if saved["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        self.load_extra_state(saved)

    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(self.parameters(), self.config["optim"], self.config["lr"])
        scheduler = build_scheduler(optimizer, self.config["sched"])
        if scheduler is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class LanguageModelTask(Task):
    """Next-token prediction over token streams, with the hidden state carried between batches."""

    def __init__(self, config: dict[str, Any], vocab: list) -> None:
        super().__init__(config, vocab)
        self.model = build_language_model(len(vocab), config["cell"], config["arch"])
        # Word models are compared by perplexity, character and byte models by bits per symbol.
        self.score_name = "ppl" if config["tokenizer"]["name"] == "word" else "bpc"
        self.train_state: State | None = None
        self.val_state: State | None = None

    def forward(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        return self.model(tokens, state)

    def score(self, loss: Tensor) -> Tensor:
        """Mean NLL in nats as perplexity (word level) or bits per symbol (character and byte level)."""
        return torch.exp(loss) if self.score_name == "ppl" else loss / math.log(2)

    def initial_score(self) -> float:
        """The score of a uniform guess: log2(vocab) bits, or a perplexity of the vocabulary size."""
        return float(self.score(torch.tensor(math.log(len(self.vocab)))))

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor | None:
        inputs, targets = batch
        if batch_idx == 0:
            self.train_state = None  # a new epoch: every stream restarts at the start of the corpus
        logits, state = self.model(inputs, self.train_state, targets, self.teacher_prob())
        self.train_state = detach_state(state)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())  # mean NLL per token
        if self.skip_nonfinite_loss(loss):
            self.train_state = None  # the carried state may be what blew up
            return None  # Lightning then skips backward and the optimizer step
        self.count_train(loss, targets.numel())
        return loss

    def on_train_start(self) -> None:
        super().on_train_start()
        if self.train_state is not None:  # restored from a checkpoint
            self.train_state = apply_to_state(self.train_state, lambda s: s.to(self.device))

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
        score = self.score(val_loss)
        self.log_validation(val_loss, {f"val/{self.score_name}": score}, score)

    def extra_state(self) -> dict[str, Any]:
        return {"train_state": self.train_state}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.train_state = state["train_state"]


def task_class(config: dict[str, Any]) -> type[Task]:
    """The task a data config asks for: language modelling unless it says otherwise."""
    kind = config["data"].get("task", "lm")
    if kind == "segmentation":
        from rnnexp.segmentation import SegmentationTask

        return SegmentationTask
    if kind == "seq2seq":
        from rnnexp.seq2seq import Seq2SeqTask

        return Seq2SeqTask
    return LanguageModelTask


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
