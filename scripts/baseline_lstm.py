"""A plain PyTorch character LSTM on tiny-shakespeare for a fixed wall time: the baseline that
docs/results.md sets beside rnnexp's presets. No Lightning, no Hydra, nothing of rnnexp.

    python scripts/baseline_lstm.py --seconds 80 --hidden 256 --lr 0.002 --seed 1

Same split as rnnexp (first 90% train, last 10% validation), characters, batch streams carried
across windows (truncated BPTT), Adam, clipping at 1.0; validation on the whole split every
--val-every steps and at the end, counted in the time as rnnexp's max_time counts its own.
"""

import argparse
import math
import os
import time
from pathlib import Path

import torch
from torch import nn


def batchify(ids: torch.Tensor, batch: int) -> torch.Tensor:
    """(batch, n) streams: stream b is the b-th contiguous piece of the text."""
    n = len(ids) // batch
    return ids[: n * batch].view(batch, n)


class CharLSTM(nn.Module):
    def __init__(self, vocab: int, embedding: int, hidden: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, embedding)
        self.lstm = nn.LSTM(embedding, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, x: torch.Tensor, state: tuple | None) -> tuple[torch.Tensor, tuple]:
        out, state = self.lstm(self.embedding(x), state)
        return self.head(out), state


@torch.no_grad()
def validate(model: CharLSTM, streams: torch.Tensor, unroll: int) -> float:
    model.eval()
    state, total, count = None, 0.0, 0
    for t in range(0, streams.size(1) - 1, unroll):
        x, y = streams[:, t:t + unroll], streams[:, t + 1:t + 1 + unroll]
        x = x[:, : y.size(1)]
        logits, state = model(x, state)
        total += nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1),
                                             reduction="sum").item()
        count += y.numel()
    model.train()
    return total / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=80.0)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--embedding", type=int, default=64)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--unroll", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.002)
    parser.add_argument("--clip", type=float, default=1.0)
    parser.add_argument("--val-every", type=int, default=250)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--data", default=os.environ.get("RNNEXP_DATA_DIR", "."),
                        help="the folder holding tinyshakespeare.txt (default: $RNNEXP_DATA_DIR)")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    text = (Path(args.data) / "tinyshakespeare.txt").read_text(encoding="utf-8")
    index = {char: i for i, char in enumerate(sorted(set(text)))}
    ids = torch.tensor([index[char] for char in text], dtype=torch.long)
    split = int(0.9 * len(ids))
    train, valid = batchify(ids[:split], args.batch), batchify(ids[split:], args.batch)

    model = CharLSTM(len(index), args.embedding, args.hidden)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    start, step, state, best, t = time.monotonic(), 0, None, math.inf, 0
    while time.monotonic() - start < args.seconds:
        if t + args.unroll + 1 > train.size(1):
            t, state = 0, None
        x, y = train[:, t:t + args.unroll], train[:, t + 1:t + 1 + args.unroll]
        t += args.unroll
        if state is not None:
            state = tuple(s.detach() for s in state)
        logits, state = model(x, state)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        optimizer.step()
        step += 1
        if step % args.val_every == 0:
            best = min(best, validate(model, valid, args.unroll))
    best = min(best, validate(model, valid, args.unroll))
    print(f"plain LSTM H={args.hidden} batch {args.batch} unroll {args.unroll} lr {args.lr} seed {args.seed}: "
          f"best validation {best:.4f} nats/char after {step} steps in {time.monotonic() - start:.0f} s, "
          f"{torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
