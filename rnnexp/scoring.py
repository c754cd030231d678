"""How likely a language model finds a text: the log-probability of each token given those before it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from rnnexp.errors import DataError
from rnnexp.tokenizers import Vocab


@dataclass
class TextScore:
    tokens: list[str]           # the text's tokens, as the vocabulary spells them
    log_probs: list[float]      # ln p(token | everything before it), one per token
    per: str                    # "character", "byte" or "word"

    @property
    def total(self) -> float:
        """ln p(text), in nats."""
        return sum(self.log_probs)

    @property
    def bits_per_token(self) -> float:
        return -self.total / len(self.log_probs) / math.log(2)

    @property
    def perplexity(self) -> float:
        return math.exp(-self.total / len(self.log_probs))

    def most_surprising(self, count: int = 5) -> list[tuple[int, str, float]]:
        """(position, token, bits of surprise) of the `count` least likely tokens, the least first."""
        ranked = sorted(range(len(self.log_probs)), key=lambda i: self.log_probs[i])[:count]
        return [(i, self.tokens[i], -self.log_probs[i] / math.log(2)) for i in ranked]


@torch.no_grad()
def score_text(model: torch.nn.Module, vocab: Vocab, text: str) -> TextScore:
    """Every token of `text` scored after a line break (the start of a line of the corpus; where the
    vocabulary has none, the first token is only read, not scored)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    tokens = [int(t) for t in vocab.encode(text)]
    if not tokens:
        raise DataError(f"the text {text!r} has no token of this vocabulary")
    try:
        start = [int(t) for t in vocab.encode("\n")]
    except DataError:
        start = []
    context = start or tokens[:1]
    scored = tokens if start else tokens[1:]
    if not scored:
        raise DataError("the text needs at least two tokens to be scored (this vocabulary has no line break)")
    sequence = torch.tensor(context + scored, device=device).view(-1, 1)
    logits, _ = model(sequence)
    log_probs = torch.log_softmax(logits[:, 0].float(), dim=-1)
    # logits[i] predicts token i + 1: the scored tokens are predicted from len(context) - 1 on.
    first = len(context) - 1
    values = [float(log_probs[first + i, token]) for i, token in enumerate(scored)]
    model.train(was_training)
    per = {"word": "word", "byte": "byte"}.get(getattr(vocab, "kind", "char"), "character")
    return TextScore([vocab.decode([t]) for t in scored], values, per)
