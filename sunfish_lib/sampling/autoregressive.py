"""Sampling from the AR baseline: left to right with a KV cache (one forward pass per token)."""

from __future__ import annotations

from typing import Callable

import torch

from sunfish_lib.model import KVCache
from sunfish_lib.sampling.filters import filter_logits, sample_categorical
from sunfish_lib.sampling.trajectory import Trajectory


@torch.no_grad()
def sample_ar(
    model,
    prompt: torch.Tensor,
    length: int,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
    trajectory: Trajectory | None = None,
    callback: Callable[[int, int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Continue `prompt` (B, P >= 1) by `length` tokens: returns (B, P + length).

    The prompt is prefilled in one pass; each new token costs one single-position pass.
    temperature 0 is greedy.
    """
    if prompt.shape[1] < 1:
        raise ValueError("AR sampling needs a prompt of at least one token (e.g. EOS as BOS)")
    cache = KVCache(len(model.blocks))
    x = prompt
    logits = model(prompt, kv_cache=cache)[:, -1].double()  # (B, V)
    for i in range(length):
        if temperature == 0:
            nxt = logits.argmax(-1)
        else:
            nxt = sample_categorical(filter_logits(logits, temperature, top_k, top_p), generator)
        x = torch.cat([x, nxt[:, None]], 1)
        if trajectory is not None:
            probs = logits.softmax(-1).gather(-1, nxt[:, None])  # (B, 1)
            trajectory.record(1 - (i + 1) / length, tokens=x, confidence=probs.float())
        if callback is not None:
            callback(i + 1, length, x)
        if i + 1 < length:
            logits = model(nxt[:, None], kv_cache=cache)[:, -1].double()
    return x
