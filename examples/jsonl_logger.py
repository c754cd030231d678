"""A logger of your own, outside the rnnexp package: every logged metric as one JSON line.

    PYTHONPATH=examples python train.py hydra.searchpath=[file://examples/conf] logger=with_jsonl
"""

import json
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only


class JsonLinesLogger(Logger):
    """Appends {"step": ..., "tag": value, ...} to `path` for each call of log_metrics."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = Path(path)

    @property
    def name(self) -> str:
        return "jsonl"

    @property
    def version(self) -> str:
        return ""

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass  # the run's config is in .hydra/config.yaml already

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": step, **{k: float(v) for k, v in metrics.items()}}) + "\n")
