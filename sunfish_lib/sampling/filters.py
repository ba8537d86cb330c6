"""Logit filters and categorical draws shared by the discrete samplers.

`sample_tokens` is the one draw every discrete sampler makes: rows of logits (N, V) at the
positions where a decision is made -> a token per row and its confidence. It does no work
at other positions (the caller passes only the rows it decides) and draws ONE float64
uniform per row, not V Gumbel variables:

- sampling is the inverse CDF of softmax(logits / temperature) over the kept tokens: the
  uniform u in [0, Z) is located first among chunk sums of the unnormalised probabilities,
  then inside that chunk, all cumulative sums in float64. This is exactly the categorical
  distribution (up to float64 rounding, ~1e-16), the same law as Gumbel-max with float64
  noise. What MDLM/Zheng et al. warn about is the truncated tail of low-precision Gumbel
  noise (fp32 u cannot be closer than ~6e-8 to 0 or 1); a float64 u and float64 sums keep
  every token down to ~1e-16 probability at its correct rate;
- top-k sorts only the k best (`torch.topk`); top-p sorts only as many as the nucleus needs
  (a top-k that doubles until its mass covers p), never the whole vocabulary unless it must;
- temperature 0 is the argmax: no random numbers at all.

Confidence is p(token) under the UNtempered, UNfiltered softmax (LLaDA `generate.py`,
Fast-dLLM: `x0_p = softmax(logits)[x0]` after sampling from the tempered logits), so a
confidence threshold means the same thing at every temperature.
"""

from __future__ import annotations

import warnings

import torch

from sunfish_lib.sampling.noise import RowNoise

CHUNK = 256  # vocabulary chunk of the two-level inverse-CDF search


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Temperature, then top-k, then nucleus (top-p, Holtzman et al. 2020) on (..., V) logits.

    Removed entries become -inf. temperature 0 is not allowed here: use argmax directly.
    (A full-vocabulary reference; the samplers use `sample_tokens`, which never sorts V.)
    """
    logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (..., 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, idx = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        # drop a token when the mass before it already reaches top_p (the first token always stays)
        drop_sorted = probs.cumsum(-1) - probs >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, idx, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def gumbel_noise(shape, device=None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard Gumbel noise in float64.

    float64 matters: with fp32 uniforms u is never closer to 0 than ~6e-8, so
    -log(-log u) is capped near 16.6 and rare tokens are under-sampled — the
    effective temperature drops and generative perplexity looks better than it is
    (Zheng et al. 2024, "Masked diffusion models are secretly time-agnostic...", Sec. 4).
    """
    u = torch.rand(shape, device=device, dtype=torch.float64, generator=generator)
    return -torch.log(-torch.log(u.clamp_min(torch.finfo(torch.float64).tiny)))


def sample_categorical(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One exact draw per row from softmax(logits): (..., V) -> (...), float64 inverse CDF (see module docstring)."""
    flat = logits.reshape(-1, logits.shape[-1]).float()
    u = torch.rand(flat.shape[0], dtype=torch.float64, device=logits.device, generator=generator)
    return inverse_cdf(flat, u)[0].view(logits.shape[:-1])


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


def logsumexp(x: torch.Tensor) -> torch.Tensor:
    """log sum exp over the last axis, (...): max-shifted (torch.logsumexp is several times slower on CPU)."""
    m = x.amax(-1, keepdim=True)
    return ((x - m).exp_().sum(-1).log_() + m.squeeze(-1))


def _nucleus_count(sorted_logits: torch.Tensor, lse: torch.Tensor, top_p: float) -> torch.Tensor:
    """How many of the descending logits (N, k) the nucleus keeps: tokens whose mass before them is < top_p."""
    p = (sorted_logits.double() - lse[:, None]).exp()  # (N, k) true probabilities of the k best
    before = p.cumsum(-1) - p
    return (before < top_p).sum(-1)  # (N,) >= 1


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


class _CompiledStep:
    """`decide` under torch.compile; if compiling fails (no toolchain, an unsupported op), says so once and runs eagerly."""

    def __init__(self):
        self.fn = torch.compile(decide, dynamic=True)

    def __call__(self, *args):
        if self.fn is not decide:
            try:
                return self.fn(*args)
            except Exception as e:  # a compiler failure must not stop sampling
                warnings.warn(f"torch.compile of the sampling step failed ({type(e).__name__}: {str(e)[:200]}); "
                              "running it eagerly (pass compile=False to skip the attempt)")
                self.fn = decide
        return decide(*args)


def compiled_step(enabled: bool | None, device: torch.device | str):
    """`decide`, compiled with torch.compile when enabled (None: on for CUDA, off on CPU)."""
    if enabled is None:
        enabled = torch.device(device).type == "cuda"
    return _CompiledStep() if enabled else decide
