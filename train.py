"""Train a recurrent language model: `python train.py cell=gru unroll=40`.

Configs live in conf/ (Hydra); `python train.py --help` lists the groups and options.
"""

import shutil
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from rnnexp.checkpoint import resume_run_dir

OmegaConf.register_new_resolver("resume_run_dir", resume_run_dir, replace=True)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from rnnexp.errors import RnnexpError
    from rnnexp.train import train  # torch and Lightning load here, not for --help

    try:
        return train(cfg)
    except RnnexpError as e:
        discard_unfinished_run(Path(cfg.run_dir))
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def discard_unfinished_run(run_dir: Path) -> None:
    """Remove a run folder that holds no result (no checkpoint, no TensorBoard events), so a refused
    config or a missing file leaves nothing behind that looks like a run."""
    if run_dir.is_dir() and not (run_dir / "checkpoints").exists() and not any(run_dir.glob("events.out.*")):
        shutil.rmtree(run_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
