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
    top_k: int | None = None,
    greedy: bool = False,
) -> str:
    """`prime` followed by `length` sampled tokens (characters, bytes or words). The prime is read
    in one pass to set the hidden state; each sampled token is then fed back as the next input.
    `top_k`: sample among the k most likely tokens only; `greedy`: always the most likely one."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    tokens = torch.as_tensor(vocab.encode(prime).astype("int64"), device=device).view(-1, 1)
    if len(tokens) == 0:
        raise DataError(f"the prime {prime!r} has no token of this vocabulary")
    logits, state = model(tokens)
    sampled = []
    for _ in range(length):
        scores = logits[-1, 0].float().cpu()
        if greedy:
            token = scores.argmax().view(1)
        else:
            if top_k is not None and top_k < len(scores):
                scores = scores.masked_fill(scores < scores.topk(top_k).values[-1], float("-inf"))
            token = torch.multinomial(torch.softmax(scores / temperature, dim=-1), 1, generator=generator)
        sampled.append(int(token))
        token = token.to(device)
        if hasattr(model, "with_feedback"):  # Arch 2 feeds back the emitted symbol
            state = model.with_feedback(state, token)
        logits, state = model(token.view(1, 1), state)
    model.train(was_training)
    return prime + (" " if vocab.kind == "word" and not prime.endswith(("\n", " ")) else "") + vocab.decode(sampled)
