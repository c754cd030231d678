"""callbacks.model_checkpoint.every_n_steps=1 writes last.ckpt at every step (rnnexp.callbacks.Checkpoint),
not only at validations and at the end."""

from rnnexp.callbacks import Checkpoint
from rnnexp.train import train
from tests.helpers import last_checkpoint_steps, tiny_run_config


def test_every_n_steps_1_writes_last_ckpt_at_every_step(tiny_text, tmp_path, monkeypatch):
    saved = last_checkpoint_steps(monkeypatch)
    run_dir = tmp_path / "run"
    train(tiny_run_config(tiny_text, run_dir, "trainer.max_steps=4", "trainer.val_check_interval=100",
                          "callbacks.model_checkpoint.every_n_steps=1", "sample.length=0"))
    assert sorted(set(saved)) == [1, 2, 3, 4]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()


def test_a_checkpoint_callback_made_without_every_n_steps_writes_last_only_at_validations_and_the_end(tmp_path):
    assert Checkpoint(dirpath=tmp_path, save_last=True).every_n_steps == 0


def test_every_n_steps_3_writes_last_ckpt_at_its_multiples_and_the_end_only(tiny_text, tmp_path, monkeypatch):
    saved = last_checkpoint_steps(monkeypatch)
    train(tiny_run_config(tiny_text, tmp_path / "run", "trainer.max_steps=7", "trainer.val_check_interval=100",
                          "callbacks.model_checkpoint.every_n_steps=3", "sample.length=0"))
    assert sorted(set(saved)) == [3, 6, 7]
