"""Samplers for continuous (embedding-space) diffusion: DDPM ancestral and DDIM, diffusers-shaped.

`GaussianScheduler` is the reverse-step math with the diffusers interface:
`set_timesteps(n)` picks n step indices of the T-step training chain, and
`step(model_output, t, x) -> (prev_sample, pred_x0)` moves x_t to x_s, s the next index.
For a step t -> s (alpha_bar of "before the chain" is 1):

- ddpm: ancestral sampling from q(x_s | x_t, x0_hat) (Ho et al. 2020, Eq. 6-7) on the chain
  with beta = 1 - alpha_bar_t / alpha_bar_s, i.e. the respaced chain of Nichol & Dhariwal
  (2021, Sec. 4) when n < T, the exact one when n = T. Variance: the posterior beta~.
- ddim: x_s = sqrt(alpha_bar_s) x0_hat + sqrt(1 - alpha_bar_s - sigma^2) eps_hat + sigma z
  (Song et al. 2021, Eq. 12) with sigma = eta sqrt((1 - alpha_bar_s)/(1 - alpha_bar_t))
  sqrt(1 - alpha_bar_t/alpha_bar_s) (Eq. 16). eta = 0 is deterministic; eta = 1 is exactly
  the ddpm step (same mean and variance), hence DDPM's marginals.

With `clamp_fn` (Diffusion-LM's clamping trick, Li et al. 2022, Sec. 4.2) the predicted x0
is snapped to the nearest embedding and eps is recomputed from it before the update.

Timesteps are spaced "trailing" (Lin et al. 2024, Sec. 3.3): the first is always T-1, so
sampling starts from the pure-noise end of the chain whatever n is.

`ContinuousSampler` runs the loop on a backbone: unconditional generation from N(0, I)
and infilling, where known positions are reset to q(x_s | x_0) of their tokens after
every step (so the model always sees correctly-noised context) and returned exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from sunfish_lib.diffusion.continuous import ContinuousDiffusion, eps_from_x0, to_x0_eps
from sunfish_lib.config import SAMPLERS
from sunfish_lib.diffusion.schedules import NoiseSchedule
from sunfish_lib.errors import SunfishError
from sunfish_lib.sampling.base import Sampler
from sunfish_lib.sampling.noise import RowNoise
from sunfish_lib.diffusion.rounding import nearest_tokens, resolve_metric, snap_to_embeddings
from sunfish_lib.sampling.trajectory import Trajectory, entropy
from sunfish_lib.config.validation import check_sample_ranges


class GaussianScheduler:
    """Reverse steps of a Gaussian chain (see module docstring); kind is ddpm or ddim."""

    def __init__(self, schedule: NoiseSchedule, prediction: str = "x0", kind: str = "ddim", eta: float = 0.0):
        if kind not in SAMPLERS["continuous"]:
            raise SunfishError(f"sample.sampler={kind!r} is not a continuous sampler; choose one of {', '.join(SAMPLERS['continuous'])}")
        check_sample_ranges(eta=eta)
        self.schedule, self.prediction, self.kind, self.eta = schedule, prediction, kind, float(eta)
        self.num_train_timesteps = schedule.num_timesteps
        self.timesteps = torch.arange(self.num_train_timesteps - 1, -1, -1)
        self._prev = {int(t): int(t) - 1 for t in self.timesteps}

    def set_timesteps(self, num_inference_steps: int) -> torch.Tensor:
        """n step indices, descending, trailing spacing: round(T - i T / n) - 1 for i = 0..n-1."""
        T = self.num_train_timesteps
        check_sample_ranges(num_timesteps=T, steps=num_inference_steps)
        n = num_inference_steps
        ts = [int(round(T - i * T / n)) - 1 for i in range(n)]
        self.timesteps = torch.tensor(ts, dtype=torch.long)
        self._prev = {t: (ts[i + 1] if i + 1 < n else -1) for i, t in enumerate(ts)}
        return self.timesteps

    def prev_timestep(self, t: int) -> int:
        """The index after t in the current timesteps (-1: the clean end)."""
        return self._prev[int(t)]

    def alpha_bar(self, t: int) -> float:
        return 1.0 if t < 0 else float(self.schedule.alpha_bar[t])

    def coefficients(self, t: int) -> tuple[float, float, float]:
        """(weight on x0_hat, weight on the second term, variance) of the step t -> prev(t).

        ddpm: mean = c1 x0_hat + c2 x_t; ddim: mean = c1 x0_hat + c2 eps_hat.
        """
        s = self.prev_timestep(t)
        ab_t, ab_s = self.alpha_bar(t), self.alpha_bar(s)
        if self.kind == "ddpm":
            beta = 1.0 - ab_t / ab_s  # beta of the (respaced) chain
            c1 = math.sqrt(ab_s) * beta / (1.0 - ab_t)  # Ho et al. 2020, Eq. 7
            c2 = math.sqrt(1.0 - beta) * (1.0 - ab_s) / (1.0 - ab_t)
            return c1, c2, beta * (1.0 - ab_s) / (1.0 - ab_t)
        var = self.eta ** 2 * (1.0 - ab_s) / (1.0 - ab_t) * (1.0 - ab_t / ab_s)  # Song et al. 2021, Eq. 16
        return math.sqrt(ab_s), math.sqrt(max(1.0 - ab_s - var, 0.0)), var  # Eq. 12

    def step(
        self,
        model_output: torch.Tensor,
        t: int,
        sample: torch.Tensor,
        *,
        noise: RowNoise | None = None,
        clamp_fn: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One reverse step x_t -> x_prev(t): returns (prev_sample, pred_x0). z comes from each row's stream
        (`noise.RowNoise`; None: torch's global generator)."""
        t = int(t)
        ab_t = torch.tensor(self.alpha_bar(t), dtype=sample.dtype, device=sample.device)
        x0, eps = to_x0_eps(model_output, sample, ab_t, self.prediction)
        if clamp_fn is not None:
            x0 = clamp_fn(x0)
            eps = eps_from_x0(sample, x0, ab_t)
        c1, c2, var = self.coefficients(t)
        mean = c1 * x0 + c2 * (sample if self.kind == "ddpm" else eps)
        if var > 0:
            z = (noise or RowNoise(None)).normal(sample.shape, device=sample.device, dtype=sample.dtype)
            mean = mean + math.sqrt(var) * z
        return mean, x0


