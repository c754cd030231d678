"""Lightning callbacks and plugins, as the `callbacks` and `trainer` config groups use them.

`monitor: auto` in a callback's config is the task's main metric (val/bpc, val/ppl, val/f1 or
val/seq_acc: the one the HParams tab and the final report show), `mode: auto` the direction in which
the monitored metric improves.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint, RichProgressBar, WeightAveraging
from pytorch_lightning.plugins.io import TorchCheckpointIO
from pytorch_lightning.profilers import PassThroughProfiler

from rnnexp.checkpoint import atomic_save, load_checkpoint

log = logging.getLogger("rnnexp")
HIGHER_IS_BETTER = ("acc", "f1")  # metric names that end so are maximised; losses, bpc and ppl minimised


def resolve_monitor(callback: dict[str, Any], main_metric: str, higher_is_better: bool) -> dict[str, Any]:
    """A callback config with `monitor: auto` and `mode: auto` replaced by real values."""
    callback = dict(callback)
    if callback.get("monitor") == "auto":
        callback["monitor"] = main_metric
    if callback.get("mode") == "auto":
        maximise = higher_is_better if callback["monitor"] == main_metric else \
            callback["monitor"].endswith(HIGHER_IS_BETTER)
        callback["mode"] = "max" if maximise else "min"
    return callback


class AtomicCheckpointIO(TorchCheckpointIO):
    """Saves through a temporary file and a rename (a kill mid-save keeps the previous checkpoint);
    loads with weights_only=True and one-line errors for missing, corrupt or unsafe files."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        atomic_save(checkpoint, Path(path))

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> Any:
        # Resumes were checked by train() before fit; ddp_spawn hands its weights back as a bare state_dict.
        return load_checkpoint(path, "cpu" if map_location is None else map_location, training_state=False)


class NoProfiler(PassThroughProfiler):
    """What a Trainer without a `profiler` uses (Lightning's PassThroughProfiler), with `profile()` one
    shared do-nothing context instead of a new generator-made one each time: Lightning enters it around
    every hook of the module and of every callback, some 70 times a training step here."""

    _NOTHING = contextlib.nullcontext()

    def profile(self, action_name: str) -> contextlib.nullcontext:  # type: ignore[override]
        return self._NOTHING


class CachedStateKey:
    """`state_key` computed once: Lightning formats a checkpoint or early-stopping callback's key anew
    (a repr of its settings) each time it calls one of its hooks, about 6 times a training step. The
    settings it depends on are fixed when the callback is made."""

    @property
    def state_key(self) -> str:
        key = self.__dict__.get("_cached_state_key")
        if key is None:
            key = self._cached_state_key = super().state_key  # type: ignore[misc]
        return key


