"""Continuous (embedding-space) diffusion sampling for exported Sunfish models (torch only; remote code).

`SunfishForMaskedLM.diffusion_generate` runs `ddim_generate` for a continuous export. The blocks marked "# Copied
from" are copies of Sunfish's own code (tests/test_hf_copies.py fails when one drifts from its source); the loop
restates `sunfish_lib.sampling.continuous.ContinuousSampler` (sampler ddim) without its trajectories and callbacks,
and tests/test_hf_generate.py checks it gives Sunfish's tokens.

DDIM in the embedding space (Song et al. 2021, Eq. 12/16), rounded to the nearest embedding; infill holds the known
positions. x0_hat is the model's x0 output (`forward(...).x0`; Diffusion-LM, continuous_loss=mse) or, for CDCD
exports (continuous_loss=ce), the score interpolation softmax(logits) @ table over the (normalised) embeddings,
with each position's Gaussian evidence added to the logits under own_evidence. Every row draws its noise from its
own stream (`sampling_sunfish.RowNoise`), so a row's sample does not depend on the batch.
"""

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .sampling_sunfish import RowNoise

SCHEDULES = ("linear", "cosine", "sqrt")  # Sunfish's noise schedules (diffusion/schedules.py)
MAX_BETA = 0.999
METRICS = ("cosine", "euclidean")  # rounding to the nearest embedding (diffusion/rounding.py)
ROW_BLOCK = 4096
MAX_ELEMENTS = 1 << 24


# Copied from sunfish_lib.diffusion.schedules._betas_from_alpha_bar
def _betas_from_alpha_bar(fn: Callable[[float], float], T: int) -> torch.Tensor:
    """beta_k = min(1 - alpha_bar((k+1)/T) / alpha_bar(k/T), MAX_BETA), k = 0..T-1."""
    return torch.tensor([min(1.0 - fn((k + 1) / T) / fn(k / T), MAX_BETA) for k in range(T)], dtype=torch.float64)


# Copied from sunfish_lib.diffusion.schedules.make_betas with ConfigError->ValueError, NOISE_SCHEDULES->SCHEDULES
def make_betas(kind: str, num_timesteps: int) -> torch.Tensor:
    """beta_1..beta_T of the named schedule, float64 (T,)."""
    if kind not in SCHEDULES:
        raise ValueError(f"diffusion.schedule={kind!r} is not allowed; choose one of {', '.join(SCHEDULES)}")
    if not isinstance(num_timesteps, int) or num_timesteps < 1:
        raise ValueError(f"diffusion.num_timesteps={num_timesteps!r} must be an integer >= 1")
    T = num_timesteps
    if kind == "linear":
        scale = 1000.0 / T
        return torch.linspace(scale * 1e-4, min(scale * 0.02, MAX_BETA), T, dtype=torch.float64)
    if kind == "cosine":
        s = 0.008
        return _betas_from_alpha_bar(lambda t: math.cos((t + s) / (1 + s) * math.pi / 2) ** 2, T)
    s = 1e-4
    return _betas_from_alpha_bar(lambda t: 1.0 - math.sqrt(t + s), T)


# Copied from sunfish_lib.diffusion.continuous.to_x0_eps
def to_x0_eps(out: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor, prediction: str):
    """Model output in `prediction` -> (x0_hat, eps_hat); alpha_bar broadcasts against x_t."""
    a, s = alpha_bar.sqrt(), (1.0 - alpha_bar).sqrt()
    if prediction == "x0":
        return out, (x_t - a * out) / s
    if prediction == "eps":
        return (x_t - s * out) / a, out  # inverts Ho et al. 2020, Eq. 4
    if prediction == "v":
        return a * x_t - s * out, s * x_t + a * out  # x0 = a z - s v, eps = s z + a v
    raise ValueError(f"prediction {prediction!r}: choose eps, v or x0")


