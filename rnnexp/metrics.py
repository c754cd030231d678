"""Which metric each task is judged by, from its config alone (no torch, no task import): what
best.ckpt, early stopping, the HParams tab, sweep summaries and Optuna searches follow."""

from __future__ import annotations

from typing import Any


def main_metric(config: dict[str, Any]) -> tuple[str, bool]:
    """The task's main metric (best.ckpt, early stopping, the HParams tab, summaries and searches
    follow it) and whether higher is better; from the config alone, without importing the task."""
    data = config.get("data", {})
    task = data.get("task", "lm")
    if task == "segmentation":
        return "val/f1", True
    if task == "seq2seq":
        return "val/seq_acc", True
    if task == "long_range":
        return ("val/mse" if data.get("name") == "adding" else "val/loss"), False
    return ("val/ppl" if config.get("tokenizer", {}).get("name") == "word" else "val/bpc"), False
