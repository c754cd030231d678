"""Nothing lost: exact resume after SIGKILL, atomic checkpoints, guarded training."""

import logging
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from rnnexp.checkpoint import load_checkpoint
from rnnexp.errors import TrainingDiverged
from rnnexp.train import train
from tests.helpers import REPO, PoisonOneLoss, make_text, read_scalars, tiny_run_config

# Long enough to be killed mid-run, crossing an epoch boundary (62 batches an epoch).
RESUMABLE = [
    "data=text_file", "cell.hidden_size=64", "arch.embedding_dim=16", "batch_size=8", "unroll=16",
    "trainer.max_steps=240", "trainer.val_check_interval=25", "trainer.log_every_n_steps=5",
    "callbacks.model_checkpoint.every_n_steps=10", "trainer.deterministic=true",
    "trainer.enable_progress_bar=false", "sample.length=0", "arch.dropout=0.1",
]


def train_command(*overrides: str) -> list[str]:
    return [sys.executable, "train.py", *RESUMABLE, *overrides]


def saved_step(path):
    try:
        return load_checkpoint(path)["global_step"]
    except Exception:
        return -1


@pytest.mark.slow
def test_sigkill_then_resume_ends_bit_identical_to_an_uninterrupted_run(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text(make_text(n_words=8000))
    data = f"data.path={text}"
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    done = subprocess.run(train_command(data, f"hydra.run.dir={straight}"), cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]

    process = subprocess.Popen(train_command(data, f"hydra.run.dir={killed}"), cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = killed / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 120
    while saved_step(last) < 70 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    killed_at = saved_step(last)
    assert 70 <= killed_at < 240, killed_at

    # Resume by naming the run folder: training continues there, into the same TensorBoard run.
    resumed = subprocess.run(train_command(data, f"ckpt_path={killed}"), cwd=REPO, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"run folder: {killed}" in resumed.stdout

    expected, actual = load_checkpoint(straight / "checkpoints" / "last.ckpt"), load_checkpoint(last)
    assert actual["global_step"] == expected["global_step"] == 240
    for name, tensor in expected["state_dict"].items():
        assert torch.equal(actual["state_dict"][name], tensor), name
    # The same metrics at the same steps, each step once, although the killed run logged past its checkpoint.
    straight_scalars, killed_scalars = read_scalars(straight), read_scalars(killed)
    for tag in ("train/loss", "val/loss", "vitals/grad_norm/total", "train/lr"):
        assert killed_scalars[tag] == straight_scalars[tag], tag


def test_a_kill_during_a_checkpoint_write_keeps_the_previous_checkpoint(tmp_path):
    """The process dies (SIGKILL) halfway through writing the second checkpoint."""
    path = tmp_path / "last.ckpt"
    script = f"""
import os, signal, torch
from rnnexp.callbacks import AtomicCheckpointIO
io = AtomicCheckpointIO()
io.save_checkpoint({{"state_dict": {{"w": torch.ones(3)}}, "global_step": 1}}, {str(path)!r})
real_save = torch.save
def dying_save(obj, f):
    f.write(b"PK\\x03\\x04 half a checkpoint")
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = dying_save
io.save_checkpoint({{"state_dict": {{"w": torch.zeros(3)}}, "global_step": 2}}, {str(path)!r})
"""
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO)
    assert result.returncode == -signal.SIGKILL
    checkpoint = load_checkpoint(path)
    assert checkpoint["global_step"] == 1 and torch.equal(checkpoint["state_dict"]["w"], torch.ones(3))
    assert (tmp_path / "last.ckpt.tmp").exists()  # the partial write never took the final name


POISON_GRAD = ["+callbacks.poison._target_=tests.helpers.PoisonGradient", "+callbacks.poison.at_step=7"]
POISON_LOSS = ["+callbacks.poison._target_=tests.helpers.PoisonWeights", "+callbacks.poison.at_step=7"]
GUARDED = ["trainer.max_steps=20", "trainer.log_every_n_steps=4", "trainer.val_check_interval=10",
           "callbacks.model_checkpoint.every_n_steps=5"]


@pytest.mark.parametrize("poison", [POISON_GRAD, POISON_LOSS], ids=["nan-gradient", "nan-loss"])
def test_nan_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(tiny_text, tmp_path, poison):
    run_dir = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="became NaN/inf at step 7;"):
        train(tiny_run_config(tiny_text, run_dir, *GUARDED, *poison))
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 5
    assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values())
    assert saved_step(run_dir / "checkpoints" / "best.ckpt") < 7


def test_skip_mode_skips_the_bad_step_and_trains_on(tiny_text, tmp_path, caplog):
    run_dir = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="rnnexp"):
        train(tiny_run_config(tiny_text, run_dir, *GUARDED, *POISON_GRAD, "guard.on_nonfinite=skip"))
    assert "step 7: gradient norm is nan; step skipped" in caplog.text
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 20
    assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values())


def test_skip_mode_skips_a_nan_loss(tiny_text, tmp_path, caplog):
    from rnnexp.data import TBPTTBatches
    from rnnexp.tasks.language_model import LanguageModelTask
    from rnnexp.tokenizers import CharVocab
    from rnnexp.train import resolve

    config = resolve(tiny_run_config(tiny_text, tmp_path, "guard.on_nonfinite=skip"))
    vocab = CharVocab.build([tiny_text.read_text()])
    task = LanguageModelTask(config, vocab.symbols)
    window = (*TBPTTBatches(vocab.encode(tiny_text.read_text()), 4, 8)[0], True)
    assert task.step_loss(window) is not None
    with torch.no_grad():
        task.model.head.bias.fill_(float("nan"))
    with caplog.at_level(logging.WARNING, logger="rnnexp"):
        assert task.step_loss(window) is None  # no backward, no update
    assert "step 0: loss is nan; step skipped" in caplog.messages


