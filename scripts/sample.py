"""Generate text from a trained checkpoint:

    python scripts/sample.py outputs/runs/<run>/checkpoints/best.ckpt --prime "ROMEO:" --length 500
    python scripts/sample.py outputs/runs/<run>      # that run's last.ckpt
    python scripts/sample.py last                    # the newest last.ckpt under outputs/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description="Generate text from an rnnexp checkpoint.")
    parser.add_argument("checkpoint", help="a .ckpt file, a run folder, or `last`")
    parser.add_argument("--prime", default="\n", help="text the model reads before it starts writing")
    parser.add_argument("--length", type=int, default=500, help="tokens (characters or words) to generate")
    parser.add_argument("--temperature", type=float, default=0.8, help="< 1: safer, > 1: wilder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.temperature <= 0 or args.length < 0:
        parser.error("--temperature must be > 0 and --length >= 0")

    from rnnexp.checkpoint import find_checkpoint, load_checkpoint
    from rnnexp.errors import RnnexpError

    try:
        path = find_checkpoint(args.checkpoint)
        checkpoint = load_checkpoint(path)
        if Path(args.checkpoint) != path:  # `last` or a run folder: say which file that was
            print(f"checkpoint: {path} (step {checkpoint.get('global_step', '?')})", file=sys.stderr)
        text = sample(checkpoint, args)
    except RnnexpError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(text)


def sample(checkpoint: dict, args: argparse.Namespace) -> str:
    import torch

    from rnnexp.errors import CheckpointError
    from rnnexp.sample import generate
    from rnnexp.tasks import task_from_checkpoint
    from rnnexp.tasks.language_model import LanguageModelTask
    from rnnexp.tokenizers import vocab_from_symbols

    task = task_from_checkpoint(checkpoint)
    if not isinstance(task, LanguageModelTask):
        raise CheckpointError(f"this checkpoint holds a {type(task).__name__} model; sample.py needs a language model")
    vocab = vocab_from_symbols(task.config["tokenizer"], task.vocab)
    generator = torch.Generator().manual_seed(args.seed)
    return generate(task.model, vocab, args.prime, args.length, args.temperature, generator)


if __name__ == "__main__":
    main()
