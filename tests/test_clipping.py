"""Gradient clipping as the optimizer sees it: the gradients it applies have a total norm of at most
`clip` (exactly the unclipped norm below it), and the logged `vitals/grad_norm/total_after_clip` and
`vitals/grad_norm/clipped_frac` are what clipping did, measured, not what it should have done."""

import pytest
import pytorch_lightning as pl
import torch

from rnnexp.train import train
from tests.helpers import read_scalars, tiny_run_config

CLIP = 0.33  # between the norms this tiny run's steps have (about 0.30 to 0.35): some clipped, some not


def total_norm(module: torch.nn.Module) -> float:
    return float(torch.nn.utils.get_total_norm([p.grad for p in module.parameters() if p.grad is not None]))


class RecordGradients(pl.Callback):
    """Per step, the total gradient norm before clipping (callbacks' on_before_optimizer_step runs
    before the task's and before Lightning clips) and that of the gradients the optimizer applied
    (read by a hook on the optimizer, after its step). Kept on the class: Hydra builds the instance."""

    steps: list[dict[str, float]] = []

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        RecordGradients.steps = []

        def applied(optimizer, args, kwargs) -> None:
            RecordGradients.steps[-1]["applied"] = total_norm(pl_module)

        trainer.optimizers[0].register_step_post_hook(applied)

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer) -> None:
        RecordGradients.steps.append({"step": trainer.global_step, "before": total_norm(pl_module)})


def test_the_optimizer_applies_gradients_clipped_to_clip_and_the_logs_say_what_clipping_did(tiny_text, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_run_config(tiny_text, run_dir, f"clip={CLIP}", "trainer.max_steps=8", "trainer.precision=32-true",
                          "+callbacks.record._target_=tests.test_clipping.RecordGradients"))
    steps = RecordGradients.steps
    assert [s["step"] for s in steps] == list(range(8)) and all("applied" in s for s in steps)
    clipped = [s["before"] > CLIP for s in steps]
    assert any(clipped) and not all(clipped), f"the test needs steps on both sides of clip={CLIP}: {steps}"
    for s in steps:
        assert s["applied"] <= CLIP * (1 + 1e-6), s  # what the optimizer applied, whatever the logs say
        if s["before"] <= CLIP:
            assert s["applied"] == s["before"], s  # left exactly as they were
        else:
            assert s["applied"] == pytest.approx(CLIP, rel=1e-4), s  # scaled down to clip, not below it
    scalars = read_scalars(run_dir)  # logged at every step (log_every_n_steps=1)
    assert [v for _, v in scalars["vitals/grad_norm/total"]] == pytest.approx([s["before"] for s in steps], rel=1e-6)
    # Measured: torch scales by clip / (norm + 1e-6), so a clipped step's norm is a hair under clip,
    # which a value computed from the pre-clip norm (min(norm, clip)) would not be.
    assert [v for _, v in scalars["vitals/grad_norm/total_after_clip"]] == pytest.approx([s["applied"] for s in steps],
                                                                                   rel=1e-7)
    assert [v for _, v in scalars["vitals/grad_norm/clipped_frac"]] == [float(c) for c in clipped]


def test_without_clipping_the_gradients_are_applied_as_they_are(tiny_text, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_run_config(tiny_text, run_dir, "clip=0", "trainer.max_steps=4", "trainer.precision=32-true",
                          "+callbacks.record._target_=tests.test_clipping.RecordGradients"))
    steps = RecordGradients.steps
    assert len(steps) == 4 and all(s["applied"] == s["before"] > CLIP * 0.5 for s in steps)
    scalars = read_scalars(run_dir)
    assert [v for _, v in scalars["vitals/grad_norm/total_after_clip"]] == pytest.approx([s["applied"] for s in steps],
                                                                                   rel=1e-7)
    assert [v for _, v in scalars["vitals/grad_norm/clipped_frac"]] == [0.0] * 4


def test_clipped_frac_is_the_share_of_clipped_steps_since_the_last_logging_step(tiny_text, tmp_path):
    run_dir = tmp_path / "run"
    train(tiny_run_config(tiny_text, run_dir, f"clip={CLIP}", "trainer.max_steps=8", "trainer.precision=32-true",
                          "trainer.log_every_n_steps=4",
                          "+callbacks.record._target_=tests.test_clipping.RecordGradients"))
    steps = RecordGradients.steps
    windows = [steps[0:4], steps[4:8]]  # logged at steps 3 and 7
    expected = [sum(s["applied"] < s["before"] for s in window) / 4 for window in windows]
    assert [v for _, v in read_scalars(run_dir)["vitals/grad_norm/clipped_frac"]] == expected
    assert 0 < sum(expected) < 2
