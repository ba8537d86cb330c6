"""Timestep sampling shared by the diffusion objectives."""

from __future__ import annotations

import torch


def sample_t(
    batch_size: int,
    *,
    t_min: float = 0.0,
    low_discrepancy: bool = True,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """t in [t_min, 1), shape (B,).

    Low-discrepancy (stratified) sampling as in MDLM (Sahoo et al. 2024, Sec. 3.5.1) and
    VDM (Kingma et al. 2021, App. I.1): element i draws from its own stratum
    [i/B, (i+1)/B), which keeps the batch's t histogram flat and lowers the variance of
    the loss estimate without biasing it.
    """
    u = torch.rand(batch_size, device=device, generator=generator)
    if low_discrepancy:
        u = (torch.arange(batch_size, device=device) + u) / batch_size
    return t_min + (1.0 - t_min) * u
