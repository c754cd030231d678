"""Errors that mean "your input is wrong", reported to the user as one line, without a traceback."""


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
