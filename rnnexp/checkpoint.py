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


def resume_run_dir(ckpt_path: str | None, new_run_dir: str) -> str:
    """The run folder to write into: the checkpoint's own when resuming one of our runs (TensorBoard
    then continues in the same folder), else `new_run_dir`. Used by hydra.run.dir in conf/train.yaml."""
    if ckpt_path is None:
        return new_run_dir
    try:
        checkpoint = find_checkpoint(ckpt_path)
    except CheckpointError:
        return new_run_dir  # train() reports the problem as a one-line error
    return str(checkpoint.parent.parent) if checkpoint.parent.name == "checkpoints" else new_run_dir


def load_checkpoint(path: str | os.PathLike, map_location: Any = "cpu") -> dict[str, Any]:
    """A checkpoint's contents, loaded with weights_only=True; CheckpointError if it cannot be."""
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
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
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


def check_fits(checkpoint: dict[str, Any], path: Path, config: dict[str, Any], vocab: list,
               expected: dict[str, Any]) -> None:
    """CheckpointError unless the checkpoint's vocabulary is this run's and its parameters have the
    names and shapes of `expected` (this run's state_dict)."""
    saved = checkpoint.get("hyper_parameters", {})
    saved_config, saved_vocab = saved.get("config", {}), saved.get("vocab")
    if saved_vocab != vocab:
        new = [s for s in vocab if s not in set(saved_vocab or [])]
        raise CheckpointError(
            f"checkpoint {path} was trained on another vocabulary ({len(saved_vocab or [])} symbols; this data "
            f"has {len(vocab)}, {len(new)} of them new, e.g. {new[:5]}): resume with the data it was trained on"
        )
    shapes = {name: tuple(t.shape) for name, t in checkpoint["state_dict"].items()}
    if shapes != {name: tuple(t.shape) for name, t in expected.items()}:
        differences = [
            f"{group}.{key}={saved_config.get(group, {}).get(key)} (this run: {config[group].get(key)})"
            for group, key in MODEL_KEYS
            if saved_config.get(group, {}).get(key) != config[group].get(key)
        ]
        mismatch = next((n for n in expected if shapes.get(n) != tuple(expected[n].shape)), None)
        detail = ", ".join(differences) or f"parameter {mismatch} is {shapes.get(mismatch)} there"
        raise CheckpointError(f"checkpoint {path} has another model: {detail}")
