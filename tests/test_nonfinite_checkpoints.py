"""A NaN/inf loss or gradient is read on the host only at logging steps; a checkpoint that falls due
between the bad step and the next logging step must still never be written (Task.on_save_checkpoint
checks the flag kept on the device), so last.ckpt and best.ckpt keep the last finite state."""

import pytest
import torch

from rnnexp.checkpoint import load_checkpoint
from rnnexp.errors import TrainingDiverged
from rnnexp.train import train
from tests.helpers import tiny_run_config

BAD_STEP = 9
# Logging steps 3, 7, 11 ((step + 1) % 4 == 0); validations (best.ckpt and last.ckpt) after steps
# 4 and 8; last.ckpt also due every 5 steps: after step 9, at global_step 10, before the next logging step.
SCHEDULE = ["trainer.max_steps=20", "trainer.log_every_n_steps=4", "trainer.val_check_interval=4",
            "callbacks.model_checkpoint.every_n_steps=5"]
POISONS = {name: [f"+callbacks.poison._target_=tests.helpers.{poison}", f"+callbacks.poison.at_step={BAD_STEP}"]
           for name, poison in (("nan-gradient", "PoisonGradient"), ("nan-loss", "PoisonWeights"))}


@pytest.mark.parametrize("poison", list(POISONS))
def test_a_checkpoint_due_between_a_bad_step_and_the_next_logging_step_is_never_written(tiny_text, tmp_path, poison):
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match=f"became NaN/inf at step {BAD_STEP};"):
        train(tiny_run_config(tiny_text, run_dir, *SCHEDULE, *POISONS[poison]))
    for name in ("last.ckpt", "best.ckpt"):
        checkpoint = load_checkpoint(run_dir / "checkpoints" / name)
        assert checkpoint["global_step"] <= BAD_STEP, name  # the state before the bad step's update
        assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values()), name
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 8  # the last validation's