@dataclass
class ContinuousSampler(Sampler):
    """Generation with a continuous-diffusion backbone; `sample` for unconditional, `generate(x)` to infill."""

    model: torch.nn.Module
    objective: ContinuousDiffusion
    kind: str = "ddim"
    steps: int = 50
    eta: float = 0.0
    clamp: bool = False
    rounding: str = "auto"
    temperature: float = 1.0
    mask_id: int | None = None
    exclude_ids: Sequence[int] = ()

    def __post_init__(self):
        # clamping and rounding use the rule training's rounding CE learns (see `rounding.resolve_metric`)
        check_sample_ranges(rounding=self.rounding, temperature=self.temperature)
        if self.temperature != 1.0 and self.objective.cfg.continuous_loss != "ce":
            raise SunfishError(f"sample.temperature={self.temperature} tempers the token distribution of a "
                               "continuous_loss=ce (CDCD) model; this one predicts embeddings (mse): leave it at 1")
        self.rounding = resolve_metric(self.rounding, self.objective.cfg.embed_norm)
        self.scheduler = GaussianScheduler(self.objective.schedule, self.objective.prediction, self.kind, self.eta)
        self.scheduler.set_timesteps(self.steps)
        self.forward_passes = 0
        self.name = self.kind

    @classmethod
    def from_config(cls, model, objective, sample_cfg, mask_id: int | None = None, exclude_ids: Sequence[int] = ()):
        """From a `SampleConfig` (sampler, steps, eta, clamp, rounding, temperature)."""
        return cls(model, objective, kind=sample_cfg.sampler, steps=sample_cfg.steps, eta=sample_cfg.eta,
                   clamp=sample_cfg.clamp, rounding=sample_cfg.rounding, temperature=sample_cfg.temperature,
                   mask_id=mask_id, exclude_ids=exclude_ids)

    # -- public ----------------------------------------------------------------------
    def sample(self, num_samples: int, length: int, **kw) -> torch.Tensor:
        """Unconditional token ids (num_samples, length) from pure noise; keywords as in `generate`."""
        if num_samples < 1 or length < 1:
            raise SunfishError(f"num_samples={num_samples} and length={length} must both be >= 1")
        device = next(self.model.parameters()).device
        known = torch.zeros(num_samples, length, dtype=torch.bool, device=device)
        return self._run(torch.zeros_like(known, dtype=torch.long), known, **kw)

    def generate(self, x: torch.Tensor, **kw) -> torch.Tensor:
        """Infill: x (B, T) ids with [MASK] where to generate; every other token is returned exactly.

        Keywords: noise (`noise.RowNoise`, the rows' streams; None: torch's global generator), trajectory (a
        `Trajectory` to fill; None records nothing),
        callback(step, steps, ids): ids (B, T) the rounded predicted x0, known positions held.
        """
        if self.mask_id is None:
            raise SunfishError("infilling needs the tokenizer's [MASK] id: pass mask_id to ContinuousSampler")
        if x.dim() != 2:
            raise SunfishError(f"infill input must be (batch, length) token ids, got shape {tuple(x.shape)}")
        if not (x == self.mask_id).any(1).all():
            raise SunfishError("infill input has a row without [MASK]: mark the positions to generate with [MASK]")
        return self._run(x, x != self.mask_id, **kw)

    # -- the loop --------------------------------------------------------------------
    @torch.no_grad()
    def _run(self, x_ids, known, *, noise: RowNoise | None = None, trajectory: Trajectory | None = None,
             callback=None):
        obj, sched, model = self.objective, self.scheduler, self.model
        noise = RowNoise(None) if noise is None else noise
        was_training = model.training
        model.eval()
        table = obj.embedding_table(model).detach()  # (V, e)
        exclude = list(self.exclude_ids) + ([self.mask_id] if self.mask_id is not None else [])
        x0_known = obj.x0_of(model, x_ids.clamp(0, table.shape[0] - 1), table) if known.any() else None
        shape = (*x_ids.shape, table.shape[1])
        x = noise.normal(shape, device=table.device)  # x_T ~ N(0, I)
        x = self._hold(x, x0_known, known, int(sched.timesteps[0]), noise)
        clamp_fn = (lambda v: snap_to_embeddings(v, table, self.rounding, exclude)) if self.clamp else None
        self_cond, self.forward_passes = None, 0
        for i, t in enumerate(sched.timesteps.tolist()):
            k = torch.full((shape[0],), t, dtype=torch.long, device=x.device)
            out, raw_x0 = obj.predict(model, x, k, table, self_cond=self_cond, temperature=self.temperature)
            self.forward_passes += 1
            x, pred_x0 = sched.step(out, t, x, noise=noise, clamp_fn=clamp_fn)
            x = self._hold(x, x0_known, known, sched.prev_timestep(t), noise)
            if obj.cfg.self_conditioning:
                self_cond = raw_x0  # the unclamped estimate, as training feeds it (`ContinuousDiffusion._self_cond`)
            if trajectory is not None or callback is not None:
                ids, dist = nearest_tokens(pred_x0, table, self.rounding, exclude_ids=exclude)
                ids = torch.where(known, x_ids, ids)  # (B, T) the rounded prediction, context held
            if trajectory is not None:
                logits = obj.rounding_logits(pred_x0, table)  # (B, T, V) p(w | x0_hat), Diffusion-LM's rounding
                logits[..., exclude] = float("-inf")
                trajectory.record((t + 1) / sched.num_train_timesteps, tokens=ids, distance=dist,
                                  entropy=entropy(logits))
            if callback is not None:
                callback(i + 1, len(sched.timesteps), ids)
        model.train(was_training)
        ids, _ = nearest_tokens(x, table, self.rounding, exclude_ids=exclude)
        return torch.where(known, x_ids, ids)

    def _hold(self, x, x0_known, known, s: int, noise: RowNoise) -> torch.Tensor:
        """Reset known positions to a fresh draw of q(x_s | x_0) (x_0 itself when s = -1); only rows with a known
        position draw, so a row without one draws as it would alone."""
        if x0_known is None:
            return x
        if s < 0:
            held = x0_known
        else:
            z = noise.normal(x.shape, device=x.device, rows=known.any(1))
            held = self.objective.schedule.q_sample(x0_known, torch.full((x.shape[0],), s, device=x.device), z)
        return torch.where(known[..., None], held, x)
