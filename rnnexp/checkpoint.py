"""Finding, writing and safely reading checkpoints.

Checkpoints are written to a temporary file and renamed into place, so a process killed while
saving leaves the previous checkpoint intact, and read with `weights_only=True`, so a file from
elsewhere can hold tensors and plain data but never run code. Kept free of a top-level torch import:
`train.py` uses `resume_run_dir` while Hydra starts.
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode

from rnnexp.errors import CheckpointError

RUNS_ROOT = Path("outputs")


def find_checkpoint(ckpt_path: str | os.PathLike, runs_root: Path = RUNS_ROOT) -> Path:
    """`last`: the newest last.ckpt under outputs/; a run folder: its checkpoints/last.ckpt; a file: itself."""
    if str(ckpt_path) == "last":
        candidates = list(runs_root.glob("**/checkpoints/last.ckpt"))
        if not candidates:
            raise CheckpointError(f"ckpt_path=last: no run under {runs_root}/ has a checkpoints/last.ckpt yet")
        return max(candidates, key=lambda p: p.stat().st_mtime)
    path = Path(ckpt_path).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    return path


def continues_run(checkpoint: Path) -> bool:
    """Whether resuming `checkpoint` continues its run in the run's folder: only from the run's
    latest state, its checkpoints/last.ckpt. Any other checkpoint (best.ckpt, an earlier or copied
    file) starts a new run folder, so the original run's curves and records are never rewritten."""
    return checkpoint.name == "last.ckpt" and checkpoint.parent.name == "checkpoints"


def _continued_run(ckpt_path: str | None) -> Path | None:
    if ckpt_path is None:
        return None
    try:
        checkpoint = find_checkpoint(ckpt_path)
    except CheckpointError:
        return None  # train() reports the problem as a one-line error
    return checkpoint.parent.parent if continues_run(checkpoint) else None


def resume_run_dir(ckpt_path: str | None, new_run_dir: str) -> str:
    """The run folder to write into: the checkpoint's own when the resume continues its run
    (TensorBoard then goes on in the same folder), else `new_run_dir`, made now (`new_folder`).
    hydra.run.dir uses it."""
    run = _continued_run(ckpt_path)
    return new_folder(new_run_dir) if run is None else str(run)


# The folders new_folder made in this process, for remove_unused_folders.
_made_here: list[Path] = []


def new_folder(path: str) -> str:
    """`path`, made now; if it exists (another run started in the same second with the same options,
    here or on a shared file system), `path-2`, `path-3`, ...: each mkdir is atomic, so two runs never
    share a folder. The resolvers that call it cache their result, so a job resolves it once."""
    base = Path(path)
    base.parent.mkdir(parents=True, exist_ok=True)
    suffix = 1
    while True:
        candidate = base if suffix == 1 else base.with_name(f"{base.name}-{suffix}")
        try:
            candidate.mkdir()
            _made_here.append(candidate)
            return str(candidate)
        except FileExistsError:
            suffix += 1


def remove_unused_folders(used: list[str]) -> None:
    """Remove the folders new_folder made in this process that are still empty and are none of `used`
    (nor above one of them). A preset that sets hydra.run.dir or hydra.sweep.dir replaces the default's
    `${new_folder:...}`, but OmegaConf's merge resolves the value it replaces first (to see whether it
    is a container), which makes that folder; a sweep composes each job's config again, one more each."""
    used_paths = [Path(folder).resolve() for folder in used]
    for folder in list(_made_here):
        resolved = folder.resolve()
        if any(resolved == path or resolved in path.parents for path in used_paths):
            continue
        try:
            folder.rmdir()  # only an empty folder: nothing written is ever removed
        except OSError:
            continue
        _made_here.remove(folder)


