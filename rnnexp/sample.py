"""Generating text from a trained language model, one token at a time."""

from __future__ import annotations

import torch

from rnnexp.data import CharVocab
from rnnexp.model import RNNLanguageModel


@torch.no_grad()
def generate(
    model: RNNLanguageModel,
    vocab: CharVocab,
    prime: str,
    length: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> str:
    """`prime` followed by `length` sampled characters. The prime is read in one pass to set the
    hidden state; each sampled character is then fed back as the next input."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    tokens = torch.as_tensor(vocab.encode(prime), dtype=torch.long, device=device).view(-1, 1)
    logits, state = model(tokens)
    sampled = []
    for _ in range(length):
        probs = torch.softmax(logits[-1, 0].float() / temperature, dim=-1)
        token = torch.multinomial(probs.cpu(), 1, generator=generator)
        sampled.append(int(token))
        logits, state = model(token.to(device).view(1, 1), state)
    model.train(was_training)
    return prime + vocab.decode(sampled)
