"""Measure a trained checkpoint, or score a text with it:

    python scripts/evaluate.py outputs/runs/<run>                     # its test split (else validation)
    python scripts/evaluate.py outputs/runs/<run> --file other.txt    # any text file (language models)
    python scripts/evaluate.py outputs/runs/<run> --text "To be, or not to be"   # how likely is this text?
    python scripts/evaluate.py outputs/runs/<run> --text-file sonnet.txt         # the same for a file
    python scripts/evaluate.py last --json results.json               # the table, and JSON to a file

It prints a table (and writes JSON with --json FILE; --json - prints JSON instead of the table)
and writes nothing into the run's folder.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="a .ckpt file, a run folder (its last.ckpt), or `last`")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--split", choices=["test", "valid"], help="default: test where the corpus has one")
    what.add_argument("--file", help="a UTF-8 text file to measure (language models)")
    what.add_argument("--text", help="a text to score token by token (language models)")
    what.add_argument("--text-file", help="score the text of this file token by token, as --text does")
    parser.add_argument("--data-dir", help="where the corpus is (default: $RNNEXP_DATA_DIR, else the run's)")
    parser.add_argument("--json", help="also write the results as JSON to this file (-: print JSON, no table)")
    parser.add_argument("--top", type=int, default=5, help="with --text: how many surprising tokens to list")
    args = parser.parse_args()

    from rnnexp.errors import RnnexpError

    try:
        results = evaluate(args)
    except RnnexpError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if args.json == "-":  # JSON alone, for scripts
        print(json.dumps(results, indent=2, ensure_ascii=False))
        return
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def evaluate(args: argparse.Namespace) -> dict:
    import math
    import os

    import torch

    from rnnexp.checkpoint import find_checkpoint, load_checkpoint
    from rnnexp.data import StreamLoader, TBPTTBatches, read_source
    from rnnexp.download import resolve_cache_dir, resolve_data_dir
    from rnnexp.errors import CheckpointError, DataError
    from rnnexp.scoring import score_text
    from rnnexp.tasks import task_from_checkpoint
    from rnnexp.tasks.language_model import LanguageModelTask
    from rnnexp.tokenizers import vocab_from_symbols

    path = find_checkpoint(args.checkpoint)
    checkpoint = load_checkpoint(path)
    task = task_from_checkpoint(checkpoint).to("cuda" if torch.cuda.is_available() else "cpu")
    config = task.config
    results: dict = {"checkpoint": str(path), "step": checkpoint.get("global_step")}
    is_lm = isinstance(task, LanguageModelTask)
    if args.text_file:
        args.text = read_source(Path(args.text_file))
    if (args.text is not None or args.file) and not is_lm:
        raise CheckpointError(f"--text, --text-file and --file need a language model; this is a {type(task).__name__}")
    vocab = vocab_from_symbols(config["tokenizer"], task.vocab) if is_lm else None

    if args.text is not None:
        score = score_text(task.model, vocab, args.text)
        results.update(text=args.text, tokens=len(score.log_probs), log_prob_nats=score.total,
                       log_prob_bits=score.total / math.log(2),
                       **({"perplexity": score.perplexity} if score.per == "word" else
                          {f"bits_per_{score.per}": score.bits_per_token}),
                       most_surprising=[{"position": i, "token": t, "bits": b} for i, t, b in
                                        score.most_surprising(args.top)])
        return results

    if args.file:
        tokens = vocab.encode(read_source(Path(args.file)))
        unroll = config["unroll"]
        batch_size = max(1, min(config["batch_size"], (len(tokens) - 1) // (unroll + 1)))
        loader, split = StreamLoader(TBPTTBatches(tokens, batch_size, unroll, args.file)), args.file
    else:
        data_dir = resolve_data_dir(args.data_dir or os.environ.get("RNNEXP_DATA_DIR") or config["data_dir"])
        data = type(task).load_data(config, data_dir, resolve_cache_dir(os.environ.get("RNNEXP_CACHE_DIR")))
        if data.vocab.symbols != task.vocab:
            raise DataError(f"the data found in {data_dir} has another vocabulary than {path} was trained on")
        split = args.split or ("test" if data.test is not None else "valid")
        loader = data.test if split == "test" else data.valid
        if loader is None:
            raise DataError(f"data={config['data']['name']} has no test split here: use --split valid")
    results.update(split=split, **task.evaluate(loader))
    return results


def table(results: dict) -> str:
    rows = [(k, v) for k, v in results.items() if k != "most_surprising"]
    lines = ["| | |", "|---|---|"] + [f"| {k} | {v:.4f} |" if isinstance(v, float) else f"| {k} | {v} |"
                                        for k, v in rows]
    for item in results.get("most_surprising", []):
        lines.append(f"| surprise at {item['position']}: {item['token']!r} | {item['bits']:.2f} bits |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
