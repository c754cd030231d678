"""Generating text from a trained language model, one token at a time."""

from __future__ import annotations

import torch

from rnnexp.errors import DataError
from rnnexp.tokenizers import Vocab


@torch.no_grad()
def generate(
    model: torch.nn.Module,
    vocab: Vocab,
    prime: str,
    length: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> str:
    """`prime` followed by `length` sampled tokens (characters, bytes or words). The prime is read
    in one pass to set the hidden state; each sampled token is then fed back as the next input."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    tokens = torch.as_tensor(vocab.encode(prime).astype("int64"), device=device).view(-1, 1)
    if len(tokens) == 0:
        raise DataError(f"the prime {prime!r} has no token of this vocabulary")
    logits, state = model(tokens)
    sampled = []
    for _ in range(length):
        probs = torch.softmax(logits[-1, 0].float() / temperature, dim=-1)
        token = torch.multinomial(probs.cpu(), 1, generator=generator)
        sampled.append(int(token))
        token = token.to(device)
        if hasattr(model, "with_feedback"):  # Arch 2 feeds back the emitted symbol
            state = model.with_feedback(state, token)
        logits, state = model(token.view(1, 1), state)
    model.train(was_training)
    return prime + (" " if vocab.kind == "word" and not prime.endswith(("\n", " ")) else "") + vocab.decode(sampled)
