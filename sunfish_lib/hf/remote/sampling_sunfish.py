"""Diffusion sampling for exported Sunfish models, from plain `transformers` (torch only; remote code).

`SunfishForMaskedLM.diffusion_generate` runs these loops. The blocks marked "# Copied from" are
copies of Sunfish's own sampler code (tests/test_hf_copies.py fails when one drifts from its
source); the loops below them restate `sunfish_lib.sampling.masked.MaskedSampler` without its
caches, trajectories and callbacks, and tests/test_hf_generate.py checks they give Sunfish's tokens.

- low_confidence / random / threshold: LLaDA's remasking samplers (Nie et al. 2025, Sec. 2.4, App. B.3)
  and Fast-dLLM's threshold decoding (Wu et al. 2025, Sec. 3.3), with semi-autoregressive blocks
  (`block_length`) and classifier-free guidance (LLaDA App. B.5).
- ancestral: the absorbing-state reverse process (MDLM, Sahoo et al. 2024, Eq. 7).
- ddim (continuous exports): in continuous_sunfish.py.

Draws: one float64 uniform per decided position, inverted through the CDF of the tempered,
top-k/top-p filtered softmax (`inverse_cdf`), so a seed gives the same tokens as in Sunfish.
"""

import torch

CHUNK = 256  # vocabulary chunk of the two-level inverse-CDF search
MASK_RATE = {"linear": 1.0, "loglinear": 1.0 - 1e-3}
"""alpha_t = 1 - rate t: Sunfish's `MaskSchedule` (MDLM App. C's loglinear keeps 1e-3 of tokens at t = 1)."""
MASKED_SAMPLERS = ("ancestral", "low_confidence", "random", "threshold")


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


# Copied from sunfish_lib.sampling.filters.sample_tokens
def sample_tokens(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                  generator: torch.Generator | None = None, step=decide,
                  overwrite: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row of logits (N, V) and its untempered confidence (N,) float64 (see module docstring).

    temperature 0: argmax (top-k/top-p cannot change an argmax). `step` is `decide` or a
    compiled copy of it; the random numbers are drawn here, eagerly, so both give the same tokens.
    `overwrite`: the caller's logits may be destroyed.
    """
    if logits.shape[0] == 0:
        return logits.new_zeros(0, dtype=torch.long), logits.new_zeros(0, dtype=torch.float64)
    u = None
    if temperature > 0:
        u = torch.rand(logits.shape[0], dtype=torch.float64, device=logits.device, generator=generator)
    return step(logits, u, temperature, top_k, top_p, overwrite)


# Copied from sunfish_lib.sampling.masked._split_steps with SunfishError->ValueError
def _split_steps(steps: int, n_blocks: int, block_length: int) -> list[int]:
    """`steps` spread over the semi-AR blocks, the remainder to the first ones; none dropped."""
    if n_blocks > steps:
        raise ValueError(f"steps={steps} is fewer than the {n_blocks} semi-autoregressive blocks of "
                           f"block_length={block_length}; use steps >= {n_blocks} or a larger block_length")
    return [steps // n_blocks + (b < steps % n_blocks) for b in range(n_blocks)]


# Copied from sunfish_lib.sampling.masked._transfer_schedule
def _transfer_schedule(n_masked: torch.Tensor, steps: int) -> torch.Tensor:
    """Split each row's masked count over `steps` as evenly as possible, remainder first (LLaDA)."""
    base = n_masked[:, None] // steps  # (B, 1)
    rem = n_masked[:, None] % steps
    return base + (torch.arange(steps, device=n_masked.device)[None] < rem).long()  # (B, steps)


# Copied from sunfish_lib.sampling.masked._topk_commit
def _topk_commit(score: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Boolean (B, T): the k[b] highest-scoring positions of each row."""
    order = score.argsort(-1, descending=True)
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
def masked_generate(s: MaskedSettings, x: torch.Tensor, generator=None) -> torch.Tensor:
    """Fill every [MASK] of x (B, T) as `MaskedSampler.generate` does; other tokens are kept exactly."""
    x = x.clone()
    prompt = x != s.mask_id  # (B, T) positions given by the caller
    if s.kind == "ancestral":
        return _ancestral(s, x, prompt, generator)
    blocks = _blocks(x, s.mask_id, s.block_length)
    for in_block, steps in zip(blocks, _split_steps(s.steps, len(blocks), s.block_length)):
        k_per_step = _transfer_schedule(((x == s.mask_id) & in_block).sum(1), steps)  # (B, steps)
        i = 0
        while ((x == s.mask_id) & in_block).any():
            masked = (x == s.mask_id) & in_block
            k = k_per_step[:, i] if i < steps else masked.sum(1)  # (B,) then every remaining mask
            _confidence_step(s, x, prompt, masked, k, generator)
            i += 1
    return x


def _confidence_step(s: MaskedSettings, x, prompt, masked, k, generator) -> None:
    """Commit k (B,) of the `masked` positions of x in place: the most confident (low_confidence), uniform
    ones (random) or every one above the threshold, at least one (threshold)."""
    if s.kind == "random":  # positions first, tokens only there
        score = torch.rand(x.shape, dtype=torch.float64, device=x.device, generator=generator)
        sel = commit = _topk_commit(score.masked_fill(~masked, -1.0), k) & masked
    else:
        sel = masked & (k > 0)[:, None] if s.kind == "low_confidence" else masked
    if not sel.any():
        return
    hidden = s.hidden(x, prompt, s.time(x, ~prompt))
    tok, conf = sample_tokens(s.rows(hidden, sel), s.temperature, s.top_k, s.top_p, generator, overwrite=True)
    if s.kind != "random":
        score = torch.full(x.shape, float("-inf"), dtype=torch.float64, device=x.device)
        score[sel] = conf
        commit = (_threshold_commit(score, s.threshold) if s.kind == "threshold" else _topk_commit(score, k)) & sel
    proposal = torch.full_like(x, -1)
    proposal[sel] = tok
    x[commit] = proposal[commit]


def _ancestral(s: MaskedSettings, x, prompt, generator) -> torch.Tensor:
    """MDLM Eq. 7: from t to s a [MASK] unmasks with probability (alpha_s - alpha_t) / (1 - alpha_t), to a token
    drawn from p_theta (one Bernoulli per masked position, then a token only where it fired)."""
    for k in range(s.steps):
        t = torch.tensor(1 - k / s.steps, dtype=torch.float64)
        t_next = torch.tensor(1 - (k + 1) / s.steps, dtype=torch.float64)
        masked = x == s.mask_id
        if not masked.any():
            break
        a_t, a_s = 1.0 - s.rate * t, 1.0 - s.rate * t_next
        p_unmask = 1.0 if k == s.steps - 1 else float((a_s - a_t) / (1 - a_t))
        u = torch.rand(x.shape, dtype=torch.float64, device=x.device, generator=generator)
        commit = masked & (u < p_unmask)  # (B, T) the positions that leave [MASK] at this step
        if commit.any():
            hidden = s.hidden(x, prompt, torch.full((x.shape[0],), float(t), device=x.device))
            tok, _ = sample_tokens(s.rows(hidden, commit), s.temperature, s.top_k, s.top_p, generator,
                                   overwrite=True)
            x[commit] = tok
    return x
