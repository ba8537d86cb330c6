"""Objectives on the one backbone: continuous (embedding) diffusion, masked diffusion, the AR baseline.

An objective owns the forward process (noising or masking), its loss, and what the
model's output means. `loss(model, batch, generator)` returns a dict with a scalar
`loss` plus metrics.
"""

from __future__ import annotations

from sunfish_lib.config import Config
from sunfish_lib.diffusion.autoregressive import Autoregressive
from sunfish_lib.diffusion.continuous import ContinuousDiffusion
from sunfish_lib.diffusion.masked import MaskedDiffusion, MaskSchedule, subs_logits
from sunfish_lib.diffusion.schedules import NoiseSchedule
from sunfish_lib.errors import ConfigError


def build_objective(cfg: Config, mask_token_id: int | None = None, eos_token_id: int | None = None):
    """The objective named by `cfg.diffusion.objective`.

    `eos_token_id` is the AR baseline's BOS: with it the AR loss scores every token of a row,
    the same set as the masked ELBO (see `diffusion.autoregressive`).
    """
    kind = cfg.diffusion.objective
    if kind == "masked":
        if mask_token_id is None:
            raise ConfigError("objective 'masked' needs the tokenizer's [MASK] id; the tokenizer has no [MASK] token")
        return MaskedDiffusion(cfg.diffusion, mask_token_id)
    if kind == "ar":
        return Autoregressive(cfg.diffusion, bos_token_id=eos_token_id)
    if kind == "continuous":
        return ContinuousDiffusion(cfg.diffusion)
    raise ConfigError(f"diffusion.objective={kind!r} is not allowed; choose one of continuous, masked, ar")


__all__ = ["Autoregressive", "ContinuousDiffusion", "MaskedDiffusion", "MaskSchedule", "NoiseSchedule",
           "build_objective", "subs_logits"]
