"""The resolvers conf/ uses beyond OmegaConf's own, registered by `register()` (train.py calls it
at import, rnnexp.train before resolving a config composed in-process). Kept free of torch."""

from __future__ import annotations

from omegaconf import OmegaConf

from rnnexp.checkpoint import new_folder, resume_output_subdir, resume_run_dir
from rnnexp.metrics import objective_direction
from rnnexp.run_names import run_name, sweep_name
from rnnexp.search import search_dir


def scaled_time(seconds: float, scale: float) -> str:
    """A study preset's time budget per run, `seconds` times `scale`, as Lightning's max_time
    "DD:HH:MM:SS": `${scaled_time:70,${scale}}` is "00:00:01:10" at scale=1."""
    total = max(1, round(float(seconds) * float(scale)))
    return f"{total // 86400:02d}:{total // 3600 % 24:02d}:{total // 60 % 60:02d}:{total % 60:02d}"


def seed_list(seeds: int) -> str:
    """A study preset's seeds as a sweep: `${seed_list:${seeds}}` is "1,2,3" for seeds=3."""
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds must be a positive integer, got {seeds!r}")  # as rnnexp.config says it
    return ",".join(str(seed) for seed in range(1, seeds + 1))


def scaled_steps(steps: int, scale: float) -> int:
    """A study preset's budget in optimizer steps, `steps` times `scale`: the same on any machine."""
    return max(1, round(int(steps) * float(scale)))


def steps_for_tokens(tokens: int, batch_size: int, unroll: int, scale: float) -> int:
    """The steps that train on `tokens` x `scale` tokens at this batch size and unroll: the same data
    for every unroll length (a study of truncated BPTT compares what each learns from the same text)."""
    return max(1, round(int(tokens) * float(scale) / (int(batch_size) * int(unroll))))


def validation_interval(max_steps: int) -> int:
    """Validate every 250 steps, or ten times in a run shorter than 2,500 steps (a curve, not one or two
    points); every 250 where the budget is time (max_steps -1)."""
    return 250 if int(max_steps) <= 0 else max(1, min(250, int(max_steps) // 10))


def register() -> None:
    for name, function in (("resume_output_subdir", resume_output_subdir), ("run_name", run_name),
                           ("objective_direction", objective_direction), ("scaled_time", scaled_time),
                           ("search_dir", search_dir), ("sweep_name", sweep_name),
                           ("validation_interval", validation_interval), ("seed_list", seed_list),
                           ("scaled_steps", scaled_steps), ("steps_for_tokens", steps_for_tokens)):
        OmegaConf.register_new_resolver(name, function, replace=True)
    # These make a folder: cached, so that a job (and Hydra's copies of its config) resolves each once.
    for name, function in (("resume_run_dir", resume_run_dir), ("new_folder", new_folder)):
        OmegaConf.register_new_resolver(name, function, replace=True, use_cache=True)
