"""Reverse processes: continuous (DDPM/DDIM) and masked-diffusion samplers, AR sampling, rounding, trajectories.

Names are imported on first use (PEP 562), so `sunfish_lib.commands.sample` (the CLI's
argument parser) loads without torch and every `sunfish` command starts fast.
"""

from importlib import import_module

_WHERE = {
    "sample_ar": "autoregressive",
    "ContinuousSampler": "continuous", "GaussianScheduler": "continuous",
    "filter_logits": "filters", "gumbel_noise": "filters", "sample_categorical": "filters",
    "expand_masks": "infill", "mask_spans": "infill", "template_ids": "infill",
    "MaskedSampler": "masked", "RowNoise": "noise",
    # rounding (Diffusion-LM's clamp to the nearest embedding) is defined with the objective it inverts
    "nearest_tokens": "sunfish_lib.diffusion.rounding", "snap_to_embeddings": "sunfish_lib.diffusion.rounding",
    "Trajectory": "trajectory",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    where = _WHERE[name]
    return getattr(import_module(where if "." in where else f"{__name__}.{where}"), name)


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