def resume_output_subdir(ckpt_path: str | None, now: str) -> str:
    """Where Hydra writes this job's config record: `.hydra`, or for a resume that continues its
    run, a folder of its own, .hydra/resumes/<now>, so the run's original record stays as it was."""
    return ".hydra" if _continued_run(ckpt_path) is None else f".hydra/resumes/{now}"


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu", training_state: bool = True) -> dict[str, Any]:
    """A checkpoint's contents, loaded with weights_only=True; CheckpointError if it cannot be, or
    if `training_state` is asked for and it has none (Lightning's `state_dict` and the rest)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # torch names the function a pickle would call ("GLOBAL posix.system"); anything else is damage.
        called = re.search(r"GLOBAL ([\w.]+)", str(e))
        if called:
            raise CheckpointError(
                f"checkpoint {path} holds objects that would run code when loaded ({called.group(1)}); refused "
                "(only tensors and plain data are accepted)"
            ) from None
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated (not a torch checkpoint)") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({_first_line(e)})") from None
    if training_state and (not isinstance(checkpoint, dict) or "state_dict" not in checkpoint):
        raise CheckpointError(f"{path} is not an rnnexp checkpoint (no state_dict)")
    return checkpoint


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save into a temporary file beside `path`, then rename: never a partial file at `path`."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".tmp")
    with open(partial, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)  # atomic on POSIX and Windows


# Settings that shape the model's parameters: named in the error when a checkpoint does not fit.
MODEL_KEYS = [("cell", "name"), ("cell", "hidden_size"), ("cell", "activation"), ("arch", "name"),
              ("arch", "embedding_dim"), ("arch", "combine"), ("arch", "num_layers"), ("arch", "residual")]


def saved_settings(checkpoint: dict[str, Any], path: Path) -> tuple[dict[str, Any], list]:
    """The config and vocabulary an rnnexp checkpoint was trained with."""
    saved = checkpoint.get("hyper_parameters") or {}
    if "config" not in saved or "vocab" not in saved:
        raise CheckpointError(f"{path} is not an rnnexp checkpoint (it has no rnnexp config and vocabulary)")
    return saved["config"], saved["vocab"]


def check_fits(checkpoint: dict[str, Any], path: Path, config: dict[str, Any], vocab: list,
               expected: dict[str, Any]) -> None:
    """CheckpointError unless the checkpoint's vocabulary is this run's and its parameters have the
    names and shapes of `expected` (this run's state_dict)."""
    saved_config, saved_vocab = saved_settings(checkpoint, path)
    if saved_vocab != vocab:
        new = [s for s in vocab if s not in set(saved_vocab or [])]
        raise CheckpointError(
            f"checkpoint {path} was trained on another vocabulary ({len(saved_vocab or [])} symbols; this data "
            f"has {len(vocab)}, {len(new)} of them new, e.g. {new[:5]}): resume with the data it was trained on"
        )
    shapes = {name: tuple(t.shape) for name, t in checkpoint["state_dict"].items()}
    wanted = {name: tuple(t.shape) for name, t in expected.items()}
    if shapes != wanted:
        differences = [
            f"{group}.{key}={saved_config.get(group, {}).get(key)} (this run: {config[group].get(key)})"
            for group, key in MODEL_KEYS
            if saved_config.get(group, {}).get(key) != config[group].get(key)
        ]
        # The first parameter that differs: of this run's, else one only the checkpoint has.
        mismatch = next(n for n in [*wanted, *shapes] if shapes.get(n) != wanted.get(n))
        detail = ", ".join(differences) or \
            f"parameter {mismatch} is {shapes.get(mismatch)} there (this run: {wanted.get(mismatch)})"
        raise CheckpointError(f"checkpoint {path} has another model: {detail}")


# What a resume may change: how long it trains, how it logs and shows progress, where files are.
# Everything else (model, data, optimisation) must be the checkpoint's own.
RESUME_MAY_CHANGE = (
    "ckpt_path", "init_from", "run_dir", "data_dir", "cache_dir", "scale", "sample.", "logger.",
    "callbacks.progress_bar", "callbacks.diagnostics.", "diagnostics.", "seeds",  # seeds: a study's, not a run's
    "callbacks.early_stop.", "callbacks.model_checkpoint.every_n_steps", "trainer.max_steps", "trainer.max_time",
    "trainer.max_epochs", "trainer.val_check_interval", "trainer.log_every_n_steps", "trainer.enable_progress_bar",
    "trainer.enable_model_summary", "trainer.num_sanity_val_steps", "trainer.accelerator", "trainer.devices",
    "trainer.profiler", "trainer.strategy", "trainer.num_nodes",  # a changed number of processes is refused later
    "steps_per_batch",  # how many steps Lightning sees at once: the steps themselves are the same
    "trainer.gradient_clip_val", "trainer.gradient_clip_algorithm",  # `clip` in checkpoints of before steps_per_batch
)


# Settings added after checkpoints were first written, with the value that means what a checkpoint
# without them did: a resume of an older checkpoint compares them as that value, not as "(absent)".
ADDED_SETTINGS = {"arch.embedding_dropout": 0.0, "arch.input_dropout": 0.0, "arch.output_dropout": 0.0,
                  "arch.weight_drop": 0.0, "arch.zoneout": 0.0, "arch.ar": 0.0, "arch.tar": 0.0,
                  "arch.tie_weights": False}


def may_change(key: str, saved: dict[str, Any], now: dict[str, Any]) -> bool:
    """Whether a resume may change this (flattened) key: RESUME_MAY_CHANGE, whole groups named
    there (`logger=none`), and a cosine schedule's length where it follows trainer.max_steps."""
    if key.startswith(RESUME_MAY_CHANGE) or any(key == allowed.rstrip(".") for allowed in RESUME_MAY_CHANGE):
        return True
    follows_budget = saved.get(key) == saved.get("trainer.max_steps") and now.get(key) == now.get("trainer.max_steps")
    return key == "sched.total_steps" and follows_budget


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """{"cell.hidden_size": 512, ...}: nested mappings as dotted keys."""
    if not isinstance(config, dict) or not config:
        return {prefix.rstrip("."): config}
    return {k: v for key, value in config.items() for k, v in flatten(value, f"{prefix}{key}.").items()}


def check_same_settings(checkpoint: dict[str, Any], path: Path, config: dict[str, Any]) -> None:
    """CheckpointError listing every setting of this run that differs from the checkpoint's,
    other than those a resume may change (RESUME_MAY_CHANGE)."""
    saved, now = flatten(saved_settings(checkpoint, path)[0]), flatten(config)
    # Paths inside the run folder (checkpoints/, the trainer's root) follow the run folder.
    saved = {k: v.replace(saved["run_dir"], now["run_dir"]) if isinstance(v, str) else v for k, v in saved.items()}
    saved |= {k: v for k, v in ADDED_SETTINGS.items() if k in now and k not in saved}
    absent = "(absent)"
    differences = [
        f"{key}={now.get(key, absent)} (checkpoint: {saved.get(key, absent)})"
        for key in sorted(saved.keys() | now.keys())
        if not may_change(key, saved, now) and saved.get(key, absent) != now.get(key, absent)
    ]
    if differences:
        raise CheckpointError(
            f"resuming {path} continues its run with its own settings, but this run differs: "
            f"{', '.join(differences)}; give the checkpoint's values, or start a new run from its weights "
            f"with init_from={path} instead of ckpt_path"
        )


class RemoveUnusedFolders(Callback):
    """Hydra callback: removes the empty folders a preset's own run or sweep folder left behind (see
    remove_unused_folders) when a sweep starts, when each job starts (a single run is one job) and when
    a sweep ends. Not at a single run's start: Hydra has not set itself up, so hydra.run.dir cannot be
    resolved yet."""

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        remove_unused_folders([config.hydra.sweep.dir])

    def on_job_start(self, config: Any, **kwargs: Any) -> None:
        # a job's own dir only: resolving the other (a run's hydra.run.dir) would make a folder
        multirun = config.hydra.mode == RunMode.MULTIRUN
        remove_unused_folders([config.hydra.sweep.dir if multirun else config.hydra.run.dir])

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        remove_unused_folders([config.hydra.sweep.dir])
