"""CDCD's time warping (Dieleman et al. 2022, Sec. 6.1): spend training noise levels where the loss changes.

CDCD fits a monotone piecewise-linear F(t) to the cross-entropy against the noise level and
samples t = F^{-1}(u), u ~ U(0, 1) on the normalised F: the density of t is proportional to
F'(t), so training concentrates where the model's uncertainty about the tokens moves fastest
(and the entropy of its predictions then rises about linearly in the warped time).

Here F is kept per bin of the chain's step index k: a running mean (EMA) of each bin's
loss, made monotone by a running maximum over t, and the density of a bin is its rise over the
previous one, mixed with a `floor` share of the uniform density so no bin starves (its loss
estimate would go stale). Before a bin has been seen it counts as a linear ramp (uniform
density). The state lives in the objective, not the checkpoint: a resumed run re-learns it
within a few hundred steps.
"""

from __future__ import annotations

import torch

N_BINS = 50
"""Bins of the step index k over 0..T-1."""


class TimeWarp:
    """Adaptive density over step indices k; `steps_of(u)` maps uniforms to k, `update(k, loss)` learns it."""

    def __init__(self, num_timesteps: int, n_bins: int = N_BINS, decay: float = 0.98, floor: float = 0.1):
        self.T, self.n_bins = num_timesteps, min(n_bins, num_timesteps)
        self.decay, self.floor = decay, floor
        self.loss = torch.linspace(1.0 / self.n_bins, 1.0, self.n_bins, dtype=torch.float64)  # ramp: uniform
        self.seen = torch.zeros(self.n_bins, dtype=torch.bool)

    def bin_of(self, k: torch.Tensor) -> torch.Tensor:
        return (k.long().cpu() * self.n_bins // self.T).clamp_(0, self.n_bins - 1)

    @torch.no_grad()
    def update(self, k: torch.Tensor, loss: torch.Tensor) -> None:
        """Fold per-row losses (B,) at step indices k (B,) into each bin's running mean."""
        b, v = self.bin_of(k), loss.detach().double().cpu()
        for i in b.unique().tolist():
            m = v[b == i].mean()
            self.loss[i] = m if not self.seen[i] else self.decay * self.loss[i] + (1 - self.decay) * m
            self.seen[i] = True

    def density(self) -> torch.Tensor:
        """Probability of each bin (n_bins,): the rise of the monotone loss fit, plus the uniform floor."""
        curve = torch.cummax(self.loss.clamp(min=0.0), 0).values
        rise = torch.diff(curve, prepend=curve.new_zeros(1))  # F(bin) - F(bin - 1), F(t=0) = 0
        rise = rise / rise.sum() if rise.sum() > 0 else torch.full_like(rise, 1.0 / self.n_bins)
        return (1.0 - self.floor) * rise + self.floor / self.n_bins

    def steps_of(self, u: torch.Tensor) -> torch.Tensor:
        """Uniforms u (B,) in [0, 1) -> step indices k (B,) drawn from `density` (inverse CDF, uniform within a bin)."""
        p = self.density()
        cdf = torch.cumsum(p, 0)
        uu = u.double().cpu().clamp(0.0, 1.0 - 1e-12)
        b = torch.searchsorted(cdf, uu, right=True).clamp_(max=self.n_bins - 1)  # (B,)
        within = ((uu - (cdf[b] - p[b])) / p[b]).clamp(0.0, 1.0 - 1e-9)
        lo = b * self.T // self.n_bins
        hi = (b + 1) * self.T // self.n_bins
        k = lo + (within * (hi - lo)).long()
        return k.clamp_(0, self.T - 1).to(u.device)
