"""Helpers for in-process runs: compose the real Hydra config, train a tiny model on tiny text."""

from __future__ import annotations

import contextlib
import io
import os
import random
import runpy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

REPO = Path(__file__).resolve().parents[1]
# Real text for the slow tests: the data directory a user points RNNEXP_DATA_DIR at (CI sets it).
DATA_DIR = Path(os.environ["RNNEXP_DATA_DIR"]) if os.environ.get("RNNEXP_DATA_DIR") else None

# Small enough to train in a second, large enough for a few batches of 4 streams x 8 steps.
TINY_MODEL = [
    "cell.hidden_size=16",
    "arch.embedding_dim=8",
    "batch_size=4",
    "unroll=8",
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "trainer.limit_val_batches=3",
    "trainer.log_every_n_steps=1",
    "trainer.enable_progress_bar=false",
    "+trainer.enable_model_summary=false",
    "sample.length=20",
    "sample.val_length=20",
]


def make_text(n_words: int = 1500, seed: int = 0) -> str:
    """Deterministic pseudo-English: learnable structure, a few KB."""
    rng = random.Random(seed)
    words = "the quick brown fox jumps over a lazy dog and then runs home to sleep".split()
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 10))) for _ in range(n_words // 7)]
    return "\n".join(lines) + "\n"


def run_train(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """train.py as a user runs it: a subprocess, from the repository root."""
    return subprocess.run(
        [sys.executable, "train.py", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def compose_config(*overrides: str) -> DictConfig:
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def tiny_run_config(text: Path, run_dir: Path, *overrides: str) -> DictConfig:
    """The real config with a tiny model on `text`, writing into `run_dir`."""
    return compose_config(
        "data=text_file", f"data.path={text}", f"run_dir={run_dir}", *TINY_MODEL, *overrides
    )


def read_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar in the run folder's TensorBoard event files, as TensorBoard itself reads them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def run_script_in_process(script: str, *args: str) -> subprocess.CompletedProcess:
    """`python scripts/SCRIPT ARGS` from the repository root, run in this process (the interpreter's
    start, seconds of imports, is all that differs): its exit status, stdout and stderr. Tests of
    what scripts compute use it; the tests of each script's command line start a real process."""
    out, err, argv, cwd, code = io.StringIO(), io.StringIO(), sys.argv, Path.cwd(), 0
    sys.argv = [f"scripts/{script}", *args]
    os.chdir(REPO)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_path(str(REPO / "scripts" / script), run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
        os.chdir(cwd)
    return subprocess.CompletedProcess([script, *args], code, out.getvalue(), err.getvalue())


class PoisonGradient(pl.Callback):
    """Makes one gradient NaN at step `at_step`, as an overflow in backward would. Added to a run
    with `+callbacks.poison._target_=tests.helpers.PoisonGradient +callbacks.poison.at_step=N`."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_after_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.global_step == self.at_step:
            pl_module.model.head.bias.grad.fill_(float("nan"))


class PoisonWeights(pl.Callback):
    """Sets the readout bias to NaN in the update of step `at_step` - 1 (wherever that step falls in
    its Lightning batch): every loss from step `at_step` on is NaN."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args) -> None:
        if trainer.global_step == self.at_step - 1:
            with torch.no_grad():
                pl_module.model.head.bias.fill_(float("nan"))


class PoisonOneLoss(pl.Callback):
    """Makes the loss of step `at_step` alone NaN (the readout bias is NaN from the update of step
    `at_step` - 1 until the skipped step reaches the optimizer, then restored), and notes whether the
    skipped step changed any weight (`skipped_step_changed`, read at the next step)."""

    skipped_step_changed: bool | None = None

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step
        self.saved_bias: torch.Tensor | None = None
        self.after_skip: dict[str, torch.Tensor] = {}
        PoisonOneLoss.skipped_step_changed = None

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args) -> None:
        bias, step = pl_module.model.head.bias, trainer.global_step
        with torch.no_grad():
            if step == self.at_step - 1:
                self.saved_bias = bias.detach().clone()
                bias.fill_(float("nan"))
            elif step == self.at_step:
                bias.copy_(self.saved_bias)
                self.after_skip = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
            elif step == self.at_step + 1:  # before this step's update: what the skipped one left
                PoisonOneLoss.skipped_step_changed = any(
                    not torch.equal(v, self.after_skip[k]) for k, v in pl_module.state_dict().items())


def tiny_seq2seq_config(run_dir: Path, *overrides: str) -> DictConfig:
    """The real config of a tiny seq2seq model on `data=reverse` (a few small batches)."""
    return compose_config(
        "arch=seq2seq", "data=reverse", f"run_dir={run_dir}", "data.train_batches=5", "data.valid_size=20",
        *(o for o in TINY_MODEL if not o.startswith("unroll=")), *overrides,
    )


class MetricsOnDisk(pl.Callback):
    """Fails the run if, at a batch's end, that step's train/loss is not yet in the event files."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args) -> None:
        step = trainer.global_step - 1
        logged = [s for s, _ in read_scalars(Path(pl_module.config["run_dir"])).get("train/loss", [])]
        assert step in logged, f"step {step}'s train/loss is not on disk at its batch's end: {logged}"


class DoubleCell(torch.nn.Module):
    """A broken custom cell: it steps in float64, which the float32 layers after it cannot take."""

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.weight_hh = torch.nn.Parameter(torch.eye(hidden_size, dtype=torch.float64))

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(h.double() @ self.weight_hh)


class SignalAt(pl.Callback):
    """Sends this process `signum` (`times` times) during the step that ends at `step` (before its
    update, wherever it falls in its Lightning batch), as a user's Ctrl-C or a scheduler's SIGTERM
    would arrive: `+callbacks.stop._target_=tests.helpers.SignalAt ...`."""

    def __init__(self, step: int, signum: int, times: int = 1) -> None:
        self.step, self.signum, self.times = step, signum, times

    def on_before_optimizer_step(self, trainer: pl.Trainer, *args) -> None:
        if trainer.global_step == self.step - 1:
            for _ in range(self.times):
                os.kill(os.getpid(), self.signum)


class SlowSteps(pl.Callback):
    """Makes each training step take at least `seconds`: a run long enough to meet a time limit."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_before_optimizer_step(self, *args) -> None:  # per step, however many a Lightning batch holds
        import time

        time.sleep(self.seconds)


def last_checkpoint_steps(monkeypatch: Any) -> list[int]:
    """The steps at which rnnexp.callbacks.Checkpoint writes last.ckpt from now on (a list filled as it saves)."""
    from rnnexp.callbacks import Checkpoint

    saved: list[int] = []
    original = Checkpoint._save_last_checkpoint

    def spy(self: Any, trainer: Any, monitor_candidates: Any) -> None:
        saved.append(trainer.global_step)
        return original(self, trainer, monitor_candidates)

    monkeypatch.setattr(Checkpoint, "_save_last_checkpoint", spy)
    return saved
