"""Which metric a run is judged by, from its config alone (no torch, no task import): what
best.ckpt, early stopping, the HParams tab, sweep summaries and Optuna searches follow. Each
config in conf/data/ declares it (`metric`, `higher_is_better`); language models take theirs from
the tokenizer (`tokenizer.lm_metric`: val/bpc for characters and bytes, val/ppl for words)."""

from __future__ import annotations

from typing import Any


def main_metric(config: dict[str, Any]) -> tuple[str, bool]:
    """The run's main metric and whether higher is better."""
    data = config["data"]
    return data["metric"], bool(data["higher_is_better"])


def objective_direction(higher_is_better: bool) -> str:
    """An Optuna search's direction for the task's main metric (the objective is the run's best value
    of it): the resolver `${objective_direction:${data.higher_is_better}}` in conf/hparams_search/."""
    return "maximize" if higher_is_better else "minimize"
