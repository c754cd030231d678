"""Errors that mean "your input is wrong", reported to the user as one line, without a traceback;
and RunStopped, the end of a run that a signal stopped (rnnexp/stopping.py)."""

from __future__ import annotations

import inspect
import signal
from pathlib import Path


class RnnexpError(Exception):
    """Base class: `train.py` prints these as `error: <message>` and exits with status 2."""


class ConfigError(RnnexpError):
    """A config value that cannot work, found before any training starts."""


class DataError(RnnexpError):
    """A data file that is missing, unreadable, corrupt or too small, or a failed download."""


class CheckpointError(RnnexpError):
    """A checkpoint that is missing, corrupt, unsafe to load, or does not fit this run."""


class TrainingDiverged(RnnexpError):
    """The loss or a gradient became NaN or infinite."""


def import_object(path: str, setting: str) -> object:
    """The object an import path names (`torch.optim.AdamW`, `package.Class.method`), as Hydra's
    `_target_` finds it, or a ConfigError that names the setting and the import's own error (Hydra's
    get_object would also log it, a second report of the same thing)."""
    import importlib

    parts = path.split(".")
    try:
        found = importlib.import_module(parts[0])
        for depth, part in enumerate(parts[1:], start=2):
            if hasattr(found, part):
                found = getattr(found, part)
            elif inspect.ismodule(found):  # a submodule not imported yet
                try:
                    found = importlib.import_module(".".join(parts[:depth]))
                except ModuleNotFoundError as e:
                    if e.name != ".".join(parts[:depth]) or depth < len(parts):
                        raise  # a module that fails to import (its own error), or a missing module on the way
                    raise AttributeError(f"module '{found.__name__}' has no attribute '{part}'") from None
            else:
                raise AttributeError(f"{'.'.join(parts[:depth - 1])} has no attribute '{part}'")
    except (ImportError, AttributeError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else ""
        raise ConfigError(f"{setting}={path} cannot be imported ({type(e).__name__}: {reason})") from None
    return found


class RunStopped(Exception):  # noqa: N818 (not an error: the user asked for it)
    """Training ended by a signal, after saving (`checkpoint`) or with nothing to save (`why`)."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None, why: str = "") -> None:
        self.signum, self.step, self.checkpoint, self.why = signum, step, checkpoint, why
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}")
