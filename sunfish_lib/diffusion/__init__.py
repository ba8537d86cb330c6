"""Objectives on the one backbone: continuous (embedding) diffusion, masked diffusion, block diffusion, the AR baseline.

An objective owns the forward process (noising or masking), its loss, what the model's
output means, its per-sequence likelihood (or bound, or stand-in), what the backbone is built
with and which samplers fit it: the shared interface is `objective.Objective`. `OBJECTIVE_CLASSES`
is the registry; nothing outside config branches on the objective's name to build one.
"""

from __future__ import annotations

from sunfish_lib.config import Config
from sunfish_lib.diffusion.autoregressive import Autoregressive
from sunfish_lib.diffusion.block import BlockDiffusion
from sunfish_lib.diffusion.continuous import ContinuousDiffusion
from sunfish_lib.diffusion.masked import MaskedDiffusion, MaskSchedule, subs_logits
from sunfish_lib.diffusion.objective import DiffusionObjective, Objective  # noqa: F401 (DiffusionObjective: importable here)
from sunfish_lib.diffusion.schedules import NoiseSchedule
from sunfish_lib.errors import ConfigError

OBJECTIVE_CLASSES: dict[str, type[Objective]] = {
    "continuous": ContinuousDiffusion, "masked": MaskedDiffusion, "ar": Autoregressive,
    "block": BlockDiffusion,
}
"""The registry: `diffusion.objective` -> its class (the keys are `config.OBJECTIVES`)."""


def build_objective(cfg: Config, mask_token_id: int | None = None, eos_token_id: int | None = None):
    """The objective named by `cfg.diffusion.objective`.

    `eos_token_id` is the AR baseline's BOS: with it the AR loss scores every token of a row,
    the same set as the masked ELBO (see `diffusion.autoregressive`).
    """
    return objective_class(cfg.diffusion.objective).from_config(cfg, mask_token_id=mask_token_id,
                                                                 eos_token_id=eos_token_id)


def objective_class(name: str) -> type[Objective]:
    """The class registered for `diffusion.objective=name`."""
    if name not in OBJECTIVE_CLASSES:
        raise ConfigError(f"diffusion.objective={name!r} is not allowed; choose one of {', '.join(OBJECTIVE_CLASSES)}")
    return OBJECTIVE_CLASSES[name]


__all__ = ["OBJECTIVE_CLASSES", "Autoregressive", "BlockDiffusion", "ContinuousDiffusion", "MaskedDiffusion", "MaskSchedule",
           "NoiseSchedule", "Objective", "build_objective", "objective_class", "subs_logits"]
