"""Generate text from a trained checkpoint:

    python scripts/sample.py outputs/runs/<run>/checkpoints/best.ckpt --prime "ROMEO:" --length 500
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description="Generate text from an rnnexp checkpoint.")
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--prime", default="\n", help="text the model reads before it starts writing")
    parser.add_argument("--length", type=int, default=500, help="characters to generate")
    parser.add_argument("--temperature", type=float, default=0.8, help="< 1: safer, > 1: wilder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.temperature <= 0 or args.length < 0:
        parser.error("--temperature must be > 0 and --length >= 0")
    if not args.checkpoint.is_file():
        parser.error(f"checkpoint {args.checkpoint} does not exist")

    import torch

    from rnnexp.data import CharVocab
    from rnnexp.errors import DataError
    from rnnexp.sample import generate
    from rnnexp.task import LanguageModelTask

    task = LanguageModelTask.load_from_checkpoint(args.checkpoint, map_location="cpu", weights_only=True)
    generator = torch.Generator().manual_seed(args.seed)
    try:
        text = generate(task.model, CharVocab(task.vocab), args.prime, args.length, args.temperature, generator)
    except DataError as e:
        sys.exit(f"error: --prime: {e}")
    print(text)


if __name__ == "__main__":
    main()
