"""The one sampler shape (diffusers' scheduler/pipeline split as the anchor).

Every sampler in `samplers.SAMPLERS` is built from a `SampleConfig` (its settings, the model,
the tokenizer's special ids) and called the same way:

    out = sampler(ids, mask, seed=0, callback=on_step, record=True)   # -> SamplerOutput
    out.ids, out.forward_passes, out.trajectory

`ids` (B, T) are the prompt ids; `mask` (B, T) marks the positions to generate (None: the
positions already holding [MASK]); `attention_mask` (B, T), 0 on right padding, lets rows of
different lengths share a batch. Randomness: row b draws from its own stream seeded from (seed, its sample
index) (`noise.RowNoise`; `rows=` gives the indices, default 0..B-1), so a row's sample does not depend on the
rows beside it. Each sampler class owns its loop (`generate`: the
bookkeeping — blocks, step counts, trajectory, callback) and a `step` that is one reverse
update, testable alone (`MaskedSampler.step`, `GaussianScheduler.step`; the AR step is one
`filters.sample_tokens` draw from the last position's logits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from sunfish_lib.sampling.noise import RowNoise
from sunfish_lib.sampling.trajectory import Trajectory


@dataclass
class SamplerOutput:
    ids: torch.Tensor  # (B, T) every generated position filled, the rest as given
    forward_passes: int  # model evaluations of the batch (a guided step counts 2)
    trajectory: Trajectory | None = None
    positions: int | None = None  # token positions the model ran (masked samplers; the block cache's saving)


class Sampler:
    """Mixin: the uniform call over a class with `generate(x, noise=, trajectory=, callback=)`,
    `mask_id` and `forward_passes`."""

    name = "sampler"
    key_padding = False
    """`generate` takes `attention_mask` (right padding never attended to), so rows of several lengths run
    as one batch; otherwise the caller runs each group of rows with the same length and [MASK] columns as its
    own batch (blocks, an approximate cache's window and the AR prefix are columns the batch shares)."""

    def __call__(self, ids: torch.Tensor, mask: torch.Tensor | None = None, *, seed: int = 0,
                 rows: list[int] | None = None, noise: RowNoise | None = None, record: bool | Trajectory = False,
                 callback: Callable[[int, int, torch.Tensor], None] | None = None,
                 attention_mask: torch.Tensor | None = None) -> SamplerOutput:
        x = ids.clone()
        if mask is not None:
            x[mask.bool()] = self.mask_id
        if noise is None:
            noise = RowNoise(seed, rows)
        trajectory = record if isinstance(record, Trajectory) else (
            Trajectory(sampler=self.name, meta={"seed": seed}, start=x.cpu()) if record else None)
        kw = {} if attention_mask is None else {"attention_mask": attention_mask}
        out = self.generate(x, noise=noise, trajectory=trajectory, callback=callback, **kw)
        return SamplerOutput(out, int(self.forward_passes), trajectory, getattr(self, "positions", None))
