"""Diffusion sampling for exported Sunfish models, from plain `transformers` (torch only; remote code).

`SunfishForMaskedLM.diffusion_generate` runs these loops. The blocks marked "# Copied from" are
copies of Sunfish's own sampler code (tests/test_hf_copies.py fails when one drifts from its
source); the loops below them restate `sunfish_lib.sampling.masked.MaskedSampler` without its
caches, trajectories and callbacks, and tests/test_hf_generate.py checks they give Sunfish's tokens.

- low_confidence / random / threshold: LLaDA's remasking samplers (Nie et al. 2025, Sec. 2.4, App. B.3)
  and Fast-dLLM's threshold decoding (Wu et al. 2025, Sec. 3.3), with semi-autoregressive blocks
  (`block_length`) and classifier-free guidance (LLaDA App. B.5).
- ancestral: the absorbing-state reverse process (MDLM, Sahoo et al. 2024, Eq. 7).
- block exports (BD3-LM, Arriola et al. 2025, Alg. 2): the samplers above run block by block, each block attending
  to the prompt and the finished blocks only (block-causal), as `sunfish_lib.sampling.block.BlockSampler`.
- ddim (continuous exports) is in continuous_sunfish.py and draws through the same `RowNoise`.

Draws: one float64 uniform per decided position, inverted through the CDF of the tempered,
top-k/top-p filtered softmax (`inverse_cdf`), so a seed gives the same tokens as in Sunfish. Every row draws from
its own stream seeded from (seed, its sample index) (`RowNoise`), so a row's sample does not depend on the batch.
"""

from typing import Sequence

import torch

CHUNK = 256  # vocabulary chunk of the two-level inverse-CDF search
MASK_RATE = {"linear": 1.0, "loglinear": 1.0 - 1e-3}
"""alpha_t = 1 - rate t: Sunfish's `MaskSchedule` (MDLM App. C's loglinear keeps 1e-3 of tokens at t = 1)."""
MASKED_SAMPLERS = ("ancestral", "low_confidence", "random", "threshold")
GOLDEN = 0x9E3779B97F4A7C15  # the per-row seed increment (Sunfish's sampling/noise.py)