class Checkpoint(CachedStateKey, ModelCheckpoint):
    """Lightning's ModelCheckpoint (best by the monitored metric at each validation, plus last.ckpt),
    with last.ckpt also written every `every_n_steps` steps and always at the end of training:
    Lightning's own skips the end when an earlier validation already wrote one, so a run stopped by
    max_steps or max_time between validations would leave a stale last.ckpt."""

    def __init__(self, *args: Any, every_n_steps: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.every_n_steps = every_n_steps

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        super().on_train_batch_end(trainer, pl_module, *args)
        due = self.every_n_steps > 0 and trainer.global_step % self.every_n_steps == 0
        if due and self.save_last and self._last_global_step_saved != trainer.global_step:
            saved_at = self._last_global_step_saved
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            # Lightning skips a validation's saves at a step already saved: let this step's
            # validation still update best.ckpt (and last.ckpt after it).
            self._last_global_step_saved = saved_at

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        super().on_train_end(trainer, pl_module)


class EarlyStop(CachedStateKey, EarlyStopping):
    """Lightning's EarlyStopping, off while `patience` is null, and saying when it ends a run."""

    def __init__(self, patience: int | None = None, **kwargs: Any) -> None:
        super().__init__(patience=0 if patience is None else patience, **kwargs)
        self.enabled = patience is not None

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """A resume keeps its counters (waits, best score), but the settings are this run's: a
        resume may turn early stopping on or change its patience."""
        patience = self.patience
        super().load_state_dict(state_dict)
        self.patience = patience

    def _run_early_stopping_check(self, trainer: pl.Trainer) -> None:
        if not self.enabled:
            return
        super()._run_early_stopping_check(trainer)
        if trainer.should_stop and self.stopping_reason_message:
            log.info("early stopping at step %d: %s", trainer.global_step, self.stopping_reason_message)


class LMProgressBar(RichProgressBar):
    """Shows the host-side numbers the task refreshes at its logging steps (`progress_stats`:
    mean train loss, tokens per second, last validation loss) instead of tensors logged with
    `prog_bar=True`, which the bar would copy to the host at every refresh.

    It is drawn `refresh_rate` times a second at most, and between draws a step costs it one clock
    reading: Lightning's bar updates its counts and metrics at every training and validation batch
    and draws after each (about 3 ms a draw, in Python, holding the interpreter), which for a
    step of a few milliseconds doubled the time per step (docs/results.md, the benchmark). The
    counts it skipped are caught up before a validation, at the end of an epoch, at the end, and at the end
    of a validation outside fit (trainer.validate), whose bar stays on the screen."""

    def __init__(self, refresh_rate: int = 2, **kwargs: Any) -> None:
        super().__init__(refresh_rate=refresh_rate, **kwargs)
        self._interval = 1.0 / refresh_rate if refresh_rate > 0 else math.inf
        self._next_draw = 0.0
        self._behind: dict[Any, int] = {}  # bar -> the count it has not shown yet

    def _due(self) -> bool:
        return time.monotonic() >= self._next_draw

    def _update(self, progress_bar_id: Any, current: int, visible: bool = True, hard: bool = False) -> None:
        if not (hard or self._due()):
            if progress_bar_id is not None:
                self._behind[progress_bar_id] = current
            return
        self._next_draw = time.monotonic() + self._interval
        self._catch_up()
        super()._update(progress_bar_id, current, visible, hard)

    def _catch_up(self) -> None:
        """Show the counts skipped since the last draw (drawn at the next refresh)."""
        if self.progress is not None:
            for bar, current in self._behind.items():
                if bar in self.progress.task_ids:  # not one that ended since
                    self.progress.update(bar, completed=current)
        self._behind.clear()

    def _counts_steps(self) -> bool:
        """Whether the training bar counts steps up to max_steps: where the training data never ends an
        epoch (a language model's data.TrainStream), and a batch may hold several steps."""
        return getattr(self.trainer.train_dataloader, "endless", False)

    @property
    def total_train_batches(self) -> int | float:
        if self._counts_steps():
            return self.trainer.max_steps if self.trainer.max_steps > 0 else math.inf
        return super().total_train_batches

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        count = trainer.global_step if self._counts_steps() else args[-1] + 1  # steps, or batch_idx + 1
        if self.train_progress_bar_id is not None and not self._due():  # between draws: note the count only
            self._behind[self.train_progress_bar_id] = count
            return
        if not self.is_disabled and self.train_progress_bar_id is None:  # a resume mid-epoch (as Lightning's bar)
            self._initialize_train_progress_bar_id()
        self._update(self.train_progress_bar_id, count)
        self._update_metrics(trainer, pl_module)
        self.refresh()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._catch_up()
        super().on_train_epoch_end(trainer, pl_module)

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._catch_up()  # the training bar shows the step that validates
        super().on_validation_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.state.fn == "fit":
            self._behind.pop(self.val_progress_bar_id, None)  # Lightning hides the bar now
        else:  # trainer.validate: the bar stays, and ends at its full count
            self._catch_up()
            self.refresh()
        super().on_validation_epoch_end(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._catch_up()
        self.refresh()
        super().on_train_end(trainer, pl_module)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._catch_up()
        self.refresh(hard=True)
        super().on_exception(trainer, pl_module, exception)

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        stats = getattr(pl_module, "progress_stats", {})
        items.update({k: f"{v:,.0f}" if k.startswith("tok") else f"{v:.3f}" for k, v in stats.items()})
        return items

    def _get_train_description(self, current_epoch: int) -> str:
        if self._counts_steps():
            return "Steps"
        # Lightning's reads "Epoch 0/-2" when training is bounded by steps or time (max_epochs=-1).
        if self.trainer.max_epochs is None or self.trainer.max_epochs < 0:
            return f"Epoch {current_epoch}"
        return super()._get_train_description(current_epoch)


class StochasticWeightAverage(WeightAveraging):
    """Stochastic weight averaging (Izmailov et al. 2018): the equal average of the weights after every
    `every_n_steps`-th step from `start_step` on. Lightning's WeightAveraging does the rest: validation and
    the end of training use the average, checkpoints save it as their weights (sample.py and evaluate.py
    read those) with the trained ones beside them for an exact resume. Until the first step averaged,
    the trained weights are used and saved as they are (Lightning's callback would use its copy of the
    weights it started from). Its EMA twin is Lightning's own `EMAWeightAveraging`."""

    def __init__(self, start_step: int | None = 0, every_n_steps: int = 1, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.start_step, self.every_n_steps = start_step, every_n_steps

    def should_update(self, step_idx: int | None = None, epoch_idx: int | None = None) -> bool:
        return step_idx is not None and self.start_step is not None and step_idx >= self.start_step and \
            (step_idx - self.start_step) % self.every_n_steps == 0

    def averaging(self) -> bool:
        """Whether a step has been averaged yet."""
        return self._average_model is not None and int(self._average_model.n_averaged) > 0

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.averaging():
            super().on_validation_epoch_start(trainer, pl_module)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.averaging():
            super().on_validation_epoch_end(trainer, pl_module)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.averaging():
            super().on_train_end(trainer, pl_module)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        if self.averaging():
            super().on_save_checkpoint(trainer, pl_module, checkpoint)

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        if "current_model_state" in checkpoint or self._average_model is None:
            super().on_load_checkpoint(trainer, pl_module, checkpoint)
        else:  # saved before its first averaged step (see on_save_checkpoint): nothing averaged to restore
            self._average_model.module.load_state_dict(checkpoint["state_dict"], strict=False)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "start_step": self.start_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.start_step = state_dict.get("start_step", self.start_step)


class NonMonotonicAverage(StochasticWeightAverage):
    """NT-AvSGD (Merity et al. 2017, AWD-LSTM's NT-ASGD): train with SGD, and once the validation loss is
    worse than the best of all validations before the last `patience` ones, average the weights of every
    step from there on (SGD's iterates averaged: ASGD with no decay)."""

    def __init__(self, patience: int = 5, **kwargs: Any) -> None:
        super().__init__(start_step=None, **kwargs)
        self.patience = patience
        self.losses: list[float] = []

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or "val/loss" not in trainer.callback_metrics:
            return
        self.losses.append(float(trainer.callback_metrics["val/loss"]))
        if self.start_step is None and len(self.losses) > self.patience and \
                self.losses[-1] > min(self.losses[:-self.patience]):
            self.start_step = trainer.global_step
            log.info("step %d: validation loss %.4f is worse than the best before the last %d validations: "
                     "averaging the weights from here on (NT-AvSGD)", trainer.global_step, self.losses[-1],
                     self.patience)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "losses": self.losses}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.losses = list(state_dict.get("losses", []))


class PruneTrial(pl.Callback):
    """A job of an Optuna search (`hparams_search=NAME`): after each validation, reports the task's main
    metric at that step to the job's trial, and when the study's pruner (`hydra/sweeper/pruner=...`) finds
    the trial worse than earlier trials at the same step, stops the run after that step with last.ckpt
    written. result.json and the search's summary then say `pruned at step N`."""

    def __init__(self, trial: Any, metric: str) -> None:
        self.trial, self.metric = trial, metric  # an optuna.trial.Trial (rnnexp.search.trial_of_this_job)
        self.pruned_at_step: int | None = None

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or self.pruned_at_step is not None or self.metric not in trainer.callback_metrics:
            return
        value, step = float(trainer.callback_metrics[self.metric]), trainer.global_step
        self.trial.report(value, step)
        if self.trial.should_prune():
            from rnnexp.stopping import save_last

            self.pruned_at_step = step
            save_last(trainer)  # kept: a pruned trial can be looked at, or resumed with a larger budget
            trainer.should_stop = True
            log.info("trial %d pruned at step %d (%s %.4f)", self.trial.number, step, self.metric, value)


class Report(pl.Callback):
    """At the end of fit, in the process that trained (rank 0): the sample, the last validation,
    the best one with where it is saved, the test split, where the run is; and result.json, which
    train() returns from and scripts/summarize.py reads.

    It also measures the run's own wall time and throughput, for any length of run (the logged
    `train/tokens_per_sec` exists only every `log_every_n_steps`): `wall_seconds` from fit's start to
    its end (validations, the test split and the sample included), `tokens` trained (all processes:
    this process's count times their number, as `train/tokens_per_sec` counts them) and `tokens_per_sec`
    = tokens / wall_seconds. A resume carries both in its checkpoint (this callback's state_dict), so
    a resumed run reports the sum over its attempts up to the checkpoint it resumed, plus this
    attempt; what a killed attempt did after its last checkpoint is not counted (it is trained again)."""

    def __init__(self) -> None:
        self.earlier_seconds = 0.0  # of the attempts before this one (from the checkpoint resumed)
        self.earlier_tokens = 0
        self._started: float | None = None
        self._task: Any = None
        self._processes = 1

    def state_dict(self) -> dict[str, Any]:
        return {"wall_seconds": self.wall_seconds(), "tokens": self.tokens()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.earlier_seconds = float(state_dict.get("wall_seconds", 0.0))
        self.earlier_tokens = int(state_dict.get("tokens", 0))

    def wall_seconds(self) -> float:
        now = 0.0 if self._started is None else time.perf_counter() - self._started
        return self.earlier_seconds + now

    def tokens(self) -> int:
        this_attempt = 0 if self._task is None else self._task.tokens_trained  # counted by Task.count_train
        return self.earlier_tokens + this_attempt * self._processes

    def on_fit_start(self, trainer: pl.Trainer, task: pl.LightningModule) -> None:
        # Checkpoint states are restored before this hook: earlier_* are the resumed run's by now.
        self._started, self._task, self._processes = time.perf_counter(), task, trainer.world_size

    def on_fit_end(self, trainer: pl.Trainer, task: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        seconds, tokens = self.wall_seconds(), self.tokens()
        if task.sample_text is not None:  # written at the end of training (Task.on_train_end)
            print(f"\n--- sample (temperature {task.config['sample']['temperature']}) ---\n{task.sample_text}\n---")
        run_dir = Path(task.config["run_dir"]).resolve()
        metrics = trainer.callback_metrics
        name = task.main_metric
        lines = [f"final val/loss {float(metrics['val/loss']):.4f}, {name} {float(metrics[name]):.4f} "
                 f"after {task.global_step} steps"]
        best_path = next((c.best_model_path for c in trainer.checkpoint_callbacks if c.best_model_path), None)
        saved = f": {Path(best_path).resolve()}" if best_path else " (no checkpoint saved)"
        lines.append(f"best  {name} {task.best_score:.4f} at step {task.best_step}{saved}")
        if task.test_metrics is not None:
            measured = ", ".join(f"test/{k} {v:.4f}" for k, v in task.test_metrics.items())
            lines.append(f"test split (final weights): {measured}")
        lines.append(f"run folder: {run_dir}")
        result = {"final": {"val/loss": float(metrics["val/loss"]), name: float(metrics[name])},
                  "best": {name: task.best_score, "step": task.best_step, "checkpoint": best_path},
                  "steps": task.global_step, "test": task.test_metrics,
                  "wall_seconds": seconds, "tokens": tokens,
                  "tokens_per_sec": tokens / seconds if seconds > 0 else None}
        pruned = next((c.pruned_at_step for c in trainer.callbacks if isinstance(c, PruneTrial)), None)
        if pruned is not None:
            result["pruned_at_step"] = pruned
            lines.insert(0, f"pruned at step {pruned}: the search's pruner found this trial worse than earlier ones")
        (run_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        if any(isinstance(logger, pl.loggers.TensorBoardLogger) for logger in trainer.loggers):
            lines.append(f"view it:    tensorboard --logdir {run_dir}")
        print("\n".join(lines))
