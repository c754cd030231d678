"""Tasks: what is trained on what data, and how it is scored. `data.task` names one (default `lm`).

A new task is one module here (a `Task` subclass with its `load_data`) plus one line in `TASKS`
and a config in conf/data/. Task modules are imported on first use, so this registry imports none
of them (and none imports it back).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rnnexp.errors import CheckpointError, ConfigError

if TYPE_CHECKING:
    from rnnexp.tasks.base import Task

TASKS = {
    "lm": "rnnexp.tasks.language_model:LanguageModelTask",
    "segmentation": "rnnexp.tasks.segmentation:SegmentationTask",
    "seq2seq": "rnnexp.tasks.seq2seq:Seq2SeqTask",
    "long_range": "rnnexp.tasks.long_range:LongRangeTask",
}


def task_class(config: dict[str, Any]) -> type[Task]:
    """The task class a config's `data.task` names."""
    name = config["data"].get("task", "lm")
    if name not in TASKS:
        raise ConfigError(f"data.task must be one of {', '.join(TASKS)}, got {name!r}")
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def task_from_checkpoint(checkpoint: dict[str, Any]) -> Task:
    """The trained module of a checkpoint loaded by `rnnexp.checkpoint.load_checkpoint`."""
    saved = checkpoint.get("hyper_parameters") or {}
    if "config" not in saved or "vocab" not in saved:
        raise CheckpointError("the checkpoint has no rnnexp config and vocabulary: not made by rnnexp")
    task = task_class(saved["config"])(saved["config"], saved["vocab"])
    try:
        task.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as e:
        first_line = str(e).splitlines()[0]
        raise CheckpointError(f"the checkpoint's weights do not fit its own config ({first_line})") from None
    return task