# Copied from sunfish_lib.sampling.filters.inverse_cdf
def inverse_cdf(logits: torch.Tensor, u: torch.Tensor, overwrite: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows (N, V) of float32 logits (-inf = never), uniforms u (N,) in [0, 1) -> (token (N,), its probability (N,) float64).

    The token is the one whose CDF bin holds u. Two levels: chunk sums (float32, each
    exact to ~1e-7 relative, the precision of the logits themselves), located in their
    float64 cumulative sum, then a float64 cumulative sum inside the one chunk, rescaled to
    that chunk's float64 mass. So every token, the rarest included, is drawn with its
    probability to float32 relative precision; no tail is cut as low-precision Gumbel noise
    would. Never returns a zero-probability token. `overwrite`: reuse the logits' memory for
    the exponentials (the caller's tensor is destroyed).
    """
    N, V = logits.shape
    m = logits.amax(-1, keepdim=True)  # (N, 1)
    e = (logits.sub_(m) if overwrite else logits - m).exp_()  # (N, V) unnormalised, max entry 1
    full = V // CHUNK * CHUNK
    sums = e[:, :full].view(N, -1, CHUNK).sum(-1)  # (N, V // CHUNK)
    if full < V:
        sums = torch.cat([sums, e[:, full:].sum(-1, keepdim=True)], 1)
    cum = sums.double().cumsum(-1)  # (N, C)
    total = cum[:, -1]
    target = u * total  # (N,) in [0, Z)
    last_c = (cum < total[:, None]).sum(-1)  # the last chunk with mass
    c = torch.searchsorted(cum, target[:, None], right=True).squeeze(-1).clamp_max(last_c)  # (N,)
    before = torch.where(c > 0, cum.gather(-1, (c - 1).clamp_min(0)[:, None]).squeeze(-1), torch.zeros_like(target))
    idx = c[:, None] * CHUNK + torch.arange(CHUNK, device=e.device)  # (N, CHUNK) the chunk's token ids
    inner = e.gather(-1, idx.clamp_max(V - 1)).masked_fill(idx >= V, 0.0).double().cumsum(-1)  # (N, CHUNK)
    last_k = (inner < inner[:, -1:]).sum(-1)  # the chunk's last token with mass
    chunk_mass = sums.gather(-1, c[:, None]).squeeze(-1).double()  # (N,) the float32 mass the first level used
    r = (target - before) / chunk_mass * inner[:, -1]  # (N,) position inside the chunk, on its float64 scale
    k = torch.searchsorted(inner, r[:, None], right=True).squeeze(-1).clamp_max(last_k)
    tok = c * CHUNK + k
    return tok, e.gather(-1, tok[:, None]).squeeze(-1).double() / total


# Copied from sunfish_lib.sampling.filters.logsumexp
def logsumexp(x: torch.Tensor) -> torch.Tensor:
    """log sum exp over the last axis, (...): max-shifted (torch.logsumexp is several times slower on CPU)."""
    m = x.amax(-1, keepdim=True)
    return ((x - m).exp_().sum(-1).log_() + m.squeeze(-1))


# Copied from sunfish_lib.sampling.filters._nucleus_count
def _nucleus_count(sorted_logits: torch.Tensor, lse: torch.Tensor, top_p: float) -> torch.Tensor:
    """How many of the descending logits (N, k) the nucleus keeps: tokens whose mass before them is < top_p."""
    p = (sorted_logits.double() - lse[:, None]).exp()  # (N, k) true probabilities of the k best
    before = p.cumsum(-1) - p
    return (before < top_p).sum(-1)  # (N,) >= 1


# Copied from sunfish_lib.sampling.filters._candidates
def _candidates(scaled: torch.Tensor, top_k: int, top_p: float) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The kept tokens as (logits (N, k), ids (N, k)) with -inf beyond each row's cut; None: keep all V."""
    N, V = scaled.shape
    if (not top_k or top_k >= V) and top_p >= 1.0:
        return None
    if top_p >= 1.0:
        return torch.topk(scaled, top_k, dim=-1)
    cap = top_k if top_k and top_k < V else V
    # the nucleus is taken within the top-k (filter order: top-k, then top-p), so its mass is relative to it
    lse = logsumexp(torch.topk(scaled, cap, dim=-1).values if cap < V else scaled).double()  # (N,)
    k = min(cap, 64)
    while True:  # grow k until every row's nucleus fits: exact, and usually far below V
        vals, ids = torch.topk(scaled, k, dim=-1) if k < V else torch.sort(scaled, dim=-1, descending=True)
        n = _nucleus_count(vals, lse, top_p)
        if k >= cap or bool((n < k).all()):
            break
        k = min(cap, 4 * k)
    keep = torch.arange(vals.shape[1], device=vals.device)[None] < n[:, None]
    return vals.masked_fill(~keep, float("-inf")), ids


# Copied from sunfish_lib.sampling.filters.decide
def decide(logits: torch.Tensor, u: torch.Tensor | None, temperature: float, top_k: int = 0,
           top_p: float = 1.0, overwrite: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Pure step math (what `torch.compile` may fuse): logits (N, V), uniforms u (N,) float64 or None for greedy.

    Returns tokens (N,) and confidence (N,) float64 = p(token) under softmax(logits).
    `overwrite`: the logits may be destroyed (saves a (N, V) buffer).
    """
    logits = logits.float()
    V = logits.shape[-1]
    if u is None or temperature == 0:
        tok = logits.argmax(-1)
        return tok, (logits.gather(-1, tok[:, None]).squeeze(-1) - logsumexp(logits)).double().exp()
    if temperature == 1 and (not top_k or top_k >= V) and top_p >= 1.0:
        return inverse_cdf(logits, u, overwrite)  # drawn from the untempered softmax: its p is the confidence
    lse = logsumexp(logits)  # (N,) the untempered normaliser, for the confidence
    scaled = logits / temperature
    cand = _candidates(scaled, top_k, top_p)
    if cand is None:
        tok = inverse_cdf(scaled, u, overwrite=True)[0]
    else:
        vals, ids = cand
        tok = ids.gather(-1, inverse_cdf(vals, u, overwrite=True)[0][:, None]).squeeze(-1)
    return tok, (logits.gather(-1, tok[:, None]).squeeze(-1) - lse).double().exp()


# Copied from sunfish_lib.sampling.noise.row_seed
def row_seed(seed: int, i: int) -> int:
    """The seed of sample i's stream: seed + i * GOLDEN mod 2**64 (row 0: the seed itself)."""
    return (int(seed) + int(i) * GOLDEN) % 2**64


# Copied from sunfish_lib.sampling.noise.RowNoise
class RowNoise:
    """One random stream per batch row (see module docstring).

    `seed` None draws from torch's global generator instead (ad-hoc use; not batch-invariant). `rows`: the sample
    index i of each batch row (default 0..B-1); two rows with the same index draw the same numbers.
    """

    def __init__(self, seed: int | None = 0, rows: Sequence[int] | None = None):
        self.seed = None if seed is None else int(seed)
        self.rows = None if rows is None else [int(i) for i in rows]
        self._gens: dict[int, torch.Generator] = {}

    @classmethod
    def from_generator(cls, generator: torch.Generator, rows: Sequence[int] | None = None) -> "RowNoise":
        """Streams whose seed is one draw of `generator`: for an API that takes a generator (transformers')."""
        return cls(int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device)), rows)

    def _gen(self, b: int, device) -> torch.Generator | None:
        if self.seed is None:
            return None
        if b not in self._gens:
            i = b if self.rows is None else self.rows[b]
            self._gens[b] = torch.Generator(device=device).manual_seed(row_seed(self.seed, i))
        return self._gens[b]

    def uniform(self, where: torch.Tensor) -> torch.Tensor:
        """float64 uniforms in [0, 1), one per True entry of where (B, ...), in row-major order (as `t[where]`);
        row b's come from its own stream."""
        counts = where.reshape(where.shape[0], -1).sum(1).tolist()
        parts = [torch.rand(n, dtype=torch.float64, device=where.device, generator=self._gen(b, where.device))
                 for b, n in enumerate(counts) if n]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64, device=where.device)

    def normal(self, shape: Sequence[int], *, device=None, dtype=torch.float32,
               rows: torch.Tensor | None = None) -> torch.Tensor:
        """Standard normal noise of `shape` (B, ...), row b from its own stream; rows (B,) bool: only those draw
        (the others are 0 and leave their stream untouched)."""
        out = torch.zeros(tuple(shape), device=device, dtype=dtype)
        take = range(shape[0]) if rows is None else rows.nonzero().flatten().tolist()
        for b in take:
            out[b] = torch.randn(tuple(shape[1:]), device=device, dtype=dtype, generator=self._gen(b, device))
        return out


