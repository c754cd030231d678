"""Several optimizer steps in one Lightning batch (`steps_per_batch`, Task.training_step): the run is
the same for any number of them, step by step: its weights, its logged steps and values, its
validations, checkpoints and diagnostics, and a stop and resume in the middle of a batch."""

from __future__ import annotations

import signal

import pytest
import pytorch_lightning as pl
import torch

from rnnexp.checkpoint import load_checkpoint
from rnnexp.config import steps_per_batch
from rnnexp.errors import ConfigError, RunStopped
from rnnexp.train import resolve, train
from tests.helpers import compose_config, read_scalars, tiny_run_config

# 14 steps: batches of 4 end on 4, 8, 12 and a last one of 2; validations, last.ckpt and diagnostics at 8.
RUN = ["trainer.max_steps=14", "trainer.val_check_interval=8", "callbacks.model_checkpoint.every_n_steps=8",
       "diagnostics.every_n_steps=8", "trainer.log_every_n_steps=3", "sample.val_length=0", "arch.dropout=0.1"]


class SavedSteps(pl.Callback):
    """The step of every checkpoint written, in order."""

    steps: list[int] = []

    def __init__(self) -> None:
        SavedSteps.steps = []

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        SavedSteps.steps.append(trainer.global_step)


def run(tiny_text, run_dir, *extra: str) -> dict:
    train(tiny_run_config(tiny_text, run_dir, *RUN, "+callbacks.saved._target_=tests.test_steps_per_batch.SavedSteps",
                          *extra))
    return {"weights": load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["state_dict"],
            "scalars": read_scalars(run_dir), "saved": list(SavedSteps.steps)}


def test_any_number_of_steps_a_batch_trains_the_same_run_step_by_step(tiny_text, tmp_path):
    one = run(tiny_text, tmp_path / "one", "steps_per_batch=1")
    four = run(tiny_text, tmp_path / "four", "steps_per_batch=4")
    assert one["weights"].keys() == four["weights"].keys()
    assert all(torch.equal(one["weights"][k], four["weights"][k]) for k in one["weights"])  # bit-identical
    # The logged steps are the optimizer steps: every third, whichever batch it falls in.
    assert [s for s, _ in four["scalars"]["train/loss"]] == [2, 5, 8, 11]
    for tag in ("train/loss", "vitals/grad_norm/total_after_clip", "val/loss",
                "vitals/gradient_flow/rnn.l0/first_over_last"):
        assert four["scalars"][tag] == one["scalars"][tag], tag
    assert [s for s, _ in four["scalars"]["vitals/gradient_flow/rnn.l0/first_over_last"]] == [0, 8]
    assert [s for s, _ in four["scalars"]["val/loss"]] == [7, 13]  # at 8 and the end, numbered as Lightning does
    # Checkpoints land at the steps asked: last.ckpt at 8 (and its validation's saves there), then the end.
    assert four["saved"] == one["saved"] and set(four["saved"]) == {8, 14}


def test_a_stop_in_the_middle_of_a_batch_saves_that_step_and_resumes_to_the_same_weights(tiny_text, tmp_path):
    sigterm = ["+callbacks.stop._target_=tests.helpers.SignalAt", f"+callbacks.stop.signum={int(signal.SIGTERM)}"]
    whole = run(tiny_text, tmp_path / "whole", "steps_per_batch=4", *sigterm, "+callbacks.stop.step=-1")
    stopped_dir = tmp_path / "stopped"
    signal_at_6 = [*sigterm, "+callbacks.stop.step=6"]  # the resume's own settings too: it starts after step 6
    with pytest.raises(RunStopped) as stop:
        run(tiny_text, stopped_dir, "steps_per_batch=4", *signal_at_6)
    assert stop.value.step == 6  # after the step under way, not at the batch's end (8)
    assert load_checkpoint(stopped_dir / "checkpoints" / "last.ckpt")["global_step"] == 6
    # The resume's first batch holds steps 6 and 7 (realigned on 8), with the hidden state carried to step 6.
    resumed = run(tiny_text, stopped_dir, "steps_per_batch=4", *signal_at_6, f"ckpt_path={stopped_dir}")
    assert all(torch.equal(whole["weights"][k], resumed["weights"][k]) for k in whole["weights"])
    assert resumed["scalars"]["train/loss"] == whole["scalars"]["train/loss"]


def config_with(*overrides: str) -> dict:
    return resolve(compose_config("run_dir=/tmp/unused", *overrides))


SWA = "+callbacks.weight_average._target_=rnnexp.callbacks.StochasticWeightAverage"


