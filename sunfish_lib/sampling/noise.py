"""Per-row random streams: why a sample does not depend on the batch it is drawn in.

Every random number a sampler draws goes through a `RowNoise` (the one place that draws noise). Row b of a
batch has its own `torch.Generator`, seeded from (seed, i) with i the row's sample index, and a row draws only
for itself: uniforms at the positions it decides (left to right, so right padding never shifts them), Gaussian
noise of its own (T, e). So sample i is a function of (model, settings, seed, i, its prompt): the same whether
drawn alone, as row i of a batch of any size, or beside other prompts (`session.sample(prompts=...)` numbers
each prompt's samples 0..n-1). One generator shared by the batch would hand row 0 different numbers as soon
as another row drew first (Fast-dLLM's HumanEval moves by a point between batch 2 and 4 for this reason).

Row i's seed is seed + i * 0x9E3779B97F4A7C15 mod 2**64 (the golden-ratio increment of splitmix64): row 0's
stream is the plain seed's, and the rows of one seed get distinct seeds whether a generator reads all 64 bits
(CUDA's Philox) or only the low 32 (the CPU's mt19937: the constant is odd, so i -> seed_i stays one-to-one).
"""

from __future__ import annotations

from typing import Sequence

import torch

GOLDEN = 0x9E3779B97F4A7C15


def row_seed(seed: int, i: int) -> int:
    """The seed of sample i's stream: seed + i * GOLDEN mod 2**64 (row 0: the seed itself)."""
    return (int(seed) + int(i) * GOLDEN) % 2**64


class RowNoise:
    """One random stream per batch row (see module docstring).

    `seed` None draws from torch's global generator instead (ad-hoc use; not batch-invariant). `rows`: the sample
    index i of each batch row (default 0..B-1); two rows with the same index draw the same numbers.
    """

    def __init__(self, seed: int | None = 0, rows: Sequence[int] | None = None):
        self.seed = None if seed is None else int(seed)
        self.rows = None if rows is None else [int(i) for i in rows]
        self._gens: dict[int, torch.Generator] = {}

    @classmethod
    def from_generator(cls, generator: torch.Generator, rows: Sequence[int] | None = None) -> "RowNoise":
        """Streams whose seed is one draw of `generator`: for an API that takes a generator (transformers')."""
        return cls(int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device)), rows)

    def _gen(self, b: int, device) -> torch.Generator | None:
        if self.seed is None:
            return None
        if b not in self._gens:
            i = b if self.rows is None else self.rows[b]
            self._gens[b] = torch.Generator(device=device).manual_seed(row_seed(self.seed, i))
        return self._gens[b]

    def uniform(self, where: torch.Tensor) -> torch.Tensor:
        """float64 uniforms in [0, 1), one per True entry of where (B, ...), in row-major order (as `t[where]`);
        row b's come from its own stream."""
        counts = where.reshape(where.shape[0], -1).sum(1).tolist()
        parts = [torch.rand(n, dtype=torch.float64, device=where.device, generator=self._gen(b, where.device))
                 for b, n in enumerate(counts) if n]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64, device=where.device)

    def normal(self, shape: Sequence[int], *, device=None, dtype=torch.float32,
               rows: torch.Tensor | None = None) -> torch.Tensor:
        """Standard normal noise of `shape` (B, ...), row b from its own stream; rows (B,) bool: only those draw
        (the others are 0 and leave their stream untouched)."""
        out = torch.zeros(tuple(shape), device=device, dtype=dtype)
        take = range(shape[0]) if rows is None else rows.nonzero().flatten().tolist()
        for b in take:
            out[b] = torch.randn(tuple(shape[1:]), device=device, dtype=dtype, generator=self._gen(b, device))
        return out