def test_a_skipped_nan_loss_updates_nothing_and_still_counts_its_step(tiny_text, tmp_path, caplog):
    run_dir = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="rnnexp"):
        train(tiny_run_config(tiny_text, run_dir, *GUARDED, "guard.on_nonfinite=skip",
                              "+callbacks.poison._target_=tests.helpers.PoisonOneLoss", "+callbacks.poison.at_step=7",
                              "trainer.max_time=00:00:01:00"))  # a run whose steps stop counting would never end
    assert [m for m in caplog.messages if "skipped" in m] == ["step 7: loss is nan; step skipped"]
    assert PoisonOneLoss.skipped_step_changed is False
    checkpoint = load_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    assert checkpoint["global_step"] == 20
    assert all(torch.isfinite(t).all() for t in checkpoint["state_dict"].values())


def test_exploding_loss_is_reported(tiny_text, tmp_path, caplog):
    from rnnexp.tasks.language_model import LanguageModelTask
    from rnnexp.train import resolve

    config = resolve(tiny_run_config(tiny_text, tmp_path, "guard.explode_factor=3"))
    task = LanguageModelTask(config, list("abc"))
    with caplog.at_level(logging.WARNING, logger="rnnexp"):
        task._report_explosion(2.0)
        task._report_explosion(5.9)
        assert "exploding" not in caplog.text
        task._report_explosion(6.5)
    assert "train loss 6.500 is over 3x its first value 2.000: exploding?" in caplog.text


def test_resume_into_the_same_folder_by_its_checkpoint_path(tiny_text, tmp_path):
    """ckpt_path pointing at a run's checkpoint makes Hydra's run folder that run's folder."""
    from rnnexp.checkpoint import resume_run_dir

    run_dir = tmp_path / "run"
    train(tiny_run_config(tiny_text, run_dir))
    last = run_dir / "checkpoints" / "last.ckpt"
    new = str(tmp_path / "new")
    assert resume_run_dir(str(last), new) == str(run_dir)
    assert resume_run_dir(str(run_dir), new) == str(run_dir)
    assert not (tmp_path / "new").exists()  # a resume makes no new folder
    assert resume_run_dir(None, new) == new and (tmp_path / "new").is_dir()
    assert resume_run_dir(str(tmp_path / "missing.ckpt"), new) == f"{new}-2"  # taken: the next free name


def test_ckpt_path_last_is_the_newest_run(tmp_path, monkeypatch, tiny_text):
    from rnnexp.checkpoint import find_checkpoint

    # the newer run sorts first by name: only the files' times can tell
    older, newer = tmp_path / "outputs/runs/b/checkpoints", tmp_path / "outputs/runs/a/checkpoints"
    for folder, mtime in ((older, 1000), (newer, 2000)):
        folder.mkdir(parents=True)
        (folder / "last.ckpt").write_bytes(b"x")
        os.utime(folder / "last.ckpt", (mtime, mtime))
    monkeypatch.chdir(tmp_path)
    assert find_checkpoint("last").resolve() == (newer / "last.ckpt").resolve()


def test_best_checkpoint_is_updated_at_steps_that_also_write_last(tiny_text, tmp_path):
    """Periodic last.ckpt saves at the steps of a validation must not stop best.ckpt from updating."""
    run_dir = tmp_path / "run"
    train(tiny_run_config(tiny_text, run_dir, "trainer.max_steps=8", "trainer.val_check_interval=4",
                          "callbacks.model_checkpoint.every_n_steps=4", "lr=0.01"))
    val_losses = [v for _, v in read_scalars(run_dir)["val/loss"]]
    best = load_checkpoint(run_dir / "checkpoints" / "best.ckpt")
    assert val_losses[1] < val_losses[0]  # it learns, so the best is the later one...
    assert best["global_step"] == 8  # ...and best.ckpt holds it


def test_an_infinite_loss_with_finite_gradients_stops_the_run(tiny_text, tmp_path):
    from rnnexp.tasks.language_model import LanguageModelTask

    config = resolve_config(tiny_text, tmp_path)
    task = LanguageModelTask(config, list("abc"))
    task.count_train(torch.tensor(float("inf")), 10)
    with pytest.raises(TrainingDiverged, match="at step 0"):
        task.raise_if_diverged()


def resolve_config(tiny_text, tmp_path, *overrides):
    from rnnexp.train import resolve

    return resolve(tiny_run_config(tiny_text, tmp_path, *overrides))


def test_a_steps_metrics_are_on_disk_before_its_checkpoint(tiny_text, tmp_path):
    """Checkpoints are written at the end of a batch; a kill right after one must not lose that
    step's training metrics, which a resume from it would never log again. The check runs at each
    batch's end, before the checkpoint callback (Lightning runs those last)."""
    run_dir = tmp_path / "run"
    train(tiny_run_config(tiny_text, run_dir, "trainer.max_steps=6", "callbacks.model_checkpoint.every_n_steps=1",
                          "+callbacks.on_disk._target_=tests.helpers.MetricsOnDisk"))
    assert [step for step, _ in read_scalars(run_dir)["train/loss"]] == list(range(6))