def test_auto_takes_the_most_steps_that_end_on_every_interval_and_one_where_a_batch_must_be_one_step():
    assert steps_per_batch(config_with(), batch_holds_steps=True) == 25  # 250, 500 and 125: 25 divides them
    assert steps_per_batch(config_with("diagnostics.every_n_steps=0", "callbacks.model_checkpoint.every_n_steps=0",
                                       "trainer.val_check_interval=1000"), batch_holds_steps=True) == 25
    assert steps_per_batch(config_with("trainer.val_check_interval=96", "diagnostics.every_n_steps=0",
                                       "callbacks.model_checkpoint.every_n_steps=64"), batch_holds_steps=True) == 32
    assert steps_per_batch(config_with("trainer.val_check_interval=7"), batch_holds_steps=True) == 1
    assert steps_per_batch(config_with(), batch_holds_steps=False) == 1  # a task whose batch is one step
    assert steps_per_batch(config_with("trainer=ddp"), batch_holds_steps=True) == 1
    assert steps_per_batch(config_with(SWA), batch_holds_steps=True) == 1
    assert steps_per_batch(config_with("steps_per_batch=5"), batch_holds_steps=True) == 5


@pytest.mark.parametrize("overrides,expected", [
    (["+trainer.strategy=ddp_spawn"], 1), (["trainer.devices=2"], 1), (["+trainer.num_nodes=2"], 1),  # each alone
    (["trainer=ddp", "steps_per_batch=1"], 1),
    (["~trainer.devices"], 25),  # Lightning's default, one device
    (["diagnostics.every_n_steps=1"], 1),
    (["~callbacks.model_checkpoint.every_n_steps"], 25),  # saves at validations only: 250 and 125 leave 25
    (["trainer.val_check_interval=1000", "diagnostics.every_n_steps=0", "callbacks.model_checkpoint.every_n_steps=64"],
     8),  # the checkpoint's interval alone rules out 25
    (["trainer.val_check_interval=99", "diagnostics.every_n_steps=0", "callbacks.model_checkpoint.every_n_steps=0"],
     11),  # never more than 32, though 33 divides 99
])
def test_each_reason_for_one_step_a_batch_and_each_interval_counts_on_its_own(overrides, expected):
    assert steps_per_batch(config_with(*overrides), batch_holds_steps=True) == expected


@pytest.mark.parametrize("overrides,message", [
    (["steps_per_batch=5", "callbacks.model_checkpoint.every_n_steps=64"],
     "steps_per_batch=5 must divide callbacks.model_checkpoint.every_n_steps=64 (a batch of steps ends where it "
     "happens): give a divisor of it, or steps_per_batch=auto"),
    (["steps_per_batch=4", "trainer.val_check_interval=1000", "diagnostics.every_n_steps=10"],
     "steps_per_batch=4 must divide diagnostics.every_n_steps=10 (a batch of steps ends where it happens): give a "
     "divisor of it, or steps_per_batch=auto"),
    (["steps_per_batch=5", SWA], "steps_per_batch=5 is not possible with weight averaging "
                                 "(callbacks.weight_average): use steps_per_batch=auto"),
    (["steps_per_batch=8"], "steps_per_batch=8 must divide trainer.val_check_interval=250 (a batch of steps ends "
                            "where it happens): give a divisor of it, or steps_per_batch=auto"),
    (["steps_per_batch=5", "trainer=ddp"], "steps_per_batch=5 is not possible with several training processes "
                                           "(trainer.devices, trainer.strategy=ddp): use steps_per_batch=auto"),
    (["trainer.val_check_interval=0.5"], "trainer.val_check_interval must be a number of steps for a language "
                                         "model, which trains on its windows pass after pass without epochs, got 0.5"),
])
def test_steps_that_cannot_share_a_batch_are_refused_in_one_line(overrides, message):
    with pytest.raises(ConfigError) as refused:
        steps_per_batch(config_with(*overrides), batch_holds_steps=True)
    assert str(refused.value) == message


def test_a_budget_of_one_step_ends_inside_the_first_batch(tiny_text, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_run_config(tiny_text, run_dir, "trainer.max_steps=1", "steps_per_batch=4",
                          *(f"{every}=8" for every in ("trainer.val_check_interval", "diagnostics.every_n_steps",
                                                       "callbacks.model_checkpoint.every_n_steps")),
                          "sample.length=0"))
    assert load_checkpoint(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 1
    assert [step for step, _ in read_scalars(run_dir)["val/loss"]] == [0]  # the final weights validated