# Copied from sunfish_lib.diffusion.continuous.eps_from_x0
def eps_from_x0(x_t: torch.Tensor, x0: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """eps implied by x_t and an x0 estimate (Ho et al. 2020, Eq. 4 solved for eps)."""
    return (x_t - alpha_bar.sqrt() * x0) / (1.0 - alpha_bar).sqrt()


# Copied from sunfish_lib.diffusion.continuous.evidence_logits
def evidence_logits(x_t: torch.Tensor, alpha_bar: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """log q(x_t,i | w = v) up to a constant in v, (B, T, V): (sqrt(ab) x.e_v - ab |e_v|^2 / 2) / (1 - ab)."""
    table = table.float()
    return (alpha_bar.sqrt() * (x_t.float() @ table.t()) - 0.5 * alpha_bar * table.pow(2).sum(-1)) / (1.0 - alpha_bar)


# Copied from sunfish_lib.diffusion.continuous.score_interpolation
def score_interpolation(logits: torch.Tensor, table: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """x0_hat = softmax(logits / temperature) @ table (CDCD, Dieleman et al. 2022, Sec. 3.1); temperature 0: the
    argmax token's embedding."""
    table = table.float()
    if temperature == 0:
        return table[logits.argmax(-1)]
    return (logits / temperature).softmax(-1) @ table


# Copied from sunfish_lib.diffusion.rounding._check_metric with SunfishError->ValueError
def _check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ValueError(f"rounding={metric!r} is not allowed; choose one of {', '.join(METRICS)}")


# Copied from sunfish_lib.diffusion.rounding.nearest_tokens
@torch.no_grad()
def nearest_tokens(
    x: torch.Tensor,
    table: torch.Tensor,
    metric: str = "euclidean",
    *,
    exclude_ids: Sequence[int] = (),
    max_elements: int = MAX_ELEMENTS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest token to each vector: x (..., e), table (V, e) -> ids (...) and euclidean distance (...).

    cosine: argmax of x.e_v / (|x| |e_v|); euclidean: argmin |x - e_v|, computed as the
    argmax of 2 x.e_v - |e_v|^2 (|x|^2 is the same for every v). Ties go to the lower id.
    `exclude_ids` (e.g. [MASK], [PAD]) are never chosen. The distance is to the chosen
    embedding whatever the metric (what trajectories record).
    """
    _check_metric(metric)
    e = table.shape[1]
    flat = x.reshape(-1, e).float()  # (N, e)
    keys = table.float()
    if metric == "cosine":
        q, keys, bias = F.normalize(flat, dim=-1), F.normalize(keys, dim=-1), None
    else:
        q, bias = 2.0 * flat, -keys.pow(2).sum(-1)  # (V,)
    ex = torch.as_tensor(list(exclude_ids), dtype=torch.long, device=keys.device)
    N, V = flat.shape[0], keys.shape[0]
    rows = min(max(N, 1), ROW_BLOCK)
    chunk = max(1, min(V, max_elements // rows))
    ids = torch.empty(N, dtype=torch.long, device=flat.device)
    for r0 in range(0, N, rows):
        best = torch.full((min(rows, N - r0),), float("-inf"), device=flat.device)
        arg = torch.zeros_like(best, dtype=torch.long)
        for v0 in range(0, V, chunk):
            s = q[r0:r0 + rows] @ keys[v0:v0 + chunk].t()  # (rows, chunk)
            if bias is not None:
                s = s + bias[v0:v0 + chunk]
            if ex.numel():
                local = ex[(ex >= v0) & (ex < v0 + chunk)] - v0
                s[:, local] = float("-inf")
            m, a = s.max(-1)
            better = m > best  # strict: an earlier chunk (lower id) wins ties
            best = torch.where(better, m, best)
            arg = torch.where(better, a + v0, arg)
        ids[r0:r0 + rows] = arg
    dist = (flat - table.float()[ids]).norm(dim=-1)  # (N,)
    return ids.view(x.shape[:-1]), dist.view(x.shape[:-1])


# Copied from sunfish_lib.diffusion.rounding.snap_to_embeddings
def snap_to_embeddings(x: torch.Tensor, table: torch.Tensor, metric: str = "euclidean",
                       exclude_ids: Sequence[int] = ()) -> torch.Tensor:
    """The clamping trick (Diffusion-LM Sec. 4.2): replace each vector by its nearest embedding, (..., e)."""
    ids, _ = nearest_tokens(x, table, metric, exclude_ids=exclude_ids)
    return table[ids].to(x.dtype)


class ContinuousSettings:
    """What the DDIM loop needs (Sunfish's `ContinuousSampler` with sampler ddim): the model, its diffusion
    section (schedule, num_timesteps, prediction, continuous_loss, own_evidence, embed_norm, self_conditioning)
    and the sampling settings."""

    def __init__(self, model, diffusion: dict, never, *, steps: int, eta: float, clamp: bool, rounding: str,
                 temperature: float = 1.0):
        self.model, self.never, self.steps, self.eta, self.clamp = model, list(never), steps, float(eta), clamp
        self.temperature = temperature
        self.prediction = diffusion.get("prediction", "x0")
        # an export without these keys predates CDCD: Diffusion-LM's x0 output
        self.continuous_loss, self.own_evidence = diffusion.get("continuous_loss", "mse"), diffusion.get("own_evidence", False)
        if self.continuous_loss not in ("mse", "ce"):
            raise ValueError(f"diffusion.continuous_loss={self.continuous_loss!r} is not allowed; choose one of mse, ce")
        if temperature < 0:
            raise ValueError(f"temperature={temperature} must be >= 0 (0: each step's likeliest token)")
        if temperature != 1.0 and self.continuous_loss != "ce":
            raise ValueError(f"temperature={temperature} tempers a continuous_loss=ce (CDCD) model's token "
                             "distribution; this one predicts embeddings (mse): leave it at 1")
        self.embed_norm, self.self_conditioning = diffusion.get("embed_norm", False), diffusion.get("self_conditioning", False)
        self.metric = ("cosine" if self.embed_norm else "euclidean") if rounding == "auto" else rounding
        self.T = diffusion.get("num_timesteps", 1000)
        self.alpha_bar = torch.cumprod(1.0 - make_betas(diffusion.get("schedule", "sqrt"), self.T), 0)  # float64 (T,)
        n = steps  # trailing spacing (Lin et al. 2024, Sec. 3.3): the first step is always T - 1
        self.timesteps = [int(round(self.T - i * self.T / n)) - 1 for i in range(n)]

    def ab(self, k: int) -> float:
        return 1.0 if k < 0 else float(self.alpha_bar[k])  # alpha_bar before the chain is 1

    def table(self) -> torch.Tensor:
        """x_0 of every token (V, e): EMB / init_std, or rows of norm sqrt(e) with embed_norm (`embedding_table`)."""
        w = self.model.tok_emb.weight.float()
        if self.embed_norm:
            return F.normalize(w, dim=-1) * math.sqrt(w.shape[1])
        return w / self.model.fields.init_std

    def predict(self, x, k: int, table, self_cond):
        """(raw output, x0_hat) (B, T, e) at step k: the input scaled to unit variance (CDCD Sec. 3), t = (k + 1) / T."""
        kk = torch.full((x.shape[0],), k, dtype=torch.long, device=x.device)
        sigma2 = torch.linalg.vector_norm(table).square() / table.numel()
        ab = self.alpha_bar.to(x.device)[kk].to(x.dtype).view(-1, 1, 1)  # (B, 1, 1)
        x_in = (x * (ab * sigma2 + 1.0 - ab).rsqrt()).to(self.model.tok_emb.weight.dtype)
        h = self.model.encode(inputs_embeds=x_in, timesteps=(kk.float() + 1.0) / self.T, self_cond=self_cond)
        x0_out, logits = self.model.logits_of(h)
        if self.continuous_loss == "mse":
            out = x0_out.float()  # the model's x0 output (B, T, e), what `forward(...).x0` returns
        else:  # CDCD (`ContinuousDiffusion.forward`): the expected embedding under the token logits (+ own evidence)
            logits = logits.float()
            if self.own_evidence:
                logits = logits + evidence_logits(x, ab, table)
            out = score_interpolation(logits, table, self.temperature)
        return out, to_x0_eps(out, x, ab, self.prediction)[0]


@torch.no_grad()
def ddim_generate(s: ContinuousSettings, x_ids: torch.Tensor, known: torch.Tensor,
                  noise: RowNoise | None = None) -> torch.Tensor:
    """DDIM (Song et al. 2021, Eq. 12, sigma of Eq. 16 with eta) from x_T ~ N(0, I) in the embedding space, rounded
    to the nearest embedding; `known` positions are reset to q(x_s | x_0) of their tokens after every step.
    `noise`: the rows' random streams (None: torch's global generator)."""
    noise = RowNoise(None) if noise is None else noise
    table = s.table().detach()  # (V, e)
    x0_known = F.embedding(x_ids.clamp(0, table.shape[0] - 1), table).float() if known.any() else None
    x = noise.normal((*x_ids.shape, table.shape[1]), device=table.device)  # x_T
    x = _hold(s, x, x0_known, known, s.timesteps[0], noise)
    self_cond = None
    for i, k in enumerate(s.timesteps):
        prev = s.timesteps[i + 1] if i + 1 < len(s.timesteps) else -1
        out, raw_x0 = s.predict(x, k, table, self_cond)
        ab_t, ab_s = torch.tensor(s.ab(k), dtype=x.dtype, device=x.device), s.ab(prev)
        x0, eps = to_x0_eps(out, x, ab_t, s.prediction)
        if s.clamp:  # Diffusion-LM Sec. 4.2: snap x0_hat to the nearest embedding, eps from it
            x0 = snap_to_embeddings(x0, table, s.metric, s.never)
            eps = eps_from_x0(x, x0, ab_t)
        var = s.eta ** 2 * (1.0 - ab_s) / (1.0 - s.ab(k)) * (1.0 - s.ab(k) / ab_s)  # Eq. 16
        x = math.sqrt(ab_s) * x0 + math.sqrt(max(1.0 - ab_s - var, 0.0)) * eps  # Eq. 12
        if var > 0:
            x = x + math.sqrt(var) * noise.normal(x.shape, device=x.device, dtype=x.dtype)
        x = _hold(s, x, x0_known, known, prev, noise)
        if s.self_conditioning:
            self_cond = raw_x0  # the unclamped estimate, as training feeds it
    ids, _ = nearest_tokens(x, table, s.metric, exclude_ids=s.never)
    return torch.where(known, x_ids, ids)


def _hold(s: ContinuousSettings, x, x0_known, known, k: int, streams: RowNoise):
    """Known positions <- a fresh draw of q(x_k | x_0) (x_0 itself at k = -1); only rows with a known one draw."""
    if x0_known is None:
        return x
    if k < 0:
        held = x0_known
    else:
        noise = streams.normal(x.shape, device=x.device, rows=known.any(1))
        ab = torch.tensor(s.ab(k), dtype=x0_known.dtype, device=x.device)
        held = ab.sqrt() * x0_known + (1.0 - ab).sqrt() * noise  # Ho et al. 2020, Eq. 4
    return torch.where(known[..., None], held, x)
