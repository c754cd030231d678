"""Errors that mean "your input is wrong", reported to the user as one line, without a traceback;
and RunStopped, the end of a run that a signal stopped (rnnexp/stopping.py)."""

from __future__ import annotations

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
    """The class or function an import path names (`torch.optim.AdamW`), or a ConfigError that names
    the setting and the import's own error (without Hydra's get_object, which logs it as well)."""
    import importlib

    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as e:
        reason = str(e).splitlines()[0] if str(e) else ""
        raise ConfigError(f"{setting}={path} cannot be imported ({type(e).__name__}: {reason})") from None


class RunStopped(Exception):  # noqa: N818 (not an error: the user asked for it)
    """Training ended by a signal, after saving (`checkpoint`) or with nothing to save (`why`)."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None, why: str = "") -> None:
        self.signum, self.step, self.checkpoint, self.why = signum, step, checkpoint, why
        super().__init__(f"stopped by {signal.Signals(signum).name} at step {step}")