# Copied from sunfish_lib.sampling.filters.sample_tokens
def sample_tokens(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                  noise: RowNoise | None = None, where: torch.Tensor | None = None, step=decide,
                  overwrite: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row of logits (N, V) and its untempered confidence (N,) float64 (see module docstring).

    temperature 0: argmax (top-k/top-p cannot change an argmax). The uniforms come from `noise` (`noise.RowNoise`;
    None: torch's global generator): `where` (B, ...) bool, whose N True entries (row-major) are the logits'
    rows, says which batch row's stream draws each (None: all N from stream 0). `step` is `decide` or a
    compiled copy of it; the random numbers are drawn here, eagerly, so both give the same tokens.
    `overwrite`: the caller's logits may be destroyed.
    """
    if logits.shape[0] == 0:
        return logits.new_zeros(0, dtype=torch.long), logits.new_zeros(0, dtype=torch.float64)
    u = None
    if temperature > 0:
        where = torch.ones(1, logits.shape[0], dtype=torch.bool, device=logits.device) if where is None else where
        u = (noise or RowNoise(None)).uniform(where)
    return step(logits, u, temperature, top_k, top_p, overwrite)


# Copied from sunfish_lib.sampling.masked._split_steps with SunfishError->ValueError
def _split_steps(steps: int, n_blocks: int, block_length: int) -> list[int]:
    """`steps` spread over the semi-AR blocks, the remainder to the first ones; none dropped."""
    if n_blocks > steps:
        raise ValueError(f"steps={steps} is fewer than the {n_blocks} semi-autoregressive blocks of "
                           f"block_length={block_length}; use steps >= {n_blocks} or a larger block_length")
    return [steps // n_blocks + (b < steps % n_blocks) for b in range(n_blocks)]


# Copied from sunfish_lib.sampling.masked._transfer_schedule
def _transfer_schedule(n_masked: torch.Tensor, steps) -> torch.Tensor:
    """Split each row's masked count over its steps (an int, or (B,) per row) as evenly as possible, remainder
    first (LLaDA): (B, max steps), 0 past a row's own steps."""
    steps = torch.as_tensor(steps, device=n_masked.device).expand_as(n_masked)[:, None]  # (B, 1)
    base = n_masked[:, None] // steps.clamp(min=1)  # (B, 1)
    rem = n_masked[:, None] % steps.clamp(min=1)
    i = torch.arange(int(steps.max()) if steps.numel() else 0, device=n_masked.device)[None]  # (1, max steps)
    return torch.where(i < steps, base + (i < rem).long(), 0)  # (B, max steps)


# Copied from sunfish_lib.sampling.masked._topk_commit
def _topk_commit(score: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Boolean (B, T): the k[b] highest-scoring positions of each row."""
    order = score.argsort(dim=-1, descending=True, stable=True)  # ties to the lower position, whatever the padding
    ranks = torch.empty_like(order).scatter_(-1, order, torch.arange(score.shape[1], device=score.device).expand_as(order))
    return ranks < k[:, None]


# Copied from sunfish_lib.sampling.masked._threshold_commit
def _threshold_commit(score: torch.Tensor, threshold: float) -> torch.Tensor:
    """Positions above the threshold; rows with none commit their single best (Fast-dLLM)."""
    commit = score > threshold
    has_mask = torch.isfinite(score).any(-1)
    best = torch.zeros_like(commit).scatter_(-1, score.argmax(-1, keepdim=True), True)
    need = has_mask & ~commit.any(-1)
    return torch.where(need[:, None], best, commit)


# Copied from sunfish_lib.sampling.masked.MaskedSampler._blocks with self.mask_id->mask_id, self.block_length->block_length
def _blocks(x: torch.Tensor, mask_id: int, block_length: int) -> list[torch.Tensor]:
    """Per-row block masks (B, T): block b of a row covers [first + b L, first + (b + 1) L), first its first [MASK]."""
    masked = x == mask_id
    if not block_length:
        return [torch.ones_like(masked)]
    T = x.shape[1]
    first = torch.where(masked.any(1), masked.int().argmax(1), torch.full_like(masked[:, 0], T, dtype=torch.long))
    rel = torch.arange(T, device=x.device)[None] - first[:, None]  # (B, T) offset from the first mask
    block = torch.where(rel >= 0, rel // block_length, torch.full_like(rel, -1))
    n_blocks = int(block[masked].max()) + 1 if masked.any() else 0  # blocks that hold a [MASK]
    return [block == b for b in range(n_blocks)]


# Copied from sunfish_lib.sampling.masked.MaskedSampler._row_steps with self.mask_id->mask_id, self.steps->steps, self.block_length->block_length
def _row_steps(x: torch.Tensor, blocks: list[torch.Tensor], mask_id: int, steps: int, block_length: int) -> torch.Tensor:
    """(B, blocks) steps per row and block: `steps` spread over the row's own blocks, up to its last one holding
    a [MASK] (`_split_steps`), so a row's schedule never depends on the other rows' prompts."""
    masked = x == mask_id
    has = torch.stack([(masked & b).any(1) for b in blocks], 1)  # (B, blocks)
    n = torch.where(has.any(1), has.shape[1] - has.flip(1).int().argmax(1), 0).tolist()  # (B,) the row's blocks
    split = {k: _split_steps(steps, k, block_length) for k in set(n) if k}
    return torch.tensor([split.get(k, []) + [0] * (len(blocks) - k) for k in n], dtype=torch.long,
                        device=x.device).view(len(n), len(blocks))


class MaskedSettings:
    """What a masked-diffusion loop needs: the model, the ids it never emits and Sunfish's sampling settings."""

    def __init__(self, model, mask_id: int, never, *, sampler: str, steps: int, temperature: float, top_k: int,
                 top_p: float, block_length: int, threshold: float, cfg_scale: float, rate: float,
                 shift_logits: bool, attention_mask=None):
        if sampler not in MASKED_SAMPLERS:
            raise ValueError(f"sampler={sampler!r} is not a masked-diffusion sampler; choose one of "
                             f"{', '.join(MASKED_SAMPLERS)}")
        if sampler == "ancestral" and block_length:
            raise ValueError("block_length applies to low_confidence/random/threshold; use 0 with ancestral")
        self.model, self.mask_id, self.never = model, mask_id, sorted({int(mask_id), *(int(i) for i in never)})
        self.kind, self.steps, self.temperature, self.top_k, self.top_p = sampler, steps, temperature, top_k, top_p
        self.block_length, self.threshold, self.cfg_scale, self.rate = block_length, threshold, cfg_scale, rate
        self.shift_logits, self.attention_mask = shift_logits, attention_mask

    def hidden(self, x: torch.Tensor, prompt: torch.Tensor, t: torch.Tensor):
        """One forward of x (B, T) (+ its prompt-masked copy for CFG): (states (B', T, d), guided)."""
        guided = self.cfg_scale > 0 and bool(prompt.any())
        keys = self.attention_mask
        if guided:
            x, t = torch.cat([x, x.masked_fill(prompt, self.mask_id)]), torch.cat([t, t])  # (2B, T)
            keys = None if keys is None else torch.cat([keys, keys])
        h = self.model.encode(x, attention_mask=keys, timesteps=t)
        if self.shift_logits:  # the token at i is read from the output at i - 1, as in training
            h = torch.cat([h[:, :1], h[:, :-1]], dim=1)
        return h, guided

    def rows(self, hidden, sel: torch.Tensor) -> torch.Tensor:
        """float32 logits (N, V) at the N positions of sel (B, T): head, CFG, never-emitted ids at -inf."""
        h, guided = hidden
        B = sel.shape[0]
        out = self.model.logits_of(h[:B][sel])[1].float()
        if guided:  # LLaDA App. B.5: un + (w + 1) (cond - un)
            un = self.model.logits_of(h[B:][sel])[1].float()
            out = un + (self.cfg_scale + 1) * (out - un)
        out[:, self.never] = float("-inf")
        return out

    def time(self, x: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
        """(B,) schedule time whose p_mask is the masked fraction of the generated positions."""
        frac = ((x == self.mask_id) & region).sum(1) / region.sum(1).clamp(min=1)
        return (frac / self.rate).clamp(max=1.0).float()


@torch.no_grad()
def masked_generate(s: MaskedSettings, x: torch.Tensor, noise: RowNoise | None = None) -> torch.Tensor:
    """Fill every [MASK] of x (B, T) as `MaskedSampler.generate` does; other tokens are kept exactly. `noise`:
    the rows' random streams (None: torch's global generator)."""
    x = x.clone()
    prompt = x != s.mask_id  # (B, T) positions given by the caller
    noise = RowNoise(None) if noise is None else noise
    if s.kind == "ancestral":
        return _ancestral(s, x, prompt, noise)
    blocks = _blocks(x, s.mask_id, s.block_length)
    for in_block, steps in zip(blocks, _row_steps(x, blocks, s.mask_id, s.steps, s.block_length).unbind(1)):
        _fill(s, x, prompt, in_block, steps, noise)
    return x


def _fill(s: MaskedSettings, x, prompt, in_block, steps, noise: RowNoise) -> None:
    """One block's loop (`MaskedSampler._fill_block`): row b commits k per step from its transfer schedule over
    steps[b] steps (an int: every row's), then every remaining mask; in place on x."""
    steps = torch.as_tensor(steps, device=x.device).expand(x.shape[0])  # (B,)
    k_per_step = _transfer_schedule(((x == s.mask_id) & in_block).sum(1), steps)  # (B, max steps)
    last = max(k_per_step.shape[1] - 1, 0)
    i = 0
    while ((x == s.mask_id) & in_block).any():
        masked = (x == s.mask_id) & in_block
        k = torch.where(i < steps, k_per_step[:, min(i, last)], masked.sum(1))  # (B,) then every remaining mask
        _confidence_step(s, x, prompt, masked, k, noise)
        i += 1


def _confidence_step(s: MaskedSettings, x, prompt, masked, k, noise: RowNoise) -> None:
    """Commit k (B,) of the `masked` positions of x in place: the most confident (low_confidence), uniform
    ones (random) or every one above the threshold, at least one (threshold). Each row draws from its stream."""
    if s.kind == "random":  # positions first, tokens only there
        score = torch.full(x.shape, -1.0, dtype=torch.float64, device=x.device)
        score[masked] = noise.uniform(masked)
        sel = commit = _topk_commit(score, k) & masked
    else:
        sel = masked & (k > 0)[:, None] if s.kind == "low_confidence" else masked
    if not sel.any():
        return
    hidden = s.hidden(x, prompt, s.time(x, ~prompt))
    tok, conf = sample_tokens(s.rows(hidden, sel), s.temperature, s.top_k, s.top_p, noise, sel, overwrite=True)
    if s.kind != "random":
        score = torch.full(x.shape, float("-inf"), dtype=torch.float64, device=x.device)
        score[sel] = conf
        commit = (_threshold_commit(score, s.threshold) if s.kind == "threshold" else _topk_commit(score, k)) & sel
    proposal = torch.full_like(x, -1)
    proposal[sel] = tok
    x[commit] = proposal[commit]


def _ancestral(s: MaskedSettings, x, prompt, noise: RowNoise, steps: int = 0) -> torch.Tensor:
    """MDLM Eq. 7: from t to s a [MASK] unmasks with probability (alpha_s - alpha_t) / (1 - alpha_t), to a token
    drawn from p_theta (one Bernoulli per masked position, then a token only where it fired). `steps` (default
    s.steps): a block's share of them (block diffusion runs one chain per block)."""
    steps = steps or s.steps
    for k in range(steps):
        t = torch.tensor(1 - k / steps, dtype=torch.float64)
        t_next = torch.tensor(1 - (k + 1) / steps, dtype=torch.float64)
        masked = x == s.mask_id
        if not masked.any():
            break
        a_t, a_s = 1.0 - s.rate * t, 1.0 - s.rate * t_next
        p_unmask = 1.0 if k == steps - 1 else float((a_s - a_t) / (1 - a_t))
        commit = torch.zeros_like(masked)  # (B, T) the positions that leave [MASK] at this step
        commit[masked] = noise.uniform(masked) < p_unmask  # one coin per masked position, from its row's stream
        if commit.any():
            hidden = s.hidden(x, prompt, torch.full((x.shape[0],), float(t), device=x.device))
            tok, _ = sample_tokens(s.rows(hidden, commit), s.temperature, s.top_k, s.top_p, noise, commit,
                                   overwrite=True)
            x[commit] = tok
    return x


# Copied from sunfish_lib.diffusion.block.block_causal_mask
def block_causal_mask(T: int, K: int, device) -> torch.Tensor:
    """Dense bool (1, 1, T, T): position q sees the positions of blocks <= its block (M_BC on one stream)."""
    blk = torch.arange(T, device=device) // K
    return (blk[None, :] <= blk[:, None])[None, None]


# Copied from sunfish_lib.sampling.block.BlockSampler._ended with self.eos_id->eos_id, self._never->never
def _ended(x: torch.Tensor, prompt: torch.Tensor, stop: int, eos_id, never) -> torch.Tensor:
    """(B,) rows that have generated an EOS before column `stop` (none unless EOS may be emitted)."""
    if eos_id is None or int(eos_id) in never:
        return torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    return ((x[:, :stop] == eos_id) & ~prompt[:, :stop]).any(1)


class BlockSettings(MaskedSettings):
    """A block-diffusion export (BD3-LM): the masked loops run on one block's columns at a time, and a step's
    states come from one pass of the prompt + finished blocks + this block under the block-causal mask (Sunfish's
    `BlockSampler` with cache=False, whose tokens its exact cache reproduces)."""

    def __init__(self, *args, block_size: int, eos_id, **kwargs):
        super().__init__(*args, block_length=0, cfg_scale=0.0, **kwargs)
        self.block_size, self.eos_id = block_size, eos_id
        self.window, self.x = (0, 0), None  # the current block's columns, the whole rows being filled

    def hidden(self, x: torch.Tensor, prompt: torch.Tensor, t: torch.Tensor):
        """States (B, K, d) of the current block (x (B, K) is a view of it): rows [0, c1) under the block-causal
        mask, the block's columns kept; with shift_logits the block's first token is read from the clean state
        before it (`BlockSampler._hidden`)."""
        c0, c1 = self.window
        full = self.model.encode(self.x[:, :c1], attention_mask=block_causal_mask(c1, self.block_size, x.device),
                                 timesteps=t)
        h, clean_last = full[:, c0:c1], full[:, c0 - 1:c0] if c0 else None
        if self.shift_logits:
            h = torch.cat([h[:, :1] if clean_last is None else clean_last, h[:, :-1]], 1)
        return h, False


@torch.no_grad()
def block_generate(s: BlockSettings, x: torch.Tensor, noise: RowNoise | None = None) -> torch.Tensor:
    """Fill every [MASK] of x (B, T) block by block as `BlockSampler.generate` does: blocks [bK, (b+1)K) left
    to right, `steps` spread over those holding a [MASK]; with EOS allowed a row that has emitted one gets EOS
    in its remaining positions after its block, and generation stops once every row has."""
    x = x.clone()
    prompt = x != s.mask_id
    noise = RowNoise(None) if noise is None else noise
    (B, T), K = x.shape, s.block_size
    has_mask = (x == s.mask_id).any(0)  # (T,)
    blocks = [b for b in range(-(-T // K)) if bool(has_mask[b * K:(b + 1) * K].any())]
    for b, steps in zip(blocks, _split_steps(s.steps, len(blocks), K) if blocks else []):
        c0, c1 = b * K, min((b + 1) * K, T)
        s.window, s.x = (c0, c1), x
        xw, pw = x[:, c0:c1], prompt[:, c0:c1]  # views: the loops' commits land in x
        if s.kind == "ancestral":
            _ancestral(s, xw, pw, noise, steps)
        else:
            _fill(s, xw, pw, torch.ones_like(pw), steps, noise)
        ended = _ended(x, prompt, c1, s.eos_id, s.never)  # (B,) rows done: their remaining [MASK] become EOS
        if bool(ended.any()):
            x[:, c1:] = torch.where(ended[:, None] & (x[:, c1:] == s.mask_id), s.eos_id, x[:, c1:])
        if bool(ended.all()):
            break
    s.x = None
    return x
