"""Reverse processes: masked-diffusion samplers, AR sampling, trajectories (continuous: issue #4)."""

from sunfish_lib.sampling.autoregressive import sample_ar
from sunfish_lib.sampling.filters import filter_logits, gumbel_noise, sample_categorical
from sunfish_lib.sampling.masked import MASKED_SAMPLERS, MaskedSampler
from sunfish_lib.sampling.trajectory import Trajectory

__all__ = ["MASKED_SAMPLERS", "MaskedSampler", "Trajectory", "filter_logits", "gumbel_noise",
           "sample_ar", "sample_categorical"]
