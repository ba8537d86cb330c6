"""The interface every objective shares (continuous, masked, ar), so callers need not know which one they hold.

- `name`: the `diffusion.objective` value; `samplers`: the sampler names it allows (`config.SAMPLERS`).
- `backbone_needs`: what the backbone is built with (`validation.BACKBONE_NEEDS`, applied by
  `ModelConfig.resolve` and `Backbone.from_config`).
- `iterative`: sampling runs denoising steps (a `steps` knob, a trajectory); false for ar.
  `sampling_steps(requested, length)`: the steps worth running for `length` new tokens.
- `likelihood`: whether it scores text; then `continuation_score(model, x, n, draws=, batch=, generator=)`
  gives (log p or its bound of the last n tokens of x given the rest, whether greedy decoding yields them).
- `from_config(cfg, mask_token_id=, eos_token_id=)`: the objective of a run (`build_objective` picks the class).
- `loss(model, batch, generator)`: the training loss, a dict with a scalar `loss` plus metrics.
- `loss_at(model, batch, t, generator)` (the diffusion objectives, `DiffusionObjective`): that loss's
  dict at given noise levels t (B,) in (0, 1] instead of random ones (evaluation, loss against t).
  Continuous diffusion's chain is discrete and takes each t to its nearest step (`NoiseSchedule.step_of`).
  `ar` has none: next-token prediction has no noise level.
- `scored(batch)` (B, T) bool: the tokens a sequence figure covers.
- `sequence_nats(model, batch, t_samples, generator)` (B,): nats per scored token of each sequence,
  `kind` saying what that is (an exact NLL, a bound, or not a likelihood), `t_draws(t_samples)` how
  many noise levels it averages. `evaluate.py` only aggregates these.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch


def antithetic_draws(t_samples: int) -> int:
    """How many noise levels a Monte-Carlo sequence figure averages: `t_samples` rounded down to even, at least 2.

    The masked ELBO draws antithetic pairs (t, 1 - t); continuous diffusion uses the same count, so
    a `t_samples` setting means the same work for both.
    """
    return max(2, t_samples // 2 * 2)


def real_tokens(batch: dict, ids: torch.Tensor) -> torch.Tensor:
    """(B, T) bool: the tokens an objective noises and scores: the batch's real ones (its attention_mask; every
    one of `ids` when it has none) and, with conditional data (`loss_mask`), the completion only.

    LLaDA SFT (Nie et al. 2025, Sec. 2.3): the prompt is never masked or noised, so it conditions every term and
    the bound is one on -log p(completion | prompt), per completion token.
    """
    am, lm = batch.get("attention_mask"), batch.get("loss_mask")
    real = torch.ones_like(ids, dtype=torch.bool) if am is None else am.bool()
    return real if lm is None else real & lm.bool()


class Objective(Protocol):
    name: str
    kind: str
    samplers: tuple[str, ...]
    backbone_needs: dict[str, bool]
    iterative: bool
    likelihood: bool

    @staticmethod
    def sampling_steps(requested: int, length: int) -> int: ...

    @classmethod
    def from_config(cls, cfg: Any, *, mask_token_id: int | None = None,
                    eos_token_id: int | None = None) -> "Objective": ...

    def loss(self, model, batch: dict, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]: ...

    def scored(self, batch: dict) -> torch.Tensor: ...

    def sequence_nats(self, model, batch: dict, t_samples: int = 8,
                      generator: torch.Generator | None = None) -> torch.Tensor: ...

    def t_draws(self, t_samples: int) -> int: ...


class DiffusionObjective(Objective, Protocol):
    """An objective that corrupts with a noise level t (masked, continuous)."""

    def loss_at(self, model, batch: dict, t: torch.Tensor,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]: ...
