"""scripts/benchmark.py runs train.py's stack and a plain loop for a few steps and prints its table
(no timing is asserted: the numbers depend on the machine and what else runs on it)."""

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_benchmark_prints_its_table_with_the_breakdown():
    command = [sys.executable, "scripts/benchmark.py", "--size", "short", "--steps", "4", "--warmup", "2",
               "--repeats", "1", "--threads", "1", "--clock", "cpu", "--breakdown",
               # a validation (of 3 batches) and a checkpoint inside the timed steps
               "trainer.val_check_interval=3", "trainer.limit_val_batches=3",
               "callbacks.model_checkpoint.every_n_steps=4"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "lstm (fused), H=32" in out
    assert "batch 8, unroll 16; 4 timed steps x 1 repeats, 1 thread(s), cpu clock" in out
    assert re.search(r"plain PyTorch loop: [\d,]+ tokens/s; train\.py: [\d,]+ tokens/s", out)
    rows = {"train.py", "without progress bar", "without checkpoints", "without diagnostics",
            "without validation samples", "without TensorBoard logging", "without validation (both sides)",
            "all of the above off", "bare LightningModule and Trainer"}
    for row in rows:
        assert re.search(rf"^{re.escape(row)}\s+\d+\.\d{{3}}", out, re.MULTILINE), (row, out)
    assert re.search(r"^without progress bar\s+\d+\.\d{3}\s+[+-]\d+\.\d{3}", out, re.MULTILINE), out
    assert "Traceback" not in result.stderr


def test_the_progress_bar_draws_by_time_and_still_ends_at_the_step_reached(tiny_text, tmp_path):
    """LMProgressBar skips its per-step work between draws (refresh_rate a second), and catches
    the counts up before validations and at the end: the training bar ends at the last step."""
    import io

    from rnnexp.callbacks import LMProgressBar
    from rnnexp.train import build
    from tests.helpers import tiny_run_config

    cfg = tiny_run_config(tiny_text, tmp_path / "run", "trainer.enable_progress_bar=true", "trainer.max_steps=7",
                          "trainer.val_check_interval=3", "callbacks.progress_bar.refresh_rate=1")
    trainer, task, data, _ = build(cfg)
    bar = next(c for c in trainer.callbacks if isinstance(c, LMProgressBar))
    bar._console_kwargs = {"force_terminal": True, "file": io.StringIO(), "width": 100}
    drawn = []
    original = bar._update_metrics
    bar._update_metrics = lambda *args: (drawn.append(trainer.global_step), original(*args))
    trainer.fit(task, data.train, data.valid)
    assert trainer.global_step == 7
    train_bar = bar.progress.tasks[bar.train_progress_bar_id]
    assert train_bar.completed == 7  # steps 2-7 came within a second of the first draw: caught up
    assert len([step for step in drawn if 0 < step < 7]) < 6  # not a draw per step


def test_logged_steps_are_the_optimizer_steps_and_checkpoints_land_where_asked(tiny_text, tmp_path, monkeypatch):
    """What the per-step savings must keep: a train/loss value logged at every optimizer step (with
    log_every_n_steps=1) and last.ckpt written at each multiple of every_n_steps and at the end."""
    from rnnexp.train import train
    from tests.helpers import last_checkpoint_steps, read_scalars, tiny_run_config

    saved = last_checkpoint_steps(monkeypatch)
    run_dir = tmp_path / "run"
    train(tiny_run_config(tiny_text, run_dir, "trainer.max_steps=7", "trainer.val_check_interval=100",
                          "callbacks.model_checkpoint.every_n_steps=3"))
    assert [step for step, _ in read_scalars(run_dir)["train/loss"]] == list(range(7))
    assert sorted(set(saved)) == [3, 6, 7]
