"""What a task keeps in a checkpoint beyond Lightning's own state (`checkpoint["rnnexp"]`), and what a
resume takes back from it, as functions on a task built from a real config (no training): the best
score so far only when the resume continues its run, the plateau schedule's counters, the logging
and clipping windows, the random state. And where the HParams tab starts for a task scored by accuracy."""

import pytest
import torch

from rnnexp.tasks.language_model import LanguageModelTask
from rnnexp.train import resolve
from tests.helpers import tiny_run_config


@pytest.fixture
def config(tiny_text, tmp_path):
    return resolve(tiny_run_config(tiny_text, tmp_path / "run"))


class Plateau:
    def state_dict(self):
        return {"num_bad_epochs": 2, "best": 1.25}


def saved_task(config) -> tuple[dict, torch.Tensor]:
    """A checkpoint of a task part-way through a run; and the random draw that follows its save."""
    task = LanguageModelTask(config, list("abc"))
    task.best_val_loss, task.best_score, task.best_step = 1.5, 2.0, 7
    task.first_logged_loss, task.plateau = 3.0, Plateau()
    task._window_losses = [(4, torch.tensor(1.0)), (5, torch.tensor(3.0))]
    task._window_tokens = 10
    task._window_norms = [(4, torch.tensor(0.5)), (5, torch.tensor(2.0))]
    checkpoint = {}
    task.on_save_checkpoint(checkpoint)
    return checkpoint, torch.rand(3)


def test_a_resume_that_continues_its_run_takes_back_its_best_and_its_windows(config):
    checkpoint, next_draw = saved_task(config)
    resumed = LanguageModelTask(config, list("abc"))
    resumed.continues_run = True
    torch.rand(5)  # the random state moves on before the resume
    resumed.on_load_checkpoint(checkpoint)
    assert (resumed.best_val_loss, resumed.best_score, resumed.best_step) == (1.5, 2.0, 7)
    assert resumed._plateau_state == {"num_bad_epochs": 2, "best": 1.25}  # for configure_optimizers
    assert resumed.first_logged_loss == 3.0
    assert resumed._window_losses == [(4, torch.tensor(1.0)), (5, torch.tensor(3.0))]  # both steps of the window
    assert resumed._window_norms == [(4, torch.tensor(0.5)), (5, torch.tensor(2.0))]
    assert torch.equal(torch.rand(3), next_draw)


def test_a_resume_into_a_new_folder_keeps_its_own_best(config):
    checkpoint, _ = saved_task(config)
    resumed = LanguageModelTask(config, list("abc"))
    resumed.on_load_checkpoint(checkpoint)
    assert (resumed.best_val_loss, resumed.best_score, resumed.best_step) == (float("inf"), None, -1)
    assert resumed._plateau_state == {"num_bad_epochs": 2, "best": 1.25} and resumed.first_logged_loss == 3.0


def test_an_older_checkpoint_without_best_step_or_norm_window_resumes_with_their_defaults(config):
    checkpoint, _ = saved_task(config)
    del checkpoint["rnnexp"]["best_step"], checkpoint["rnnexp"]["norm_window"]
    checkpoint["rnnexp"]["log_window"] = (torch.tensor(6.0), 3, 10)  # the sum of 3 losses, as kept before
    resumed = LanguageModelTask(config, list("abc"))
    resumed.continues_run = True
    resumed.on_load_checkpoint(checkpoint)
    assert resumed.best_step == -1 and resumed.best_score == 2.0
    assert resumed._window_norms == []
    assert sum(float(loss) for _, loss in resumed._window_losses) == 6.0 and len(resumed._window_losses) == 3
