"""Tasks: what is trained on what data, and how it is scored.

A task is a `Task` subclass (rnnexp/tasks/base.py) with its `load_data`, its `data_schema` and the
architectures it takes, in a module here or in any importable package of yours; each config in
conf/data/ names its task by import path (`task: rnnexp.tasks.long_range.LongRangeTask`) and its main
metric (`metric`, `higher_is_better`). No list here names the tasks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rnnexp.errors import CheckpointError, ConfigError, import_object

if TYPE_CHECKING:
    from rnnexp.tasks.base import Task


def task_class(config: dict[str, Any]) -> type[Task]:
    """The task class a config's `data.task` names (an import path)."""
    from rnnexp.tasks.base import Task

    path = config["data"]["task"]
    cls = import_object(path, "data.task")
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise ConfigError(f"data.task={path} is not a rnnexp.tasks.base.Task subclass")
    return cls


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
