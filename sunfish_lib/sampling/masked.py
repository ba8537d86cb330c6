"""Samplers for masked-diffusion models: fill every [MASK] in x, never touch other positions.

- `ancestral`: the exact reverse process of the absorbing-state chain (D3PM, Austin et
  al. 2021; MDLM, Sahoo et al. 2024, Eq. 7/Alg. 2): from t to s < t a masked token
  becomes token v with probability (alpha_s - alpha_t)/(1 - alpha_t) * p_theta(v | z_t)
  and stays masked with probability (1 - alpha_s)/(1 - alpha_t). With a
  time-unconditioned model, a step that changed nothing reuses the last prediction
  (MDLM's `ddpm_cache`), saving a forward pass.
- `low_confidence` / `random`: LLaDA's remasking samplers (Nie et al. 2025, Sec. 2.4,
  App. B.3): each step predicts every masked token and commits the k most confident
  (or k random) ones; k splits the block's masks evenly over its steps.
- `threshold`: confidence-threshold parallel decoding (Fast-dLLM, Wu et al. 2025,
  Sec. 3.3): commit every masked position whose confidence exceeds `threshold`, at
  least one per step.

Semi-autoregressive blocks (`block_length`, LLaDA App. B.3): positions are split into
blocks left to right and a block is finished before the next starts. Classifier-free
guidance (LLaDA App. B.5): the unconditional pass masks the prompt;
logits = un + (w + 1) (cond - un). All random draws use float64 Gumbel noise.
With `shift_logits` (a model trained with `diffusion.shift_logits`), the token at
position i is read from the logits at position i - 1, exactly as in training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from sunfish_lib.diffusion.masked import MaskSchedule, shift_right
from sunfish_lib.errors import SunfishError
from sunfish_lib.sampling.filters import filter_logits, gumbel_noise, sample_categorical
from sunfish_lib.sampling.trajectory import Trajectory, entropy

MASKED_SAMPLERS = ("ancestral", "low_confidence", "random", "threshold")


@dataclass
class MaskedSampler:
    """Settings of a masked-diffusion sampler; `generate(x)` fills x's [MASK] positions."""

    model: torch.nn.Module
    mask_id: int
    kind: str = "low_confidence"
    steps: int = 64
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    block_length: int = 0
    threshold: float = 0.9
    cfg_scale: float = 0.0
    schedule: MaskSchedule | None = None
    use_cache: bool = True
    shift_logits: bool = False

    def __post_init__(self):
        if self.kind not in MASKED_SAMPLERS:
            raise SunfishError(f"sampler {self.kind!r} is not a masked-diffusion sampler; choose one of {', '.join(MASKED_SAMPLERS)}")
        if self.steps < 1:
            raise SunfishError(f"steps={self.steps} must be >= 1")
        if self.kind == "ancestral" and self.block_length:
            raise SunfishError("block_length applies to low_confidence/random/threshold; use 0 with ancestral")
        self.schedule = self.schedule or MaskSchedule("linear")
        self.forward_passes = 0

    # -- model call ------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, x: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        """Filtered float64 logits (B, T, V) with [MASK] excluded (SUBS), CFG applied."""
        t = (x == self.mask_id).float().mean(1)  # (B,) for time-conditioned models
        logits = self._logits(x, t)
        self.forward_passes += 1
        if self.cfg_scale > 0:
            un_x = x.masked_fill(prompt, self.mask_id)
            un = self._logits(un_x, (un_x == self.mask_id).float().mean(1))
            self.forward_passes += 1
            logits = un + (self.cfg_scale + 1) * (logits - un)
        logits[..., self.mask_id] = float("-inf")
        if self.temperature > 0:
            logits = filter_logits(logits, self.temperature, self.top_k, self.top_p)
        return logits

    def _logits(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """float64 logits (B, T, V), row i scoring the token at position i (shifted when trained so)."""
        logits = self.model(x, t=t).double()
        return shift_right(logits) if self.shift_logits else logits

    def _draw(self, logits: torch.Tensor, generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Proposed tokens x0 (B, T) and their probability under the filtered distribution."""
        x0 = logits.argmax(-1) if self.temperature == 0 else sample_categorical(logits, generator)
        conf = logits.softmax(-1).gather(-1, x0[..., None]).squeeze(-1)  # (B, T) float64
        return x0, conf

    # -- public ----------------------------------------------------------------------
    def generate(
        self,
        x: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        trajectory: Trajectory | None = None,
        callback: Callable[[int, int, torch.Tensor], None] | None = None,
    ) -> torch.Tensor:
        """Fill every [MASK] of x (B, T); tokens that are not [MASK] are kept exactly."""
        x = x.clone()
        self.forward_passes = 0
        prompt = x != self.mask_id  # (B, T) positions given by the caller
        if self.kind == "ancestral":
            return self._ancestral(x, prompt, generator, trajectory, callback)
        T = x.shape[1]
        size = self.block_length or T
        blocks = [(s, min(s + size, T)) for s in range(0, T, size)]
        active = [b for b in blocks if (x[:, b[0]:b[1]] == self.mask_id).any()]
        steps_per_block = max(1, self.steps // max(1, len(active)))
        done = 0
        for lo, hi in active:
            done = self._fill_block(x, prompt, lo, hi, steps_per_block, generator, trajectory, callback, done)
        return x

    # -- confidence-based samplers ----------------------------------------------------
    def _fill_block(self, x, prompt, lo, hi, steps, generator, trajectory, callback, done) -> int:
        in_block = torch.zeros_like(x, dtype=torch.bool)
        in_block[:, lo:hi] = True
        k_per_step = _transfer_schedule(((x == self.mask_id) & in_block).sum(1), steps)  # (B, steps)
        i = 0
        while ((x == self.mask_id) & in_block).any():
            masked = (x == self.mask_id) & in_block
            logits = self.predict(x, prompt)
            x0, conf = self._draw(logits, generator)
            if self.kind == "random":
                conf = torch.rand(x.shape, dtype=torch.float64, device=x.device, generator=generator)
            score = conf.masked_fill(~masked, float("-inf"))
            if self.kind == "threshold":
                commit = _threshold_commit(score, self.threshold)
            else:
                k = k_per_step[:, min(i, steps - 1)] if i < steps else masked.sum(1)
                commit = _topk_commit(score, k)
            commit &= masked
            x[commit] = x0[commit]
            i += 1
            done += 1
            if trajectory is not None:
                trajectory.record(1 - done / max(self.steps, done), tokens=x, confidence=conf.float(),
                                  masked=x == self.mask_id, committed=commit, entropy=entropy(logits))
            if callback is not None:
                callback(done, self.steps, x)
        return done

    # -- ancestral ---------------------------------------------------------------------
    def _ancestral(self, x, prompt, generator, trajectory, callback) -> torch.Tensor:
        cached = None
        time_conditioned = getattr(getattr(self.model, "cfg", None), "time_conditioning", False)
        for k in range(self.steps):
            t = torch.tensor(1 - k / self.steps, dtype=torch.float64)
            s = torch.tensor(1 - (k + 1) / self.steps, dtype=torch.float64)
            masked = x == self.mask_id
            if not masked.any():
                break
            if cached is None or time_conditioned or not self.use_cache:
                cached = self.predict(x, prompt).log_softmax(-1)  # (B, T, V) float64
            a_t, a_s = self.schedule.alpha(t), self.schedule.alpha(s)
            p_unmask = (a_s - a_t) / (1 - a_t)  # per token, MDLM Eq. 7
            logp = cached + torch.log(p_unmask)
            logp[..., self.mask_id] = torch.log(1 - p_unmask) if k < self.steps - 1 else float("-inf")
            draw = (logp + gumbel_noise(logp.shape, x.device, generator)).argmax(-1)
            commit = masked & (draw != self.mask_id)
            x[commit] = draw[commit]
            if trajectory is not None:  # confidence: p_theta of the most likely token at this step
                trajectory.record(float(s), tokens=x, confidence=cached.exp().max(-1).values.float(),
                                  masked=x == self.mask_id, committed=commit, entropy=entropy(cached))
            if commit.any():
                cached = None  # the input changed: the next step needs a fresh forward pass
            if callback is not None:
                callback(k + 1, self.steps, x)
        return x


def _transfer_schedule(n_masked: torch.Tensor, steps: int) -> torch.Tensor:
    """Split each row's masked count over `steps` as evenly as possible, remainder first (LLaDA)."""
    base = n_masked[:, None] // steps  # (B, 1)
    rem = n_masked[:, None] % steps
    return base + (torch.arange(steps, device=n_masked.device)[None] < rem).long()  # (B, steps)


def _topk_commit(score: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Boolean (B, T): the k[b] highest-scoring positions of each row."""
    order = score.argsort(-1, descending=True)
    ranks = torch.empty_like(order).scatter_(-1, order, torch.arange(score.shape[1], device=score.device).expand_as(order))
    return ranks < k[:, None]


def _threshold_commit(score: torch.Tensor, threshold: float) -> torch.Tensor:
    """Positions above the threshold; rows with none commit their single best (Fast-dLLM)."""
    commit = score > threshold
    has_mask = torch.isfinite(score).any(-1)
    best = torch.zeros_like(commit).scatter_(-1, score.argmax(-1, keepdim=True), True)
    need = has_mask & ~commit.any(-1)
    return torch.where(need[:, None], best, commit)
