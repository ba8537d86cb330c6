"""Samplers for masked-diffusion models: fill every [MASK] in x, never touch other positions.

- `ancestral`: the exact reverse process of the absorbing-state chain (D3PM, Austin et
  al. 2021; MDLM, Sahoo et al. 2024, Eq. 7/Alg. 2): from t to s < t a masked token
  becomes token v with probability (alpha_s - alpha_t)/(1 - alpha_t) * p_theta(v | z_t)
  and stays masked with probability (1 - alpha_s)/(1 - alpha_t). The two factors are
  drawn one after the other (a Bernoulli per masked position, then a token only where it
  fired), which is the same law and needs the vocabulary head only where a token lands. A
  step that unmasks nothing costs no forward pass, and the hidden states of an unchanged
  input are reused (MDLM's `ddpm_cache`; `use_cache=False` runs the model every step).
- `low_confidence` / `random`: LLaDA's remasking samplers (Nie et al. 2025, Sec. 2.4,
  App. B.3): each step predicts every masked token and commits the k most confident
  (or k random) ones; k splits the block's masks evenly over its steps. `random` picks its
  k positions first and draws tokens only there.
- `margin`: like low_confidence, ranked by the top-probability margin p(top1) - p(top2) instead of
  p(top1) (Kim et al. ICML 2025, "Train for the Worst, Plan for the Best", arXiv 2502.06768, Sec. 4:
  it commits first the positions the model is least torn about, which solves hard Sudoku).
- `remask` > 0 (low_confidence/random/margin): ReMDM-style remasking (Wang et al. 2025, arXiv 2503.00307,
  Sec. 3, the constant-sigma case): after each step but the last, each generated token committed on an
  earlier step is masked again with probability `remask`; the next step commits enough to stay on the
  transfer schedule, so the block still ends fully unmasked after its steps.
- `threshold`: confidence-threshold parallel decoding (Fast-dLLM, Wu et al. 2025,
  Sec. 3.3): commit every masked position whose confidence exceeds `threshold`, at
  least one per step.

Confidence is p(token) under the untempered, unfiltered softmax (as LLaDA and Fast-dLLM;
`filters.sample_tokens`); the token itself is drawn from the tempered, top-k/top-p filtered
one. temperature 0 is the argmax for every sampler (ancestral included: its tokens are
then argmaxes, while which positions unmask stays the process's own coin flip).

Semi-autoregressive blocks (`block_length`, LLaDA App. B.3): each row's positions from
its first [MASK] on are split into blocks left to right, and a block is finished before the
next starts; `steps` is spread over the blocks (remainder to the first ones), never dropped.
Classifier-free guidance (LLaDA App. B.5): the unconditional pass masks the prompt and runs
in the same batched forward; logits = un + (w + 1) (cond - un); with no prompt it is skipped.
With `shift_logits` (a model trained with `diffusion.shift_logits`), the token at
position i is read from the logits at position i - 1, exactly as in training.

Work is done only where a decision is made: the vocabulary head, softmax, filters and
confidence run on the rows of positions that can commit this step, never on committed ones.
`[MASK]` and `exclude_ids` (e.g. [PAD], and EOS unless variable-length output is wanted)
are never emitted. A time-conditioned model gets the schedule's t: ancestral its step
time, the others the t whose masking probability equals the fraction of the generated
positions (the prompt excluded) still masked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from sunfish_lib.config import SAMPLERS
from sunfish_lib.diffusion.masked import MaskSchedule, shift_right, subs_logits
from sunfish_lib.errors import SunfishError
from sunfish_lib.model.layers import BlockCache
from sunfish_lib.sampling.base import Sampler
from sunfish_lib.sampling.filters import compiled_step, filter_logits, sample_tokens
from sunfish_lib.sampling.noise import RowNoise
from sunfish_lib.sampling.trajectory import Trajectory, entropy
from sunfish_lib.config.validation import check_sample_ranges

REMASKING = ("low_confidence", "random", "margin")
"""The orders ReMDM-style remasking applies to (`sample.remask`)."""


@dataclass
class MaskedSampler(Sampler):
    """Settings of a masked-diffusion sampler; `generate(x)` fills x's [MASK] positions.

    `forward_passes` counts model evaluations of the B rows (a CFG step counts 2, though
    both run as one batched call). `compile`: torch.compile the step math (None: on CUDA only).
    `generate(x, attention_mask=...)`: (B, T) 0 on right padding, never attended to (batched prompts).
    `cache` (prefix, dual): Fast-dLLM's approximate KV cache (see `_block_cache`); `positions` counts the
    token positions the model ran (the cache's saving), `key_positions` the keys they attended to.
    """

    key_padding = True  # generate(x, attention_mask=...): prompts of several lengths in one batch
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
    cache: str = "none"
    remask: float = 0.0
    schedule: MaskSchedule | None = None
    use_cache: bool = True
    shift_logits: bool = False
    exclude_ids: Sequence[int] = ()
    compile: bool | None = None

    def __post_init__(self):
        if self.kind not in SAMPLERS["masked"]:
            raise SunfishError(f"sampler {self.kind!r} is not a masked-diffusion sampler; choose one of {', '.join(SAMPLERS['masked'])}")
        check_sample_ranges(steps=self.steps, temperature=self.temperature, top_k=self.top_k, top_p=self.top_p,
                            block_length=self.block_length, threshold=self.threshold, cfg_scale=self.cfg_scale,
                            cache=self.cache, remask=self.remask)
        if self.remask and self.kind not in REMASKING:
            raise SunfishError(f"sample.remask={self.remask} applies to {', '.join(REMASKING)}; use 0 with {self.kind}")
        if self.cache != "none" and (self.kind == "ancestral" or self.shift_logits or
                                     not hasattr(self.model, "encode")):
            raise SunfishError(f"sample.cache={self.cache!r} needs low_confidence/random/threshold on a Sunfish "
                               "backbone without shift_logits; use cache none")
        if self.kind == "ancestral" and self.block_length:
            raise SunfishError("block_length applies to low_confidence/random/threshold; use 0 with ancestral")
        self.schedule = self.schedule or MaskSchedule("linear")
        if self.cache != "none":  # the cache's window spans every row's block columns: rows batch only with their own
            self.key_padding = False
        self.forward_passes = 0
        self._never = sorted({int(self.mask_id), *(int(i) for i in self.exclude_ids)})
        self._split = hasattr(self.model, "encode") and hasattr(self.model, "logits")
        self._step = None
        self._keys = None  # (B, T) attention mask of the current call, None: attend everywhere
        self._cache = None  # the current block's BlockCache
        self.positions = self.key_positions = 0
        self.name = self.kind

    # -- model call ------------------------------------------------------------------
    def _hidden(self, x: torch.Tensor, prompt: torch.Tensor, t: torch.Tensor):
        """One forward of x (B, T) (+ its prompt-masked copy for CFG, same batch): (states, guided)."""
        guided = self.cfg_scale > 0 and bool(prompt.any())
        kw = {} if self._keys is None else {"attention_mask": torch.cat([self._keys] * (2 if guided else 1))}
        if guided:
            x, t = torch.cat([x, x.masked_fill(prompt, self.mask_id)]), torch.cat([t, t])  # (2B, T)
        c, T = self._cache, x.shape[1]
        self.forward_passes += 2 if guided else 1
        if c is not None and not c.recording:  # the window only; keys: kept + window (Fast-dLLM)
            h = self.model.encode(x[:, c.start:c.stop], t=t, kv_cache=c, **kw)  # (B', stop - start, d)
            self.positions += h.shape[0] * h.shape[1]
            self.key_positions += h.shape[0] * h.shape[1] * T  # kept before + window + kept after = T keys
            h = torch.zeros(h.shape[0], T, h.shape[2], dtype=h.dtype, device=h.device).index_copy_(
                1, torch.arange(c.start, c.stop, device=h.device), h)
            return h, guided
        if c is not None:
            h = self.model.encode(x, t=t, kv_cache=c, **kw)  # the full pass that (re)fills the cache
            c.recording = False
        else:
            h = self.model.encode(x, t=t, **kw) if self._split else self.model(x, t=t, **kw)  # (B', T, d) / (B', T, V)
        self.positions += x.shape[0] * T
        self.key_positions += x.shape[0] * T * T
        return (shift_right(h) if self.shift_logits else h), guided

    def _rows(self, hidden, sel: torch.Tensor) -> torch.Tensor:
        """float32 logits (N, V) at the N positions of sel (B, T): head, CFG, never-emitted ids at -inf."""
        h, guided = hidden
        B = sel.shape[0]
        head = self.model.logits if self._split else (lambda v: v)
        out = head(h[:B][sel]).float()  # (N, V)
        if guided:
            un = head(h[B:][sel]).float()
            out = un + (self.cfg_scale + 1) * (out - un)
        return subs_logits(out, self._never)  # never [MASK]; nor [PAD]/EOS when excluded

    def _draw(self, logits: torch.Tensor, noise: RowNoise | None, where: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokens (N,) from the tempered, filtered rows at the N positions of where (B, T), each drawn from its
        row's stream, and their untempered confidence (N,) float64; uses up logits."""
        if self._step is None:
            self._step = compiled_step(self.compile, logits.device)
        return sample_tokens(logits, self.temperature, self.top_k, self.top_p, noise, where, step=self._step,
                             overwrite=True)

    def _time(self, x: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        """(B,) schedule time whose p_mask is the masked fraction of the generated positions."""
        frac = ((x == self.mask_id) & region).sum(1) / region.sum(1).clamp(min=1)
        return (frac / self.schedule.rate).clamp(max=1.0).float()

    def _entropy(self, logits: torch.Tensor) -> torch.Tensor:
        """Entropy (N,) of the distribution the tokens are drawn from (for trajectories)."""
        if self.temperature > 0:
            logits = filter_logits(logits, self.temperature, self.top_k, self.top_p)
        return entropy(logits)

    # -- public ----------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        x: torch.Tensor,
        *,
        noise: RowNoise | None = None,
        trajectory: Trajectory | None = None,
        callback: Callable[[int, int, torch.Tensor], None] | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Fill every [MASK] of x (B, T); tokens that are not [MASK] are kept exactly. `noise`: the rows' random
        streams (`noise.RowNoise`; None: torch's global generator)."""
        x = x.clone()
        self.forward_passes = self.positions = self.key_positions = 0
        self._keys, self._cache = attention_mask, None
        prompt = x != self.mask_id  # (B, T) positions given by the caller
        noise = RowNoise(None) if noise is None else noise
        if self.kind == "ancestral":
            return self._ancestral(x, prompt, noise, trajectory, callback)
        blocks = self._blocks(x)
        done = 0
        for in_block, steps in zip(blocks, self._row_steps(x, blocks).unbind(1)):
            done = self._fill_block(x, prompt, in_block, steps, noise, trajectory, callback, done)
        return x

    def _row_steps(self, x: torch.Tensor, blocks: list[torch.Tensor]) -> torch.Tensor:
        """(B, blocks) steps per row and block: `steps` spread over the row's own blocks, up to its last one holding
        a [MASK] (`_split_steps`), so a row's schedule never depends on the other rows' prompts."""
        masked = x == self.mask_id
        has = torch.stack([(masked & b).any(1) for b in blocks], 1)  # (B, blocks)
        n = torch.where(has.any(1), has.shape[1] - has.flip(1).int().argmax(1), 0).tolist()  # (B,) the row's blocks
        split = {k: _split_steps(self.steps, k, self.block_length) for k in set(n) if k}
        return torch.tensor([split.get(k, []) + [0] * (len(blocks) - k) for k in n], dtype=torch.long,
                            device=x.device).view(len(n), len(blocks))

    def _blocks(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Per-row block masks (B, T): block b of a row covers [first + b L, first + (b + 1) L), first its first [MASK]."""
        masked = x == self.mask_id
        if not self.block_length:
            return [torch.ones_like(masked)]
        T = x.shape[1]
        first = torch.where(masked.any(1), masked.int().argmax(1), torch.full_like(masked[:, 0], T, dtype=torch.long))
        rel = torch.arange(T, device=x.device)[None] - first[:, None]  # (B, T) offset from the first mask
        block = torch.where(rel >= 0, rel // self.block_length, torch.full_like(rel, -1))
        n_blocks = int(block[masked].max()) + 1 if masked.any() else 0  # blocks that hold a [MASK]
        return [block == b for b in range(n_blocks)]

    # -- confidence-based samplers ----------------------------------------------------
    def _fill_block(self, x, prompt, in_block, steps, noise, trajectory, callback, done) -> int:
        """The loop over one block: row b commits k per step from its transfer schedule over steps[b] steps (an int:
        every row's), then every remaining mask. A row that has finished the block draws nothing more, so each
        row runs exactly as it would alone."""
        steps = torch.as_tensor(steps, device=x.device).expand(x.shape[0])  # (B,)
        n0 = ((x == self.mask_id) & in_block).sum(1)  # (B,)
        k_per_step = _transfer_schedule(n0, steps)  # (B, max steps)
        left_after = n0[:, None] - k_per_step.cumsum(1)  # (B, max steps) masks left on schedule
        last = max(k_per_step.shape[1] - 1, 0)
        self._cache = self._block_cache(x, in_block)
        i = 0
        while ((x == self.mask_id) & in_block).any():
            masked = (x == self.mask_id) & in_block
            scheduled = i < steps  # (B,) rows still on their schedule
            k = torch.where(scheduled, k_per_step[:, min(i, last)], masked.sum(1))  # (B,)
            if self.remask:  # remasked tokens are committed again: back on the schedule
                k = torch.where(scheduled, (masked.sum(1) - left_after[:, min(i, last)]).clamp(min=0), k)
            refresh = self._cache is not None and self._cache.recording  # this pass refills the cache
            out = self.step(x, prompt, masked, k, noise, record=trajectory is not None)
            rows = masked.any(1) & (i < steps - 1)  # (B,) rows that remask after this step: not their last
            again = self._remask(x, prompt, in_block, out, noise, rows) if self.remask and rows.any() else None
            if out is not None and trajectory is not None:
                commit, c, e = out
                extra = {} if self._cache is None else {"refreshed": torch.full_like(commit, refresh)}
                if self.remask:
                    extra["remasked"] = again if again is not None else torch.zeros_like(commit)
                trajectory.record(1 - (done + 1) / max(self.steps, done + 1), tokens=x, confidence=c,
                                  masked=x == self.mask_id, committed=commit, entropy=e, **extra)
            i += 1
            done += 1
            if callback is not None:
                callback(done, self.steps, x)
        self._cache = None
        return done

    def _remask(self, x, prompt, in_block, out, noise, rows) -> torch.Tensor:
        """ReMDM (constant sigma): in the rows (B,) given, mask again, with probability `remask` each, the generated
        tokens of the block committed before this step; in place on x. Returns the (B, T) remasked positions."""
        just = out[0] if out is not None else torch.zeros_like(prompt)
        earlier = in_block & ~prompt & (x != self.mask_id) & ~just & rows[:, None]
        again = torch.zeros_like(earlier)
        again[earlier] = (noise.uniform(earlier) < self.remask)  # one uniform per candidate
        x[again] = self.mask_id
        return again

    def _block_cache(self, x: torch.Tensor, in_block: torch.Tensor):
        """A fresh `BlockCache` for this block (None: cache off): the window runs from the block's first column
        to its last (dual) or to the end (prefix); the block's first pass fills it (Fast-dLLM Sec. 3.2: the
        cache is refreshed when a block completes)."""
        if self.cache == "none":
            return None
        cols = (in_block & (x == self.mask_id)).any(0).nonzero()
        if cols.numel() == 0:
            return None
        stop = int(cols[-1]) + 1 if self.cache == "dual" else x.shape[1]
        return BlockCache(len(self.model.blocks), int(cols[0]), stop)

    @torch.no_grad()
    def step(self, x, prompt, masked, k, noise: RowNoise | None = None, record: bool = False):
        """One reverse step of a confidence sampler, in place on x (B, T): among `masked`, commit k (B,) per row
        (low_confidence: the most confident, LLaDA Sec. 2.4; random: uniform; threshold: every position above
        it, at least one, Fast-dLLM Sec. 3.3). Returns (committed, confidence, entropy) (B, T) maps (the last
        two None unless `record`), or None when nothing was to decide (no forward pass). Every draw is the row's
        own (`noise`, a `RowNoise`; None: torch's global generator), at the positions it decides."""
        noise = RowNoise(None) if noise is None else noise
        if self.kind == "random":  # positions first (uniform among the masked), tokens only there
            score = torch.full(x.shape, -1.0, dtype=torch.float64, device=x.device)
            score[masked] = noise.uniform(masked)
            sel = commit = _topk_commit(score, k) & masked
        else:
            sel = masked & (k > 0)[:, None] if self.kind in ("low_confidence", "margin") else masked
        if not sel.any():
            return None
        hidden = self._hidden(x, prompt, self._time(x, ~prompt))
        logits = self._rows(hidden, sel)  # (N, V)
        ent = self._entropy(logits) if record else None  # before the draw uses logits up
        top2 = logits.softmax(-1).topk(2, -1).values.double() if self.kind == "margin" else None  # (N, 2)
        tok, conf = self._draw(logits, noise, sel)  # (N,), (N,)
        if self.kind != "random":
            score = torch.full(x.shape, float("-inf"), dtype=torch.float64, device=x.device)
            score[sel] = conf if top2 is None else top2[:, 0] - top2[:, 1]  # margin: Kim et al. 2025, Sec. 4
            commit = (_threshold_commit(score, self.threshold) if self.kind == "threshold"
                      else _topk_commit(score, k)) & sel
        proposal = torch.full_like(x, -1)
        proposal[sel] = tok
        x[commit] = proposal[commit]
        if not record:
            return commit, None, None
        c, e = torch.zeros(x.shape, device=x.device), torch.zeros(x.shape, device=x.device)
        c[sel], e[sel] = conf.float(), ent
        return commit, c, e

    # -- ancestral ---------------------------------------------------------------------
    def _ancestral(self, x, prompt, noise, trajectory, callback, region=None, steps=None,
                   done: int = 0) -> torch.Tensor:
        """The reverse chain over `steps` (default: self.steps) on the [MASK]s inside region (B, T) (default: all);
        `done` steps ran before (block diffusion runs one chain per block)."""
        hidden = None  # hidden states of the current x (ddpm_cache); None once x changed
        time_conditioned = bool(getattr(getattr(self.model, "cfg", None), "time_conditioning", False))
        steps = steps or self.steps
        for k in range(steps):
            t = torch.tensor(1 - k / steps, dtype=torch.float64)
            s = torch.tensor(1 - (k + 1) / steps, dtype=torch.float64)
            masked = (x == self.mask_id) if region is None else (x == self.mask_id) & region
            if not masked.any():
                break
            a_t, a_s = self.schedule.alpha(t), self.schedule.alpha(s)
            p_unmask = 1.0 if k == steps - 1 else float((a_s - a_t) / (1 - a_t))  # MDLM Eq. 7
            commit = torch.zeros_like(masked)  # (B, T) the positions that leave [MASK] at this step
            commit[masked] = noise.uniform(masked) < p_unmask  # one coin per masked position, from its row's stream
            t_b = torch.full((x.shape[0],), float(t), device=x.device)
            needed = bool(commit.any()) or trajectory is not None
            if not self.use_cache or (needed and (hidden is None or time_conditioned)):
                hidden = self._hidden(x, prompt, t_b)
            if commit.any():
                tok, _ = self._draw(self._rows(hidden, commit), noise, commit)
                x[commit] = tok
            if trajectory is not None:  # confidence: p_theta of the most likely token at this step
                logits = self._rows(hidden, masked)
                c, ent = torch.zeros(x.shape, device=x.device), torch.zeros(x.shape, device=x.device)
                c[masked] = logits.softmax(-1).max(-1).values
                ent[masked] = self._entropy(logits)
                trajectory.record(float(s), tokens=x, confidence=c, masked=x == self.mask_id, committed=commit,
                                  entropy=ent)
            if commit.any():
                hidden = None  # the input changed: the next step that needs the model runs it again
            if callback is not None:
                callback(done + k + 1, self.steps, x)
        return x


def _split_steps(steps: int, n_blocks: int, block_length: int) -> list[int]:
    """`steps` spread over the semi-AR blocks, the remainder to the first ones; none dropped."""
    if n_blocks > steps:
        raise SunfishError(f"steps={steps} is fewer than the {n_blocks} semi-autoregressive blocks of "
                           f"block_length={block_length}; use steps >= {n_blocks} or a larger block_length")
    return [steps // n_blocks + (b < steps % n_blocks) for b in range(n_blocks)]


def _transfer_schedule(n_masked: torch.Tensor, steps) -> torch.Tensor:
    """Split each row's masked count over its steps (an int, or (B,) per row) as evenly as possible, remainder
    first (LLaDA): (B, max steps), 0 past a row's own steps."""
    steps = torch.as_tensor(steps, device=n_masked.device).expand_as(n_masked)[:, None]  # (B, 1)
    base = n_masked[:, None] // steps.clamp(min=1)  # (B, 1)
    rem = n_masked[:, None] % steps.clamp(min=1)
    i = torch.arange(int(steps.max()) if steps.numel() else 0, device=n_masked.device)[None]  # (1, max steps)
    return torch.where(i < steps, base + (i < rem).long(), 0)  # (B, max steps)


def _topk_commit(score: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Boolean (B, T): the k[b] highest-scoring positions of each row."""
    order = score.argsort(dim=-1, descending=True, stable=True)  # ties to the lower position, whatever the padding
    ranks = torch.empty_like(order).scatter_(-1, order, torch.arange(score.shape[1], device=score.device).expand_as(order))
    return ranks < k[:, None]


def _threshold_commit(score: torch.Tensor, threshold: float) -> torch.Tensor:
    """Positions above the threshold; rows with none commit their single best (Fast-dLLM)."""
    commit = score > threshold
    has_mask = torch.isfinite(score).any(-1)
    best = torch.zeros_like(commit).scatter_(-1, score.argmax(-1, keepdim=True), True)
    need = has_mask & ~commit.any(-1)
    return torch.where(need[:, None], best, commit)
