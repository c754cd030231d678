"""Train a recurrent language model: `python train.py cell=gru unroll=40`.

Configs live in conf/ (Hydra); `python train.py --help` lists the groups and options.
"""

import sys

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from rnnexp.errors import RnnexpError
    from rnnexp.train import train  # torch and Lightning load here, not for --help

    try:
        return train(cfg)
    except RnnexpError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
