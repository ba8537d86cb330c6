"""Noise schedules for Gaussian (embedding-space) diffusion, with every DDPM coefficient precomputed.

The forward chain has T steps. Index convention (as in diffusers and Diffusion-LM's
code): a step index k in {0, ..., T-1} is the paper's x_{k+1}, so `alpha_bar[k]` is
alpha_bar_{k+1} in Ho et al. (2020) and the model is conditioned on

    t = (k + 1) / T  in (0, 1]          (`NoiseSchedule.model_time`)

which is the continuous time the `cosine` and `sqrt` alpha_bar(t) functions are
evaluated at (t = step / T with 1-based steps).

Schedules:
- linear: beta from 1e-4 to 0.02 (Ho et al. 2020, Sec. 4), rescaled by 1000 / T so any
  T spans the same noise range (Nichol & Dhariwal 2021, Sec. 3.2).
- cosine: alpha_bar(t) = cos^2(((t + s) / (1 + s)) pi / 2), s = 0.008 (Nichol & Dhariwal 2021, Eq. 17).
- sqrt: alpha_bar(t) = 1 - sqrt(t + s), s = 1e-4 (Diffusion-LM, Li et al. 2022, Sec. 4.2 & App. A):
  noise rises sharply at small t, because under linear/cosine a word embedding is still
  trivially recovered after the first ~10% of the chain, so those steps teach nothing.

Betas from an alpha_bar(t) function are beta_k = 1 - alpha_bar((k+1)/T) / alpha_bar(k/T),
clipped at 0.999 (Nichol & Dhariwal 2021, Sec. 3.2) — the same construction as Diffusion-LM.
All buffers are float64 (precision near alpha_bar -> 0 or 1); `coef` casts on use.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn

from sunfish_lib.config import NOISE_SCHEDULES
from sunfish_lib.errors import ConfigError

MAX_BETA = 0.999


def _betas_from_alpha_bar(fn: Callable[[float], float], T: int) -> torch.Tensor:
    """beta_k = min(1 - alpha_bar((k+1)/T) / alpha_bar(k/T), MAX_BETA), k = 0..T-1."""
    return torch.tensor([min(1.0 - fn((k + 1) / T) / fn(k / T), MAX_BETA) for k in range(T)], dtype=torch.float64)


def make_betas(kind: str, num_timesteps: int) -> torch.Tensor:
    """beta_1..beta_T of the named schedule, float64 (T,)."""
    if kind not in NOISE_SCHEDULES:
        raise ConfigError(f"diffusion.schedule={kind!r} is not allowed; choose one of {', '.join(NOISE_SCHEDULES)}")
    if not isinstance(num_timesteps, int) or num_timesteps < 1:
        raise ConfigError(f"diffusion.num_timesteps={num_timesteps!r} must be an integer >= 1")
    T = num_timesteps
    if kind == "linear":
        scale = 1000.0 / T
        return torch.linspace(scale * 1e-4, min(scale * 0.02, MAX_BETA), T, dtype=torch.float64)
    if kind == "cosine":
        s = 0.008
        return _betas_from_alpha_bar(lambda t: math.cos((t + s) / (1 + s) * math.pi / 2) ** 2, T)
    s = 1e-4
    return _betas_from_alpha_bar(lambda t: 1.0 - math.sqrt(t + s), T)


class NoiseSchedule(nn.Module):
    """beta, alpha, alpha_bar and the posterior q(x_{k-1} | x_k, x_0) of a T-step chain, as buffers (T,).

    Posterior (Ho et al. 2020, Eq. 6-7):
        mu~_k   = coef1_k x_0 + coef2_k x_k,
        coef1_k = beta_k sqrt(alpha_bar_{k-1}) / (1 - alpha_bar_k),
        coef2_k = (1 - alpha_bar_{k-1}) sqrt(alpha_k) / (1 - alpha_bar_k),
        beta~_k = beta_k (1 - alpha_bar_{k-1}) / (1 - alpha_bar_k),
    with alpha_bar before the first step = 1 (so beta~ = 0 there: the last reverse step is deterministic).
    """

    def __init__(self, kind: str = "sqrt", num_timesteps: int = 1000):
        super().__init__()
        self.kind, self.num_timesteps = kind, num_timesteps
        betas = make_betas(kind, num_timesteps)
        alphas = 1.0 - betas
        alpha_bar = torch.cumprod(alphas, 0)
        alpha_bar_prev = torch.cat([alpha_bar.new_ones(1), alpha_bar[:-1]])
        post_var = betas * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)
        self.register_buffer("betas", betas, persistent=False)
        self.register_buffer("alphas", alphas, persistent=False)
        self.register_buffer("alpha_bar", alpha_bar, persistent=False)
        self.register_buffer("alpha_bar_prev", alpha_bar_prev, persistent=False)
        self.register_buffer("posterior_variance", post_var, persistent=False)
        # log of beta~ with the k=0 entry (exactly 0) replaced by k=1's, as in Ho et al.'s code
        clipped = torch.cat([post_var[1:2], post_var[1:]]) if num_timesteps > 1 else betas.clone()
        self.register_buffer("posterior_log_variance_clipped", clipped.log(), persistent=False)
        self.register_buffer("posterior_mean_coef1", betas * alpha_bar_prev.sqrt() / (1.0 - alpha_bar), persistent=False)
        self.register_buffer("posterior_mean_coef2", (1.0 - alpha_bar_prev) * alphas.sqrt() / (1.0 - alpha_bar),
                             persistent=False)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, num_timesteps={self.num_timesteps}"

    # -- lookups --------------------------------------------------------------------
    def model_time(self, k: torch.Tensor) -> torch.Tensor:
        """Step index k (B,) -> the model's t = (k + 1) / T in (0, 1] (float32)."""
        return (k.float() + 1.0) / self.num_timesteps

    def step_of(self, t: torch.Tensor) -> torch.Tensor:
        """Model time t (B,) in (0, 1] -> the nearest step index k (long): round(t T) - 1, clamped to 0..T-1.

        The inverse of `model_time`: step_of(model_time(k)) == k for every k (t T lands within
        float rounding of the integer k + 1); a t between two steps takes the nearer one.
        """
        return (t * self.num_timesteps).round().long().sub_(1).clamp_(0, self.num_timesteps - 1)

    def coef(self, name: str, k: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Buffer `name` at indices k (B,), shaped (B, 1, ..., 1) to broadcast against `like`."""
        buf = getattr(self, name).to(like.device)[k.to(like.device)]
        return buf.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))

    def snr(self, k: torch.Tensor | None = None) -> torch.Tensor:
        """Signal-to-noise ratio alpha_bar / (1 - alpha_bar) (Kingma et al. 2021, Eq. 2); all T when k is None."""
        ab = self.alpha_bar if k is None else self.alpha_bar[k]
        return ab / (1.0 - ab)

    # -- forward process ------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, k: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_k = sqrt(alpha_bar_k) x_0 + sqrt(1 - alpha_bar_k) eps (Ho et al. 2020, Eq. 4)."""
        ab = self.coef("alpha_bar", k, x0)
        return ab.sqrt() * x0 + (1.0 - ab).sqrt() * noise

    def q_posterior(self, x0: torch.Tensor, x_k: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of q(x_{k-1} | x_k, x_0) (Ho et al. 2020, Eq. 6-7)."""
        mean = self.coef("posterior_mean_coef1", k, x0) * x0 + self.coef("posterior_mean_coef2", k, x0) * x_k
        return mean, self.coef("posterior_variance", k, x0)
