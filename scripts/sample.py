"""Generate text from a trained checkpoint:

    python scripts/sample.py outputs/runs/<run>/checkpoints/best.ckpt --prime "ROMEO:" --length 500
    python scripts/sample.py outputs/runs/<run>      # that run's last.ckpt
    python scripts/sample.py last --top-k 5          # the newest last.ckpt under outputs/
    python scripts/sample.py last --greedy           # always the most likely next token
    python scripts/sample.py <seq2seq run> --source abcdef --beam 4    # decode a source string
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
    parser.add_argument("--seed", type=int, default=0, help="the same seed gives the same text")
    parser.add_argument("--top-k", type=int, help="sample among the k most likely tokens only")
    parser.add_argument("--greedy", action="store_true", help="always take the most likely token")
    parser.add_argument("--source", help="seq2seq checkpoints: the source string to decode")
    parser.add_argument("--beam", type=int, help="seq2seq: beam size; 1: greedy; default: the run's own")
    args = parser.parse_args()
    if args.temperature <= 0 or args.length < 0 or (args.top_k is not None and args.top_k < 1) or \
            (args.beam is not None and args.beam < 1):
        parser.error("--temperature must be > 0, --length >= 0, --top-k and --beam >= 1")

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
    if type(task).__name__ == "Seq2SeqTask":
        return decode(task, args)
    if not isinstance(task, LanguageModelTask):
        raise CheckpointError(f"this checkpoint holds a {type(task).__name__} model; sample.py writes with a "
                              "language model or decodes with a seq2seq model")
    if args.source is not None:
        raise CheckpointError("--source is for seq2seq checkpoints; a language model continues --prime")
    vocab = vocab_from_symbols(task.config["tokenizer"], task.vocab)
    generator = torch.Generator().manual_seed(args.seed)
    return generate(task.model, vocab, args.prime, args.length, args.temperature, generator, args.top_k, args.greedy)


def decode(task, args: argparse.Namespace) -> str:
    """A seq2seq model's output for --source, greedy or by beam search."""
    import torch

    from rnnexp.errors import DataError

    if args.source is None:
        raise DataError("a seq2seq checkpoint decodes a source string: give --source")
    if args.top_k is not None:
        raise DataError("--top-k samples a language model; a seq2seq model decodes greedily or by --beam")
    task.eval()  # no dropout while decoding
    index = {symbol: i for i, symbol in enumerate(task.vocab)}
    unknown = sorted({c for c in args.source if c not in index or index[c] < 3})  # 0-2: <pad>, <s>, </s>
    if unknown or not args.source:
        raise DataError(f"--source must be made of this task's symbols ({''.join(task.vocab[3:])}), got {unknown}")
    task.config["decode"]["beam_size"] = 1 if args.greedy else args.beam or task.config["decode"]["beam_size"]
    source = torch.tensor([[index[c]] for c in args.source])
    output = task.decode(source, torch.tensor([len(args.source)]), 2 * len(args.source) + 10)
    return task._text(output[:, 0])


if __name__ == "__main__":
    main()
