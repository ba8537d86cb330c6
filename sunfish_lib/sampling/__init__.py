"""Reverse processes: continuous (DDPM/DDIM) and masked-diffusion samplers, AR sampling, rounding, trajectories."""

from sunfish_lib.sampling.autoregressive import sample_ar
from sunfish_lib.sampling.continuous import CONTINUOUS_SAMPLERS, ContinuousSampler, GaussianScheduler
from sunfish_lib.sampling.filters import filter_logits, gumbel_noise, sample_categorical
from sunfish_lib.sampling.infill import expand_masks, mask_spans, template_ids
from sunfish_lib.sampling.masked import MASKED_SAMPLERS, MaskedSampler
from sunfish_lib.sampling.rounding import nearest_tokens, snap_to_embeddings
from sunfish_lib.sampling.trajectory import Trajectory

__all__ = ["CONTINUOUS_SAMPLERS", "ContinuousSampler", "GaussianScheduler", "MASKED_SAMPLERS", "MaskedSampler",
           "Trajectory", "expand_masks", "filter_logits", "gumbel_noise", "mask_spans", "nearest_tokens",
           "sample_ar", "sample_categorical", "snap_to_embeddings", "template_ids"]
