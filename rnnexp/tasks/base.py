"""What every task shares (`Task`): logging every N steps without host syncs in between, gradient
norms before and after clipping, the NaN guard, the HParams metrics, checkpoint extras, the optimizer and schedule.

A task is a LightningModule that also loads its own data (`load_data`), so the training entry point
has no per-task branches. Metrics are gathered on the device and read by the host only every
`log_every_n_steps` steps.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from rnnexp.cells import State
from rnnexp.errors import TrainingDiverged
from rnnexp.metrics import main_metric
from rnnexp.optim import build_optimizer, build_scheduler
from rnnexp.schema import Data

log = logging.getLogger("rnnexp")


def apply_to_state(state: State, fn: Any) -> State:
    """`fn` applied to the hidden state: one tensor, or a tuple of them (LSTM's (h, c))."""
    return tuple(fn(s) for s in state) if isinstance(state, tuple) else fn(state)


def detach_state(state: State) -> State:
    """Keep the values of the hidden state, drop the graph that produced them."""
    return apply_to_state(state, Tensor.detach)


def _wrapping_markdown(line: str) -> str:
    """One line of text as Markdown that shows it as it is: special characters escaped, and each space
    after another (HTML would fold them into one) a non-breaking one."""
    escaped = line.replace("&", "&amp;").replace("<", "&lt;")  # TensorBoard renders with Python-Markdown,
    escaped = re.sub(r"([\\`*_{}\[\]()>#+\-.!])", r"\\\1", escaped)  # which escapes these with a backslash
    return re.sub(r"(?<= ) ", "&nbsp;", escaped)


HPARAMS_RUN = "hparams"  # the sub-run of a run folder that TensorBoard's HParams tab reads (Task.on_fit_start)
# Where a run's files are, or how it was started: they differ between any two runs and say nothing of them.
NOT_HPARAMS = ("trainer", "logger", "callbacks", "run_dir", "data_dir", "cache_dir", "ckpt_path", "init_from",
               "steps_per_batch")  # how Lightning is driven: the steps are the same for any


def hparams_of(config: dict[str, Any], trainer: pl.Trainer) -> dict[str, bool | int | float | str]:
    """A run's settings as TensorBoard's HParams tab takes them: `group/key` (e.g. `cell/hidden_size`),
    each a bool, number or string (null as "null", a list as its JSON). The trainer settings that shape a
    run come as it runs them: `precision=16` is bf16-mixed on a CPU, `auto` the accelerator chosen."""
    import json

    def flat(node: Any, prefix: str) -> dict[str, Any]:
        if isinstance(node, dict):
            return {k: v for key, value in node.items() for k, v in flat(value, f"{prefix}{key}/").items()}
        if node is None:
            node = "null"
        elif not isinstance(node, (bool, int, float, str)):
            node = json.dumps(node)
        return {prefix[:-1]: node}

    params = flat({k: v for k, v in config.items() if k not in NOT_HPARAMS}, "")
    params.update(flat({"trainer": {k: config["trainer"].get(k) for k in ("max_steps", "max_time", "deterministic")}},
                       ""))
    params["trainer/precision"] = str(trainer.precision)
    params["trainer/accelerator"] = type(trainer.accelerator).__name__.removesuffix("Accelerator")
    return params


def _upgrade_loop_state(checkpoint: dict[str, Any]) -> None:
    """A checkpoint of before steps_per_batch counted its steps as Lightning's automatic optimisation
    does, and kept its training loader's position: the task steps its optimizer itself now (Lightning
    reads the step from that count), and the training batches follow from the step alone."""
    loop = checkpoint.get("loops", {}).get("fit_loop", {})
    automatic = loop.get("epoch_loop.automatic_optimization.optim_progress")
    manual = loop.get("epoch_loop.manual_optimization.optim_step_progress")
    if automatic and manual and manual["total"]["completed"] == 0:
        loop["epoch_loop.manual_optimization.optim_step_progress"] = automatic["optimizer"]["step"]
        loop.get("state_dict", {}).pop("combined_loader", None)


@dataclass
class TaskData:
    """What a task trains on: its vocabulary (`.symbols`, the list saved in checkpoints) and loaders."""

    vocab: Any
    train: Any
    valid: Any
    test: Any = None  # where the corpus has a test split


class Task(pl.LightningModule):
    """What every task shares: logging every N steps without host syncs in between, gradient norms
    before and after clipping, the NaN guard, the HParams metrics, checkpoint extras and the optimizer.

    A subclass loads its data (`load_data`), builds `self.model`, computes its loss in
    `training_step` (calling `count_train`), and reports validation through `log_validation`.
    `score_name` is its main metric, `val/<score_name>` (`rnnexp.metrics.main_metric`, from the config
    alone, so that summaries and searches know it without the task): the one best.ckpt, early stopping and
    the HParams tab (`val_hp/<score_name>`, `val_hp/best_<score_name>`) follow; `score()` turns a
    loss into it where it is a function of the loss."""

    # The keys its `data` config may hold (conf/data/*.yaml), checked before training starts.
    data_schema: type[Data] = Data
    # Whether a Lightning batch may hold several steps (`split_batch`; config.steps_per_batch).
    batch_holds_steps = False
    # Attributes set at every step or hook (Lightning sets `_current_fx_name` twice per hook call,
    # about 40 times a training step) that are never parameters, buffers or submodules: they skip
    # nn.Module.__setattr__'s checks, which cost about as much as a small tensor op each (see
    # docs/results.md, the benchmark). A subclass adds its own per-step attributes.
    plain_attributes = frozenset({"_current_fx_name", "_window_losses", "_window_norms", "_penalty_sum",
                                  "_window_tokens", "tokens_trained", "_named_parameters"})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "training_step" in cls.__dict__:  # under manual optimisation its loss would never be stepped
            raise TypeError(f"{cls.__qualname__} defines training_step: a task gives one step's loss in step_loss "
                            "(Task.training_step does the backward, clipping and update)")

    def __setattr__(self, name: str, value: Any) -> None:
        if name in self.plain_attributes:
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    @classmethod
    def arch_refusal(cls, arch: str, data: str) -> str | None:
        """Why this task cannot run `arch=<arch>` (None: it can). By default every architecture
        but Arch 2 (a language model's feedback) and seq2seq (a sequence-to-sequence task's)."""
        if arch == "arch2":
            return f"arch=arch2 feeds back its predicted next symbol: it is a language model, not for data={data}"
        if arch == "seq2seq":
            return (f"arch=seq2seq needs a sequence-to-sequence task (data=reverse, copy, sort, addition, "
                    f"number_words or parallel_text), not data={data}")
        return None

    def __init__(self, config: dict[str, Any], vocab: list) -> None:
        super().__init__()
        # The whole resolved config and the vocabulary go into every checkpoint.
        self.save_hyperparameters(logger=False)
        self.config, self.vocab, self.guard = config, vocab, config["guard"]
        metric, self.higher_is_better = main_metric(config)
        self.score_name = metric.removeprefix("val/")
        self.best_val_loss = math.inf
        self.best_score: float | None = None
        self.best_step = -1  # the step of best_score
        self.plateau: Any = None  # a ReduceLROnPlateau schedule, stepped after each validation
        self._plateau_state: dict[str, Any] | None = None
        self.first_logged_loss: float | None = None
        self.tokens_trained = 0
        self._named_parameters: list[tuple[str, Tensor]] | None = None  # the model's, listed at the first step
        # Host-side numbers for the progress bar, refreshed at logging steps only.
        self.progress_stats: dict[str, float] = {}
        self.sample_text: str | None = None
        self.continues_run = False  # set by train(): a resume into the run's own folder
        self.resumed_at_step: int | None = None  # set by train() with continues_run: the checkpoint's step
        self._hparams_writer: Any = None  # TensorBoard's HParams record of this run (see on_fit_start)
        self.test_loader: Any = None  # set by train() where the data has a test split
        self.test_metrics: dict[str, float] | None = None
        self._reset_log_window()

    @classmethod
    def load_data(cls, config: dict[str, Any], data_dir: Path, cache_dir: Path) -> TaskData:
        """The vocabulary and the train and validation loaders this config asks for."""
        raise NotImplementedError

    def check_processes(self, processes: int) -> None:
        """Refuse (ConfigError) a number of training processes (trainer=ddp) the task cannot split its data for."""

    def ranks(self) -> int:
        """The number of training processes: 1, or N under DDP."""
        return self._trainer.world_size if self._trainer is not None else 1

    def sum_over_ranks(self, value: Tensor) -> Tensor:
        """`value` summed over the DDP processes (itself in a single process)."""
        return self.trainer.strategy.reduce(value, reduce_op="sum") if self.ranks() > 1 else value

    def gather_from_ranks(self, value: Any) -> list:
        """`value` of every DDP process, in rank order (a list of one in a single process)."""
        if self.ranks() == 1:
            return [value]
        gathered = [None] * self.ranks()
        torch.distributed.all_gather_object(gathered, value)
        return gathered

    @property
    def main_metric(self) -> str:
        return f"val/{self.score_name}"

    def generate_sample(self) -> str | None:
        """Text the model writes at the end of training, if the task writes text (see `sample.*`)."""
        return None

    def validation_metrics(self) -> tuple[Tensor, dict[str, Tensor], Tensor]:
        """(loss, {"val/<metric>": value}, main score) of the validation steps since
        `on_validation_epoch_start`."""
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, loader: Any) -> dict[str, float]:
        """The validation metrics of another split (test, or a file), without Lightning: {"loss": ...,
        "bpc": ...}. Its own state and sums: training's carried state is left as it was."""
        was_training = self.training
        self.eval()
        self.on_validation_epoch_start()
        for index, batch in enumerate(loader):
            self.validation_step(self.transfer_batch_to_device(batch, self.device, 0), index)
        loss, metrics, _ = self.validation_metrics()
        self.train(was_training)
        return {"loss": float(loss), **{name.removeprefix("val/"): float(v) for name, v in metrics.items()}}

    def on_train_end(self) -> None:
        """The test split is measured once, with the final weights (`test/...`); the sample goes to
        sample.txt and the TEXT tab: here, while the loggers are still open; callbacks.Report prints both."""
        if self.test_loader is not None:  # every DDP process measures its share
            self.test_metrics = self.evaluate(self.test_loader)
            for logger in self.loggers:
                logger.log_metrics({f"test/{k}": v for k, v in self.test_metrics.items()}, step=self.global_step)
        if not self.trainer.is_global_zero:
            return
        self.sample_text = self.generate_sample()
        if self.sample_text is None:
            return
        (Path(self.config["run_dir"]) / "sample.txt").write_text(self.sample_text + "\n", encoding="utf-8")
        self.log_text("samples/final", self.sample_text)

    def log_text(self, tag: str, text: str, preformatted: bool = True) -> None:
        """Text to TensorBoard's TEXT tab (tags `samples/...`), at the step of the last training batch, as
        the validation it comes with is numbered. Preformatted text keeps its line breaks and spaces and
        wraps at the page's width (Markdown: each character that Markdown would read escaped, a hard
        break at each line's end, runs of spaces kept as such)."""
        if preformatted:
            text = "\n".join(_wrapping_markdown(line) + "  " for line in text.splitlines())
        for logger in self.loggers:
            if hasattr(getattr(logger, "experiment", None), "add_text"):  # TensorBoard's writer
                logger.experiment.add_text(tag, text, max(self.global_step - 1, 0))

    def score(self, loss: Tensor) -> Tensor:
        return loss

    def teacher_prob(self) -> float:
        """Scheduled sampling: the chance of feeding the true symbol decays as k / (k + exp(step / k)),
        the inverse sigmoid of Bengio et al. 2015; 1 without `arch.schedule_k`."""
        k = self.config["arch"].get("schedule_k") if self.config["arch"].get("feedback") == "scheduled" else None
        return k / (k + math.exp(min(self.global_step / k, 700))) if k else 1.0

    # --- training -------------------------------------------------------------------------------

    automatic_optimization = False  # training_step takes its own optimizer steps: several a batch

    def split_batch(self, batch: Any) -> Any:
        """The steps of one Lightning batch, one optimizer step each (`step_loss`): by default the batch
        itself; a language model's batch holds `steps_per_batch` unroll windows (data.TrainStream)."""
        return (batch,)

    def step_loss(self, batch: Any) -> Tensor | None:
        """The loss of one step's batch (having called `count_train`), or None to skip the step."""
        raise NotImplementedError

    def training_step(self, batch: Any, batch_idx: int) -> None:
        """One optimizer step for each step of the batch (`split_batch`): Lightning's per-batch cost
        (its hooks, loops and progress tracking, as much as a short step's own time) is paid once for
        all of them. Each step is a whole one: its loss, backward, `on_before_optimizer_step` (the
        gradient norms, the NaN guard, clipping and the logging of every N steps), the update, and
        the schedule. A skipped step (guard.on_nonfinite=skip) updates nothing but still counts, so
        that step numbers stay those of the windows trained on."""
        optimizer, schedule = self.optimizers(), self.lr_schedulers()
        no_scaler = self._grad_scaler() is None
        for step_batch in self.split_batch(batch):
            if 0 < self.trainer.max_steps <= self.trainer.global_step:
                break  # the budget ends inside this batch
            loss = self.step_loss(step_batch)
            if loss is not None:
                self.manual_backward(loss)
            if loss is not None or no_scaler:  # fp16's GradScaler cannot step without gradients
                optimizer.step()  # Lightning's: on_before_optimizer_step, the update, global_step + 1
            optimizer.zero_grad(set_to_none=True)
            if schedule is not None:
                schedule.step()
            if self.trainer.should_stop:  # a signal (stopping.SaveOnStop): the batch ends after this step
                break

    def count_train(self, loss: Tensor, tokens: int, penalty: Tensor | None = None) -> None:
        """Add a step's loss (and a regulariser's `penalty`, trained on but not part of the loss the
        task reports) to the window averaged at the next logging step: kept as it is, on the device
        (no host sync, no tensor op a step); the NaN guard reads it there too (`first_bad_step`)."""
        self._window_losses.append((self.global_step, loss.detach()))
        if penalty is not None:
            penalty = penalty.detach().float()
            self._penalty_sum = penalty if self._penalty_sum is None else self._penalty_sum + penalty
        self._window_tokens += tokens
        self.tokens_trained += tokens  # by this process in this attempt (callbacks.Report adds up the attempts)

    def skip_nonfinite_loss(self, loss: Tensor) -> bool:
        """guard.on_nonfinite=skip: True (and a warning) for a NaN/inf loss; a host sync every step."""
        if self.guard["on_nonfinite"] == "skip" and not torch.isfinite(loss):
            log.warning("step %d: loss is %s; step skipped", self.global_step, loss.item())
            return True
        return False

    def _is_log_step(self) -> bool:
        # Lightning's rule for logging steps: (global_step + 1) % log_every_n_steps == 0.
        every = self.trainer.log_every_n_steps
        return every > 0 and (self.trainer.global_step + 1) % every == 0

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Runs after backward, before the update: the pre-clip gradient norms and the NaN guard,
        clipping (the top-level `clip`), and what clipping did, measured on the device: the total
        norm of the gradients the optimizer then applies (`vitals/grad_norm/total_after_clip`), and
        whether clipping shrank them (`vitals/grad_norm/clipped_frac`). At logging steps every value
        goes to the loggers in one copy to the host."""
        if self._named_parameters is None:
            self._named_parameters = list(self.model.named_parameters())
        named_grads = [(name, p.grad) for name, p in self._named_parameters if p.grad is not None]
        if not named_grads:  # a skipped step: nothing to apply
            return
        before = torch.nn.utils.get_total_norm([g for _, g in named_grads])
        self._window_norms.append((self.global_step, before))  # for the NaN guard and clipped_frac
        self._skip_if_nonfinite(before, optimizer)
        log_step = self._is_log_step()
        norms = {f"vitals/grad_norm/{name}": torch.linalg.vector_norm(g) for name, g in named_grads} \
            if log_step else {}
        clip = self.config["clip"]
        if clip:
            # torch's clip_grad_norm_ with the norm measured before clipping: not computed a second time
            # (a dozen small ops a step, much of a short step). It scales by clip / (norm + 1e-6) when
            # that is below 1, and that is what counts as clipped.
            torch.nn.utils.clip_grads_with_norm_([p for _, p in self._named_parameters], clip, before)
        if not log_step:
            return
        # the gradients after clipping, as the optimizer will see them: measured at logging steps
        after = torch.nn.utils.get_total_norm([p.grad for _, p in self._named_parameters if p.grad is not None])
        self.raise_if_diverged()
        norms["vitals/grad_norm/total"] = before
        norms["vitals/grad_norm/total_after_clip"] = after
        norms["vitals/grad_norm/clipped_frac"] = self.clipped_fraction()
        losses = [loss for _, loss in self._window_losses]
        loss_sum = torch.stack(losses).float().sum() if losses else torch.zeros((), device=self.device)
        train_loss = self.sum_over_ranks(loss_sum / max(len(losses), 1)) / self.ranks()
        elapsed = time.perf_counter() - self._window_start
        tokens_per_sec = self._window_tokens * self.ranks() / elapsed  # of all DDP processes together
        # One copy to the host for every value; written and flushed now, at the step they describe,
        # so they are on disk before this step's checkpoint (Lightning would write them after it,
        # and a kill in between would lose them for good).
        on_device = {**norms, "train/loss": train_loss}
        if self._penalty_sum is not None:  # AR/TAR: what the regularisers added to the loss trained on
            on_device["train/activation_penalty"] = self._penalty_sum / max(len(self._window_losses), 1)
        metrics = dict(zip(on_device, torch.stack([v.float() for v in on_device.values()]).tolist(), strict=True))
        lr = optimizer.param_groups[0]["lr"]
        # lr_log10: SGD's 0.5 and Adam's 0.01 on one linear chart (Custom Scalars) would be a line and zero
        metrics.update({"train/lr": lr, "train/lr_log10": math.log10(lr) if lr > 0 else -math.inf,
                        "train/tokens_per_sec": tokens_per_sec})
        for logger in self.loggers:
            logger.log_metrics(metrics, step=self.global_step)
            logger.save()
        self.progress_stats.update(loss=metrics["train/loss"], tok_per_s=tokens_per_sec)
        self._report_explosion(self.progress_stats["loss"])
        self._reset_log_window()

    def clipped_fraction(self) -> Tensor:
        """The share of this window's steps whose gradients clipping shrank: torch's clip_grad_norm_
        scales by clip / (norm + 1e-6) where that is below 1 (0 without clipping)."""
        clip = self.config["clip"]
        if not clip or not self._window_norms:
            return torch.zeros((), device=self.device)
        norms = torch.stack([norm for _, norm in self._window_norms]).float()
        return (clip / (norms + 1e-6) < 1).float().mean()

    def _skip_if_nonfinite(self, total_norm: Tensor, optimizer: torch.optim.Optimizer) -> None:
        """guard.on_nonfinite=skip: a NaN/inf gradient is dropped (a host sync, every step: the price of skipping)."""
        if self.guard["on_nonfinite"] != "skip" or self._grad_scaler() is not None:
            return  # stop: first_bad_step reads it later; fp16's GradScaler skips overflowing steps itself
        if not torch.isfinite(total_norm):
            log.warning("step %d: gradient norm is %s; step skipped", self.global_step, total_norm.item())
            optimizer.zero_grad(set_to_none=True)  # parameters without a gradient are not updated

    def _grad_scaler(self) -> Any:
        """fp16's GradScaler where the trainer has one (None without a trainer, in tests)."""
        return getattr(getattr(self._trainer, "precision_plugin", None), "scaler", None)

    def first_bad_step(self) -> int:
        """The first step since the last logging step whose loss or gradient norm was NaN or infinite
        (-1: none); one read of the device. Under guard.on_nonfinite=skip no bad value is kept, and
        under fp16's GradScaler overflowing gradients are expected (it skips those steps)."""
        checked = list(self._window_losses)
        if self.guard["on_nonfinite"] == "stop" and self._grad_scaler() is None:
            checked += self._window_norms
        if not checked:
            return -1
        finite = torch.isfinite(torch.stack([value.float() for _, value in checked])).tolist()
        return min((step for (step, _), ok in zip(checked, finite, strict=True) if not ok), default=-1)

    def raise_if_diverged(self) -> None:
        """Stop training once the loss or a gradient has been NaN or infinite (reads the device)."""
        first_bad = self.first_bad_step()
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
        # Each step's loss and pre-clip gradient norm, (step, value) on the device, until the next logging step.
        self._window_losses: list[tuple[int, Tensor]] = []
        self._window_norms: list[tuple[int, Tensor]] = []
        self._penalty_sum: Tensor | None = None
        self._window_tokens = 0
        self._window_start = time.perf_counter()

    def on_train_start(self) -> None:
        # Now on the training device: move what __init__ or a checkpoint made there; start the clock.
        self._window_losses = [(step, loss.to(self.device)) for step, loss in self._window_losses]
        self._window_norms = [(step, norm.to(self.device)) for step, norm in self._window_norms]
        if self._penalty_sum is not None:
            self._penalty_sum = self._penalty_sum.to(self.device)
        self._window_start = time.perf_counter()

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        # At max_steps, ask Lightning to stop: it then validates the final weights inside `fit`
        # (as it does when max_time or early stopping stops a run), so best.ckpt and last.ckpt see them.
        if 0 < self.trainer.max_steps <= self.trainer.global_step:
            self.trainer.should_stop = True

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
        loss, value = val_loss.item(), score.item()
        self.best_val_loss = min(self.best_val_loss, loss)
        if self.best_score is None or (value > self.best_score if self.higher_is_better else value < self.best_score):
            self.best_score, self.best_step = value, self.global_step
        if self.plateau is not None:
            self.plateau.step(loss)
        name = self.score_name
        values = {"val/loss": loss, **{k: float(v) for k, v in metrics.items()}, f"val_hp/{name}": value,
                  f"val_hp/best_{name}": self.best_score}
        # For checkpoints, early stopping and the progress bar. Under DDP the values are the same in
        # every process (summed over all of them); syncing keeps Lightning from asking for it.
        self.log_dict(values, logger=False, sync_dist=self.ranks() > 1)
        # Written by us at the step of the last training batch before it (Lightning's convention,
        # so that a resume's purge at the checkpoint's step keeps it), whatever Lightning's own
        # logger step counter says after a resume. TensorBoard gets the hp/ metrics in the HParams
        # sub-run only (on_fit_start): val_hp/ is val/ again, and the tab reads them there.
        hparams_metrics = {k: v for k, v in values.items() if k.startswith("val_hp/")}
        for logger in self.loggers:
            tensorboard = isinstance(logger, pl.loggers.TensorBoardLogger)
            logger.log_metrics({k: v for k, v in values.items() if not (tensorboard and k in hparams_metrics)},
                               step=self.global_step - 1)
            logger.save()
        if self._hparams_writer is not None:
            for tag, metric in hparams_metrics.items():
                self._hparams_writer.add_scalar(tag, metric, self.global_step - 1)
            self._hparams_writer.flush()
        self.progress_stats["val_loss"] = loss

    # --- bookkeeping ----------------------------------------------------------------------------

    def on_fit_start(self) -> None:
        """The run's settings for TensorBoard's HParams tab (and other loggers' records of them), and
        the layout of its Custom Scalars tab.

        The HParams tab reads a run's settings and metrics from a sub-run `<run>/hparams`: its session
        record (no experiment record, which TensorBoard would take from one run for all of them) and
        the `hp/` metrics of each validation. TensorBoard then lists the settings of every run (the union,
        a cell's `activation` or SGD's `momentum` included), those that differ between the runs first,
        and only the `hp/` metrics, which sit in that sub-run, as the metrics."""
        params = hparams_of(self.config, self.trainer)
        for logger in [] if self.continues_run else self.loggers:  # a resumed run's folder has them already
            logger.log_hyperparams(params)  # TensorBoardLogger: hparams.yaml only (no metrics given)
            if hasattr(getattr(logger, "experiment", None), "add_custom_scalars"):
                logger.experiment.add_custom_scalars(self.dashboard_layout())
        tensorboard = next((lg for lg in self.loggers if isinstance(lg, pl.loggers.TensorBoardLogger)), None)
        if tensorboard is not None and self.trainer.is_global_zero:
            from torch.utils.tensorboard import SummaryWriter
            from torch.utils.tensorboard.summary import hparams as hparams_summaries

            # A resume drops what an interrupted attempt wrote after its checkpoint, as the main run's logger does.
            self._hparams_writer = SummaryWriter(str(Path(tensorboard.log_dir) / HPARAMS_RUN),
                                                 purge_step=self.resumed_at_step)
            if not self.continues_run:
                _, session_start, _ = hparams_summaries(params, {})  # the session record only (see above)
                self._hparams_writer._get_file_writer().add_summary(session_start)
                self._hparams_writer.flush()

    def teardown(self, stage: str) -> None:
        if self._hparams_writer is not None:
            self._hparams_writer.close()
            self._hparams_writer = None

    def dashboard_layout(self) -> dict[str, dict[str, list]]:
        """TensorBoard's Custom Scalars tab: related curves in one chart (tags are regular expressions)."""
        main = self.score_name
        return {
            "training": {
                "loss: training vs validation (nats per token)": ["Multiline", ["train/loss", "val/loss"]],
                f"validation {main}, and the best so far": ["Multiline", [f"val/{main}", f"val_hp/best_{main}"]],
                "learning rate, log10 (optimizers' rates side by side)": ["Multiline", ["train/lr_log10"]],
                "tokens per second": ["Multiline", ["train/tokens_per_sec"]],
            },
            "gradients": {
                "total norm, before and after clipping": ["Multiline", ["vitals/grad_norm/total$",
                                                                        "vitals/grad_norm/total_after_clip"]],
                "share of steps clipped": ["Multiline", ["vitals/grad_norm/clipped_frac"]],
                **self.gradient_norm_charts(),
                "gradient flow: log10 |dL_T/dh_1| / |dL_T/dh_T| (0: all of it arrives; -20: vanished)":
                    ["Multiline", [r"vitals/gradient_flow/.*/first_over_last_log10"]],
            },
            "cells": {
                "saturated (|h| > 0.95) or dead (ReLU) units": ["Multiline", [r"vitals/cells/.*_frac"]],
                "mean gate openings": ["Multiline", [r"vitals/cells/.*_gate"]],
            },
        }

    def gradient_norm_charts(self) -> dict[str, list]:
        """One chart of per-parameter gradient norms for each layer (the embedding, each recurrent layer
        and direction, the output layer): a few lines a chart, each a parameter of that layer."""
        layers: dict[str, list[str]] = {}
        for name, _ in self.model.named_parameters():
            module, _, parameter = name.rpartition(".")
            layer = re.search(r"_l(\d+)(_reverse)?$", parameter)  # torch's fused stacks: weight_hh_l0, ..._reverse
            key = f"{module} layer {layer[1]}{' reverse' if layer[2] else ''}" if layer else module or parameter
            layers.setdefault(key, []).append(f"vitals/grad_norm/{re.escape(name)}$")
        return {f"gradient norm per parameter: {key}": ["Multiline", tags] for key, tags in layers.items()}

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
            "best_step": self.best_step,
            "plateau": None if self.plateau is None else self.plateau.state_dict(),
            "first_logged_loss": self.first_logged_loss,
            "log_window": (self._window_losses, len(self._window_losses), self._window_tokens),
            "penalty_window": self._penalty_sum,
            "norm_window": self._window_norms,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            **self.extra_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        _upgrade_loop_state(checkpoint)
        saved = checkpoint["rnnexp"]
        if self.continues_run:  # a resume into a new folder keeps its own best, as its best.ckpt does
            self.best_val_loss, self.best_score = saved["best_val_loss"], saved["best_score"]
            self.best_step = saved.get("best_step", -1)
        self._plateau_state = saved.get("plateau")  # configure_optimizers runs after this hook
        self.first_logged_loss = saved["first_logged_loss"]
        losses, steps, _ = saved["log_window"]  # the clock restarts: so do its tokens
        # Checkpoints of before steps_per_batch kept the window's sum: as many steps of its mean.
        self._window_losses = losses if isinstance(losses, list) else [(-1, losses / max(steps, 1))] * steps
        self._penalty_sum = saved.get("penalty_window")  # absent from checkpoints of before AR/TAR
        self._window_norms = saved.get("norm_window", [])
        torch.set_rng_state(saved["torch_rng"])
        if saved["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        self.load_extra_state(saved)

    def configure_optimizers(self) -> Any:
        optimizer = build_optimizer(self.parameters(), self.config["optim"], self.config["lr"])
        scheduler = build_scheduler(optimizer, self.config["sched"])
        if scheduler is None:
            return optimizer
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            # Stepped in log_validation with each new val/loss: Lightning's own plateau stepping
            # counts batches within an epoch, which need not line up with validations.
            self.plateau = scheduler
            if self._plateau_state is not None:
                scheduler.load_state_dict(self._plateau_state)
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": scheduler}  # stepped after each step (training_step)
