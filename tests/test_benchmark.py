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
               "trainer.val_check_interval=3", "trainer.limit_val_batches=3", "callbacks.model_checkpoint.every_n_steps=4"]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "lstm (fused), H=32" in out and "batch 8, unroll 16; 4 timed steps x 1 repeats, 1 thread(s), cpu clock" in out
    assert re.search(r"plain PyTorch loop: [\d,]+ tokens/s; train\.py: [\d,]+ tokens/s", out)
    rows = {"train.py", "without progress bar", "without checkpoints", "without diagnostics",
            "without validation samples", "without TensorBoard logging", "without validation (both sides)",
            "all of the above off", "bare LightningModule and Trainer"}
    for row in rows:
        assert re.search(rf"^{re.escape(row)}\s+\d+\.\d{{3}}", out, re.MULTILINE), (row, out)
    assert re.search(r"^without progress bar\s+\d+\.\d{3}\s+[+-]\d+\.\d{3}", out, re.MULTILINE), out
    assert "Traceback" not in result.stderr
