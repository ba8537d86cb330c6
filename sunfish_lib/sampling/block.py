"""Sampling a block-diffusion model (BD3-LM, Arriola et al. 2025, Alg. 2): blocks left to right, exact KV cache.

Blocks sit at the positions training used, [bK, (b+1)K) (K = `diffusion.block_size`). For each block that
holds a [MASK], the clean positions before it are in a `PrefixCache`: their keys/values are computed once,
when their block is finished (or in one prefill for the prompt), under the block-causal mask training used
(M_BC), and reused by every later step. Inside the block a masked sampler runs (ancestral, low_confidence,
random, threshold: `sampling.masked`), each step a forward of only the block's K tokens, which attend to
the cache and to each other (M_BD + M_OBC). No approximation: a clean block's keys/values depend only on
blocks <= it, so the cached path computes the same function as the uncached one (`cache=False`: every step
reruns the whole prefix + block under the block-causal mask); greedy samples are equal token for token.
With `shift_logits` (an AR parent's shift kept, `diffusion.block.block_shift`) token j of a block is read
from j - 1, the block's first from the clean pass of the block before, exactly as in training.

`steps` is the total, spread over the blocks (`masked._split_steps`). Variable length: with EOS allowed
(`sample.allow_eos`), generation stops after the block in which every row has emitted an EOS; the
positions left are filled with EOS; a row that has ended gets EOS in its remaining positions at once, so it
draws nothing more and reads as it would alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from sunfish_lib.diffusion.block import block_causal_mask
from sunfish_lib.model.layers import PrefixCache
from sunfish_lib.sampling.masked import MaskedSampler, _split_steps
from sunfish_lib.sampling.noise import RowNoise
from sunfish_lib.sampling.trajectory import Trajectory


def prefix_mask(start: int, stop: int, K: int, device) -> torch.Tensor:
    """Dense bool (1, 1, stop - start, stop): positions start..stop-1 see every position of a block <= theirs."""
    q_blk = torch.arange(start, stop, device=device) // K
    k_blk = torch.arange(stop, device=device) // K
    return (k_blk[None, :] <= q_blk[:, None])[None, None]


@dataclass
class BlockSampler(MaskedSampler):
    """A masked sampler run block by block; `cache=True` keeps the finished blocks' keys/values (exact)."""

    key_padding = False  # blocks are columns shared by the batch: one prompt length per batch
    block_size: int = 4
    exact_cache: bool = True
    eos_id: int | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.block_size < 1:
            raise ValueError(f"block_size={self.block_size} must be >= 1")
        self._prefix: PrefixCache | None = None
        self._window, self._x = (0, 0), None  # the current block's columns, the whole rows being filled
        self._clean_last = None  # the last clean position's state (shift_logits)

    # -- model call ------------------------------------------------------------------
    def _hidden(self, x: torch.Tensor, prompt: torch.Tensor, t: torch.Tensor):
        """States (B, K, d) of the current block x (B, K) (a view into the whole row): cached or uncached pass."""
        (c0, c1), B = self._window, x.shape[0]
        self.forward_passes += 1
        if self._prefix is not None:
            h = self.model.encode(x, t=t, kv_cache=self._prefix)  # (B, c1 - c0, d) keys: cache + block
            self.positions += B * (c1 - c0)
            self.key_positions += B * (c1 - c0) * c1
            clean_last = self._clean_last
        else:
            full = self.model.encode(self._x[:, :c1], t=t, attn_mask=block_causal_mask(c1, self.block_size, x.device))
            self.positions += B * c1  # the prefix recomputed at every step
            self.key_positions += B * c1 * c1
            h, clean_last = full[:, c0:c1], full[:, c0 - 1:c0] if c0 else None
        if self.shift_logits:  # token j read from j - 1; the block's first from the clean state before it
            h = torch.cat([h[:, :1] if clean_last is None else clean_last, h[:, :-1]], 1)
        return h, False

    def _extend_cache(self, x: torch.Tensor, stop: int, t: torch.Tensor) -> None:
        """Append the clean keys/values of columns [cached, stop) (the prompt, or the block just finished)."""
        start = self._prefix.length
        if start >= stop:
            return
        self._prefix.append = True
        h = self.model.encode(x[:, start:stop], t=t, kv_cache=self._prefix,
                              attn_mask=prefix_mask(start, stop, self.block_size, x.device))
        self._prefix.append = False
        self._clean_last = h[:, -1:]  # (B, 1, d): scores the next block's first token under the kept shift
        self.forward_passes += 1
        self.positions += x.shape[0] * (stop - start)
        self.key_positions += x.shape[0] * (stop - start) * stop

    # -- public ----------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, x: torch.Tensor, *, noise: RowNoise | None = None,
                 trajectory: Trajectory | None = None,
                 callback: Callable[[int, int, torch.Tensor], None] | None = None) -> torch.Tensor:
        """Fill every [MASK] of x (B, T) block by block; tokens that are not [MASK] are kept exactly."""
        x = x.clone()
        self.forward_passes = self.positions = self.key_positions = 0
        self._keys, self._cache = None, None
        prompt = x != self.mask_id
        noise = RowNoise(None) if noise is None else noise
        (B, T), K = x.shape, self.block_size
        has_mask = (x == self.mask_id).any(0)  # (T,)
        blocks = [b for b in range(-(-T // K)) if bool(has_mask[b * K:(b + 1) * K].any())]
        self._prefix = PrefixCache(len(self.model.blocks)) if self.exact_cache else None
        self._clean_last = None
        t1 = torch.ones(B, device=x.device)
        done = 0
        for b, steps in zip(blocks, _split_steps(self.steps, len(blocks), K) if blocks else []):
            c0, c1 = b * K, min((b + 1) * K, T)
            self._window, self._x = (c0, c1), x
            if self._prefix is not None:
                self._extend_cache(x, c0, t1)  # clean blocks before this one (the prompt at the first)
            # The masked sampler works on the block's columns only (a view: its commits land in x), so a
            # step's bookkeeping costs K columns, not T; trajectory and callback still see whole rows.
            xw, pw = x[:, c0:c1], prompt[:, c0:c1]
            placed = None if trajectory is None else _Placed(trajectory, x, c0, c1, self.mask_id)
            cb = None if callback is None else (lambda i, n, _w: callback(i, n, x))
            if self.kind == "ancestral":
                self._ancestral(xw, pw, noise, placed, cb, steps=steps, done=done)
                done += steps
            else:
                done = self._fill_block(xw, pw, torch.ones_like(pw), steps, noise, placed, cb, done)
            ended = self._ended(x, prompt, c1)  # (B,) rows done: their remaining [MASK] become EOS, as alone
            if bool(ended.any()):
                x[:, c1:] = torch.where(ended[:, None] & (x[:, c1:] == self.mask_id), self.eos_id, x[:, c1:])
            if bool(ended.all()):
                break
        self._prefix = self._x = None
        return x

    def _ended(self, x: torch.Tensor, prompt: torch.Tensor, stop: int) -> torch.Tensor:
        """(B,) rows that have generated an EOS before column `stop` (none unless EOS may be emitted)."""
        if self.eos_id is None or int(self.eos_id) in self._never:
            return torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        return ((x[:, :stop] == self.eos_id) & ~prompt[:, :stop]).any(1)


class _Placed:
    """A trajectory seen through one block: each recorded (B, K) map is placed at the block's columns of a
    (B, T) one; tokens and the [MASK] state are read off the whole rows."""

    def __init__(self, trajectory: Trajectory, x: torch.Tensor, c0: int, c1: int, mask_id: int):
        self.trajectory, self.x, self.cols, self.mask_id = trajectory, x, slice(c0, c1), mask_id

    def record(self, t: float, **fields: torch.Tensor) -> None:
        whole = {}
        for name, value in fields.items():
            if name == "tokens":
                whole[name] = self.x
            elif name == "masked":
                whole[name] = self.x == self.mask_id
            else:
                full = torch.zeros(self.x.shape, dtype=value.dtype, device=value.device)
                full[:, self.cols] = value
                whole[name] = full
        self.trajectory.record(t, **whole)
