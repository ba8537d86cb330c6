"""One generation entry point for every objective: what `sunfish sample`, the widget panel and
the periodic-samples callback call.

Every sampler fills the [MASK] positions of a (B, T) id tensor and keeps the rest:
- `uncond`: B rows of `length` [MASK] (a prompt without [MASK] is kept as a prefix);
- `infill`: the prompt's [MASK] markers, each expanded to `mask_length` [MASK] ids.
The AR baseline can only extend a prefix, so it takes prompts whose masks form a suffix.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from sunfish_lib.config import SAMPLERS, Config, SampleConfig
from sunfish_lib.errors import SunfishError
from sunfish_lib.sampling.autoregressive import sample_ar
from sunfish_lib.sampling.trajectory import Trajectory

MODES = ("uncond", "infill")


class ARSampler:
    """Adapter: AR sampling (KV cache) behind the fill-the-masks interface."""

    def __init__(self, model, mask_id: int, bos_id: int, temperature=1.0, top_k=0, top_p=1.0, exclude_ids=()):
        self.model, self.mask_id, self.bos_id = model, mask_id, bos_id
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.exclude_ids = sorted({mask_id, *exclude_ids})
        self.forward_passes = 0

    def generate(self, x: torch.Tensor, *, generator=None, trajectory=None, callback=None) -> torch.Tensor:
        masked = x == self.mask_id
        p = int(masked[0].nonzero()[0]) if masked[0].any() else x.shape[1]
        if not (masked[:, p:].all() and not masked[:, :p].any()):
            raise SunfishError("the ar sampler only continues a prefix: put every [MASK] at the end "
                               "(use a diffusion objective to infill)")
        prompt = x[:, :p] if p else torch.full((x.shape[0], 1), self.bos_id, device=x.device)
        out = sample_ar(self.model, prompt, x.shape[1] - p, temperature=self.temperature, top_k=self.top_k,
                        top_p=self.top_p, generator=generator, trajectory=trajectory, callback=callback,
                        exclude_ids=self.exclude_ids)
        self.forward_passes = x.shape[1] - p
        return out if p else out[:, 1:]


def never_emitted(tokenizer, vocab_size: int, allow_eos: bool = False) -> list[int]:
    """Ids no sampler may put into text: [MASK], [PAD], EOS (unless `allow_eos`), and ids the tokenizer lacks."""
    specials = [tokenizer.mask_token_id, tokenizer.pad_token_id] + ([] if allow_eos else [tokenizer.eos_token_id])
    known = len(tokenizer) if hasattr(tokenizer, "__len__") else vocab_size
    return sorted({int(i) for i in specials if i is not None} | set(range(known, vocab_size)))


def build_sampler(model, cfg: Config, tokenizer, sample: SampleConfig | None = None):
    """The sampler `sample.sampler` names, for the objective the model was trained with."""
    s = sample or cfg.sample
    never = never_emitted(tokenizer, cfg.model.vocab_size, s.allow_eos)
    objective = cfg.diffusion.objective
    if s.sampler not in SAMPLERS[objective]:
        raise SunfishError(f"sampler {s.sampler!r} does not fit this {objective} checkpoint; "
                           f"choose one of {', '.join(SAMPLERS[objective])}")
    mask_id = tokenizer.mask_token_id
    if objective == "masked":
        from sunfish_lib.diffusion.masked import MaskSchedule
        from sunfish_lib.sampling.masked import MaskedSampler

        return MaskedSampler(model, mask_id, kind=s.sampler, steps=s.steps, temperature=s.temperature, top_k=s.top_k,
                             top_p=s.top_p, block_length=s.block_length, threshold=s.threshold,
                             cfg_scale=s.cfg_scale, schedule=MaskSchedule(cfg.diffusion.mask_schedule),
                             shift_logits=cfg.diffusion.shift_logits, exclude_ids=never)
    if objective == "continuous":
        from sunfish_lib.diffusion.continuous import ContinuousDiffusion
        from sunfish_lib.sampling.continuous import ContinuousSampler

        if s.steps > cfg.diffusion.num_timesteps:
            raise SunfishError(f"steps={s.steps} exceeds the checkpoint's {cfg.diffusion.num_timesteps} training steps")
        return ContinuousSampler.from_config(model, ContinuousDiffusion(cfg.diffusion), s, mask_id=mask_id,
                                             exclude_ids=never)
    return ARSampler(model, mask_id, tokenizer.eos_token_id, s.temperature, s.top_k, s.top_p, exclude_ids=never)


def initial_ids(tokenizer, *, mode: str, prompt: str = "", length: int, mask_length: int, num_samples: int,
                max_len: int) -> torch.Tensor:
    """The (num_samples, T) ids to fill, [MASK] where text is to be generated."""
    from sunfish_lib.sampling.infill import template_ids

    if mode not in MODES:
        raise SunfishError(f"mode={mode!r} is not allowed; choose uncond or infill")
    mask_tok = tokenizer.mask_token
    if mode == "infill":
        if mask_tok not in prompt:
            raise SunfishError(f"infill mode needs a prompt with {mask_tok}, e.g. 'To be [MASK] to be'")
        row = template_ids(tokenizer, prompt, mask_length, max_len)[0]
    else:
        if mask_tok in prompt:
            raise SunfishError(f"the prompt has {mask_tok} but mode is uncond; use mode infill")
        if length < 1:
            raise SunfishError(f"length={length} must be >= 1")
        prefix = tokenizer.encode(prompt) if prompt else []
        row = torch.tensor(prefix + [tokenizer.mask_token_id] * length, dtype=torch.long)
        if row.numel() > max_len:
            raise SunfishError(f"prompt + length = {row.numel()} tokens, past the model's limit {max_len}; "
                               "shorten the prompt or lower length")
    return row[None].repeat(num_samples, 1)


@dataclass
class Generation:
    ids: torch.Tensor  # (B, T) final tokens
    start: torch.Tensor  # (B, T) what the sampler was given ([MASK] where it generated)
    texts: list[str]
    trajectory: Trajectory | None
    forward_passes: int
    sample: SampleConfig | None = None  # the settings it was drawn with


@torch.no_grad()
def generate(model, cfg: Config, tokenizer, *, mode: str = "uncond", prompt: str = "", seed: int = 0,
             record: bool = False, callback=None, **sample_overrides) -> Generation:
    """Sample with the checkpoint's objective; `sample_overrides` replace SampleConfig fields."""
    try:
        s = replace(cfg.sample, **sample_overrides)
    except TypeError as e:
        raise SunfishError(f"unknown sampling setting: {e}") from None
    sampler = build_sampler(model, cfg, tokenizer, s)
    device = next(model.parameters()).device
    x = initial_ids(tokenizer, mode=mode, prompt=prompt, length=s.length, mask_length=s.mask_length,
                    num_samples=s.num_samples, max_len=cfg.model.max_seq_len).to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    meta = {"mode": mode, "prompt": prompt, "seed": seed, "objective": cfg.diffusion.objective,
            "mask_id": tokenizer.mask_token_id}
    trajectory = Trajectory(sampler=s.sampler, meta=meta, start=x.cpu()) if record else None
    was_training = model.training
    model.eval()
    try:
        out = sampler.generate(x, generator=generator, trajectory=trajectory, callback=callback)
    finally:
        model.train(was_training)
    texts = [tokenizer.decode(row.tolist()) for row in out.cpu()]
    return Generation(out.cpu(), x.cpu(), texts, trajectory, int(getattr(sampler, "forward_passes", 0)), s)
