"""Sampling from the AR baseline: left to right with a KV cache (one forward pass per token)."""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from sunfish_lib.errors import SunfishError
from sunfish_lib.model import KVCache
from sunfish_lib.sampling.base import Sampler
from sunfish_lib.sampling.filters import sample_tokens
from sunfish_lib.sampling.noise import RowNoise
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
    noise: RowNoise | None = None,
    trajectory: Trajectory | None = None,
    callback: Callable[[int, int, torch.Tensor], None] | None = None,
    exclude_ids: Sequence[int] = (),
) -> torch.Tensor:
    """Continue `prompt` (B, P >= 1) by `length` tokens: returns (B, P + length).

    The prompt is prefilled in one pass; each new token costs one single-position pass.
    temperature 0 is greedy (argmax); top_k/top_p filter whatever the temperature; `exclude_ids`
    (e.g. [MASK], [PAD], EOS) are never emitted. `noise`: the rows' streams (`noise.RowNoise`; None: torch's
    global generator), one uniform per row and token.
    """
    if prompt.shape[1] < 1:
        raise ValueError("AR sampling needs a prompt of at least one token (e.g. EOS as BOS)")
    cache = KVCache(len(model.blocks))
    x = prompt
    never = sorted({int(i) for i in exclude_ids})

    def last_logits(ids):
        out = model.logits(model.encode(ids, kv_cache=cache)[:, -1]).float()  # (B, V): the head at the last position only
        out[:, never] = float("-inf")
        return out

    logits = last_logits(prompt)
    every = torch.ones(prompt.shape[0], 1, dtype=torch.bool, device=prompt.device)  # (B, 1): one draw per row
    for i in range(length):
        nxt, conf = sample_tokens(logits, temperature, top_k, top_p, noise, every, overwrite=True)  # (B,), (B,) f64
        x = torch.cat([x, nxt[:, None]], 1)
        if trajectory is not None:
            trajectory.record(1 - (i + 1) / length, tokens=x, confidence=conf[:, None].float())
        if callback is not None:
            callback(i + 1, length, x)
        if i + 1 < length:
            logits = last_logits(nxt[:, None])
    return x


class ARSampler(Sampler):
    """AR sampling (KV cache) in the one sampler shape: fills a suffix of [MASK] left to right."""

    name = "ar"

    def __init__(self, model, mask_id: int, bos_id: int, temperature=1.0, top_k=0, top_p=1.0, exclude_ids=()):
        self.model, self.mask_id, self.bos_id = model, mask_id, bos_id
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.exclude_ids = sorted({mask_id, *exclude_ids})
        self.forward_passes = 0

    def generate(self, x: torch.Tensor, *, noise=None, trajectory=None, callback=None) -> torch.Tensor:
        masked = x == self.mask_id
        p = int(masked[0].nonzero()[0]) if masked[0].any() else x.shape[1]
        if not (masked[:, p:].all() and not masked[:, :p].any()):
            raise SunfishError("the ar sampler only continues a prefix: put every [MASK] at the end "
                               "(use a diffusion objective to infill)")
        prompt = x[:, :p] if p else torch.full((x.shape[0], 1), self.bos_id, device=x.device)
        wide = None if trajectory is None else _FullWidth(trajectory, x, 0 if p else 1, self.mask_id)
        out = sample_ar(self.model, prompt, x.shape[1] - p, temperature=self.temperature, top_k=self.top_k,
                        top_p=self.top_p, noise=noise, trajectory=wide, callback=callback,
                        exclude_ids=self.exclude_ids)
        self.forward_passes = x.shape[1] - p
        return out if p else out[:, 1:]


class _FullWidth:
    """Records AR steps at the sample's full (B, T) width, as the diffusion samplers do: [MASK] where
    nothing is generated yet, the one new token `committed`, its probability as `confidence`."""

    def __init__(self, trajectory: Trajectory, start: torch.Tensor, offset: int, mask_id: int):
        self.trajectory, self.start, self.offset, self.mask_id = trajectory, start, offset, mask_id

    def record(self, t: float, *, tokens: torch.Tensor, confidence: torch.Tensor) -> None:
        full = self.start.clone()
        n = tokens.shape[1] - self.offset  # positions filled so far (BOS dropped)
        full[:, :n] = tokens[:, self.offset:]
        committed = torch.zeros(full.shape, dtype=torch.bool, device=full.device)
        committed[:, n - 1] = True
        conf = torch.zeros(full.shape, device=full.device)
        conf[:, n - 1] = confidence[:, 0]
        self.trajectory.record(t, tokens=full, confidence=conf, masked=full == self.mask_id, committed=committed)
