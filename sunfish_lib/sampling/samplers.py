"""The sampler registry: name -> builder from `SampleConfig` (see `base` for the one sampler shape).

`SAMPLERS` holds every name the config allows (`config.SAMPLERS`, per objective); `build_sampler`
is the one way any caller gets a sampler. Range checks are not repeated here: they are the
config's (`validation.check_sample_ranges`), run when `session.sample` validates the settings.
"""

from __future__ import annotations

from typing import Callable

from sunfish_lib.config import SAMPLERS as BY_OBJECTIVE
from sunfish_lib.config import Config, SampleConfig
from sunfish_lib.diffusion.continuous import ContinuousDiffusion
from sunfish_lib.diffusion.masked import MaskSchedule
from sunfish_lib.sampling.autoregressive import ARSampler
from sunfish_lib.sampling.base import Sampler
from sunfish_lib.sampling.block import BlockSampler
from sunfish_lib.sampling.continuous import ContinuousSampler
from sunfish_lib.sampling.masked import MaskedSampler
from sunfish_lib.config.validation import check_sampler_fits


def never_emitted(tokenizer, vocab_size: int, allow_eos: bool = False) -> list[int]:
    """Ids no sampler may put into text: [MASK], [PAD], EOS (unless `allow_eos`), and ids the tokenizer lacks."""
    specials = [tokenizer.mask_token_id, tokenizer.pad_token_id] + ([] if allow_eos else [tokenizer.eos_token_id])
    known = len(tokenizer) if hasattr(tokenizer, "__len__") else vocab_size
    return sorted({int(i) for i in specials if i is not None} | set(range(known, vocab_size)))


def _masked(model, cfg: Config, tokenizer, s: SampleConfig, never: list[int]) -> Sampler:
    return MaskedSampler(model, tokenizer.mask_token_id, kind=s.sampler, steps=s.steps, temperature=s.temperature,
                         top_k=s.top_k, top_p=s.top_p, block_length=s.block_length, threshold=s.threshold,
                         cfg_scale=s.cfg_scale, cache=s.cache, remask=s.remask, schedule=MaskSchedule(cfg.diffusion.mask_schedule),
                         shift_logits=cfg.diffusion.shift_logits, exclude_ids=never)


def _continuous(model, cfg: Config, tokenizer, s: SampleConfig, never: list[int]) -> Sampler:
    return ContinuousSampler.from_config(model, ContinuousDiffusion(cfg.diffusion), s,
                                         mask_id=tokenizer.mask_token_id, exclude_ids=never)


def _ar(model, cfg: Config, tokenizer, s: SampleConfig, never: list[int]) -> Sampler:
    return ARSampler(model, tokenizer.mask_token_id, tokenizer.eos_token_id, s.temperature, s.top_k, s.top_p,
                     exclude_ids=never)


def _block(model, cfg: Config, tokenizer, s: SampleConfig, never: list[int]) -> Sampler:
    """The masked samplers run block by block with the exact prefix cache (`sampling.block`)."""
    return BlockSampler(model, tokenizer.mask_token_id, kind=s.sampler, steps=s.steps, temperature=s.temperature,
                        top_k=s.top_k, top_p=s.top_p, threshold=s.threshold,
                        schedule=MaskSchedule(cfg.diffusion.mask_schedule), exclude_ids=never,
                        block_size=cfg.diffusion.block_size, eos_id=tokenizer.eos_token_id,
                        shift_logits=cfg.diffusion.shift_logits)


_BUILDERS = {"masked": _masked, "continuous": _continuous, "ar": _ar, "block": _block}
SAMPLERS: dict[str, Callable[..., Sampler]] = {}
for _obj, _names in BY_OBJECTIVE.items():  # a name two objectives share (block reuses masked's) keeps the first
    for _name in _names:
        SAMPLERS.setdefault(_name, _BUILDERS[_obj])
"""Every sampler name -> its builder (model, cfg, tokenizer, SampleConfig, never-emitted ids); `build_sampler`
picks by the run's objective, so block diffusion's `ancestral` is its block-by-block one."""


def build_sampler(model, cfg: Config, tokenizer, sample: SampleConfig | None = None) -> Sampler:
    """The sampler `sample.sampler` names, for the objective the model was trained with."""
    s = sample or cfg.sample
    check_sampler_fits(s.sampler, cfg.diffusion.objective)
    builder = _BUILDERS[cfg.diffusion.objective]
    return builder(model, cfg, tokenizer, s, never_emitted(tokenizer, cfg.model.vocab_size, s.allow_eos))
