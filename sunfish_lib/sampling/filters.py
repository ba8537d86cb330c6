"""Logit filters and categorical sampling shared by the discrete samplers."""

from __future__ import annotations

import torch


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Temperature, then top-k, then nucleus (top-p, Holtzman et al. 2020) on (..., V) logits.

    Removed entries become -inf. temperature 0 is not allowed here: use argmax directly.
    """
    logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (..., 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # drop a token when the mass before it already reaches top_p (the first token always stays)
        drop_sorted = probs.cumsum(-1) - probs >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, idx, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def gumbel_noise(shape, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard Gumbel noise in float64.

    float64 matters: with fp32 uniforms u is never closer to 0 than ~6e-8, so
    -log(-log u) is capped near 16.6 and rare tokens are under-sampled — the
    effective temperature drops and generative perplexity looks better than it is
    (Zheng et al. 2024, "Masked diffusion models are secretly time-agnostic...", Sec. 4).
    """
    u = torch.rand(shape, device=device, dtype=torch.float64, generator=generator)
    return -torch.log(-torch.log(u.clamp_min(torch.finfo(torch.float64).tiny)))


def sample_categorical(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One draw per row from softmax(logits) via the Gumbel-max trick, in float64: (..., V) -> (...)."""
    return (logits.double() + gumbel_noise(logits.shape, logits.device, generator)).argmax(-1)
