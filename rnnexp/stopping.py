"""Stopping a run loses nothing: Ctrl-C (SIGINT), SIGTERM (`kill`, a scheduler's stop) and a launcher's
time-limit signal end training after the step in progress, with last.ckpt written at that step.

- SIGINT or SIGTERM: last.ckpt of the step reached, then one line with the resume command, and the
  process exits with 128 + the signal's number. A second Ctrl-C exits at once.
- In a job of submitit (hydra/launcher=slurm or submitit_local), its own handler of the time-limit or
  preemption signal (SIGUSR2) runs after the save: submitit requeues the job, and the requeued job
  resumes from that checkpoint in its own folder (rnnexp.train.train).

Signals are only noted when they arrive (a handler runs between two Python instructions, possibly in
the middle of a step), and end the Lightning batch after the step under way (Task.training_step
checks `trainer.should_stop` between its steps); the save happens there, where a periodic save would,
so the resume is as exact as from any last.ckpt.
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl

from rnnexp.errors import RunStopped

log = logging.getLogger("rnnexp")
HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)


class SaveOnStop(pl.Callback):
    """Notes SIGINT, SIGTERM and a launcher's SIGUSR2 during training; at the end of the step in
    progress writes last.ckpt, then stops (RunStopped) or hands over to the launcher's own handler."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}
        self._trainer: pl.Trainer | None = None

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size > 1:  # DDP: Lightning's own SIGTERM handling stops every process together
            return
        self._trainer = trainer
        for signum in HANDLED:
            previous = signal.getsignal(signum)
            if signum == signal.SIGUSR2 and not callable(previous):
                continue  # no launcher asked for it: leave SIGUSR2 as it is
            if previous == signal.SIG_IGN:
                continue  # e.g. SIGINT in a background job of a shell script: Ctrl-C is not meant for it
            if signum == signal.SIGTERM and _is_submitit(previous):
                continue  # submitit ignores SIGTERM on purpose (its requeue comes with SIGUSR2)
            self._previous[signum] = previous
            signal.signal(signum, self._note)

    def _note(self, signum: int, frame: Any) -> None:
        if self.received == signal.SIGINT and signum == signal.SIGINT:  # a second Ctrl-C: now
            self._restore()
            raise KeyboardInterrupt
        if self.received is None:
            self.received = signum
            if self._trainer is not None:  # a batch of several steps ends after the step under way
                self._trainer.should_stop = True
            if signum != signal.SIGUSR2:
                print(f"\n{signal.Signals(signum).name}: stopping after this step, with a checkpoint "
                      "(Ctrl-C again to quit at once)", file=sys.stderr, flush=True)

    def _restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous = {}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self.received is None:
            return
        if 0 < trainer.max_steps <= trainer.global_step:
            # The last step: the run ends now anyway (its final validation and result.json take seconds). A
            # stop here would requeue a job that has nothing left to train and so never writes its result.
            return
        signum, step = self.received, trainer.global_step
        checkpoint, why = save_last(trainer)
        handler = self._previous.get(signum)
        self._restore()
        if signum == signal.SIGUSR2 and callable(handler):  # the launcher requeues the job (and exits)
            log.info("signal %s at step %d: saved %s; handing over to the launcher", signal.Signals(signum).name,
                     step, checkpoint)
            handler(signum, None)
        raise RunStopped(signum, step, checkpoint, why)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()


def save_last(trainer: pl.Trainer) -> tuple[Path | None, str]:
    """last.ckpt of this step, as the checkpoint callback writes it (atomically); or why there is none."""
    callback = next((c for c in trainer.checkpoint_callbacks if isinstance(c, pl.callbacks.ModelCheckpoint)
                     and c.save_last), None)
    if callback is None:
        return None, "checkpoints are off (callbacks.model_checkpoint=null, or save_last=false)"
    if trainer.global_step == 0:
        return None, "no training step had finished"
    if callback._last_global_step_saved != trainer.global_step:
        callback._save_last_checkpoint(trainer, callback._monitor_candidates(trainer))
    return Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}", ""


def _is_submitit(handler: Any) -> bool:
    return getattr(handler, "__module__", "").startswith("submitit")


def stopped_message(stop: RunStopped, overrides: list[str]) -> str:
    """The line a stopped run ends with: what was saved and the command that resumes it."""
    name = signal.Signals(stop.signum).name
    if stop.checkpoint is None:
        return f"stopped by {name} at step {stop.step}; no checkpoint written: {stop.why}"
    kept = [o for o in overrides if not o.startswith(("ckpt_path=", "hydra.run.dir="))]
    command = " ".join(["python train.py", *kept, f"ckpt_path={stop.checkpoint}"])
    return f"stopped by {name} at step {stop.step}: saved {stop.checkpoint}; resume with: {command}"
