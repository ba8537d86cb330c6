"""The backbone's sublayers: timestep embedding, norms, attention (GQA, RoPE, KV cache), MLPs.

`sunfish_lib.model` assembles them into blocks and the `Backbone`. The options exist so
that one backbone can hold GPT-2 (learned positions, LayerNorm with biases, GELU MLP)
and the Llama/Qwen/Mistral family (RoPE, RMSNorm, SwiGLU, grouped-query attention)
exactly; `sunfish_lib.convert` maps their weights in. Where a layer mirrors a Hugging
Face implementation the comment names the module, so the equivalence can be read off.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from sunfish_lib.model.attention import attend
from sunfish_lib.config import ModelConfig

TIME_SCALE = 1000.0
"""t in [0, 1] is scaled by this before the sinusoid, so frequencies match integer-step DDPM codebases."""


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of t in [0, 1] (Vaswani et al. 2017, Sec. 3.5): (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (t.float() * TIME_SCALE)[:, None] * freqs[None, :]  # (B, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimeEmbedding(nn.Module):
    """t -> sinusoid -> Linear -> SiLU -> Linear -> c (B, d_model)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.freq_dim = cfg.time_freq_dim
        self.fc1 = nn.Linear(cfg.time_freq_dim, cfg.d_model, bias=cfg.bias)
        self.fc2 = nn.Linear(cfg.d_model, cfg.d_model, bias=cfg.bias)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        h = timestep_embedding(t, self.freq_dim).to(self.fc1.weight.dtype)
        return self.fc2(F.silu(self.fc1(h)))


def make_norm(cfg: ModelConfig, dim: int) -> nn.Module:
    """LayerNorm (GPT-2; bias only with `cfg.bias`) or RMSNorm (Zhang & Sennrich 2019; Llama's LlamaRMSNorm).

    RMSNorm: x / sqrt(mean(x^2) + eps) * g, no mean subtraction and no bias.
    """
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(dim, eps=cfg.norm_eps)
    return nn.LayerNorm(dim, eps=cfg.norm_eps, bias=cfg.bias)


# ----------------------------------------------------------------------------
# Rotary position embedding (RoFormer, Su et al. 2021)
# ----------------------------------------------------------------------------

def rope_inv_freq(cfg: ModelConfig, device=None) -> torch.Tensor:
    """RoPE frequencies (head_dim/2,): theta^(-2i/head_dim) (RoFormer Eq. 15), llama3-scaled if asked.

    llama3 (Llama 3.1; HF `_compute_llama3_parameters`): wavelengths 2 pi / f longer than
    L / low_freq_factor are slowed by `rope_factor`, those shorter than L / high_freq_factor
    kept, and the band between interpolates linearly in L / wavelength (L = the original context).
    """
    hd = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float32, device=device) / hd))
    if cfg.rope_type != "llama3":
        return inv_freq
    L, lo, hi, factor = cfg.rope_original_max_len, cfg.rope_low_freq_factor, cfg.rope_high_freq_factor, cfg.rope_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > L / lo, inv_freq / factor, inv_freq)
    smooth = (L / wavelen - lo) / (hi - lo)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= L / hi) & (wavelen <= L / lo)
    return torch.where(medium, smoothed, scaled)


def rope_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """fp32 cos and sin tables (T, head_dim) for integer positions (T,) and frequencies (head_dim/2,).

    Laid out as two halves [f, f]: the "rotate half" convention of HF's LlamaRotaryEmbedding,
    not the interleaved pairs of the paper; the two differ by a fixed permutation of q/k features.
    """
    freqs = positions.float()[:, None] * inv_freq[None, :]  # (T, head_dim/2)
    emb = torch.cat([freqs, freqs], dim=-1)  # (T, head_dim)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, h, T, hs) queries or keys by position: x cos + rotate_half(x) sin (HF apply_rotary_pos_emb)."""
    x1, x2 = x.chunk(2, dim=-1)  # (B, h, T, hs/2) each
    rotated = torch.cat([-x2, x1], dim=-1)  # (B, h, T, hs)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


# ----------------------------------------------------------------------------
# Attention
# ----------------------------------------------------------------------------

class KVCache:
    """Keys and values of past positions, one (k, v) pair per block: for AR sampling.

    Fill it with one prefill call (the prompt), then feed one token per call. Keys are
    stored after RoPE and with the model's key/value heads (fewer than the query heads
    under grouped-query attention).
    """

    def __init__(self, n_layers: int):
        self.layers: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_layers

    @property
    def length(self) -> int:
        first = self.layers[0]
        return 0 if first is None else first[0].shape[2]

    def update(self, i: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append (B, n_kv, T_new, hs) keys/values for block i; return all of them."""
        past = self.layers[i]
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        self.layers[i] = (k, v)
        return k, v


class BlockCache:
    """Fast-dLLM's approximate KV cache for bidirectional block decoding (Wu et al. 2025, Sec. 3.2).

    A full pass while `recording` keeps, per block i of the backbone, the keys/values of the positions
    outside the window [start, stop): the prefix (prompt and committed blocks) and, when stop < T (the
    dual cache), the suffix. Later passes feed only the window (positions start..stop-1); its fresh
    keys/values are joined with the kept ones. The kept ones are from the last full pass, which is the
    approximation; the sampler refreshes them (records again) when a block completes.
    """

    def __init__(self, n_layers: int, start: int, stop: int):
        self.start, self.stop = start, stop
        self.kept: list[tuple[torch.Tensor, ...] | None] = [None] * n_layers
        self.recording = True

    @property
    def length(self) -> int:
        """Position of the first fed token (0 in the full pass)."""
        return 0 if self.recording else self.start

    def update(self, i: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Full pass: keep the outside keys/values, return k, v. Window pass: return kept + window + kept."""
        if self.recording:
            a, b = self.start, self.stop
            self.kept[i] = (k[:, :, :a], v[:, :, :a], k[:, :, b:], v[:, :, b:])
            return k, v
        kb, vb, ka, va = self.kept[i]
        return torch.cat([kb, k, ka], dim=2), torch.cat([vb, v, va], dim=2)


class PrefixCache(KVCache):
    """BD3-LM's exact KV cache (Arriola et al. 2025, Sec. 3.1): keys/values of the finished clean blocks.

    A pass with `append=True` (the prompt, or a block just finished) adds its keys/values for good; other
    passes (the noisy block being denoised) attend to cache + themselves and leave the cache as it was.
    Exact, not an approximation: under the block-causal mask a clean block's keys/values depend on no
    later position, so computing them once equals recomputing them at every step.
    """

    def __init__(self, n_layers: int):
        super().__init__(n_layers)
        self.append = False

    def update(self, i: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys/values (B, n_kv, T_past + T, hs) of cache + the fed (B, n_kv, T, hs); kept when `append`."""
        past = self.layers[i]
        if self.append or past is None:
            return super().update(i, k, v) if self.append else (k, v)
        return torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)


class SelfAttention(nn.Module):
    """Multi-head self-attention over SDPA; one fused q/k/v projection.

    Grouped-query attention (Ainslie et al. 2023) when n_kv_heads < n_heads: query head j
    reads key/value head j // (n_heads / n_kv_heads), as HF's `repeat_kv` does. The fused
    projection's rows are [W_q; W_k; W_v] (GPT-2's c_attn layout; Llama's q/k/v_proj stacked).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_dim, self.kv_dim = self.n_heads * self.head_dim, self.n_kv * self.head_dim
        self.qkv = nn.Linear(cfg.d_model, self.q_dim + 2 * self.kv_dim, bias=cfg.qkv_bias)
        self.proj = nn.Linear(self.q_dim, cfg.d_model, bias=cfg.bias)
        # Qwen3: RMSNorm over each head's features (one gain of head_dim shared by the heads), before RoPE.
        self.q_norm = nn.RMSNorm(self.head_dim, eps=cfg.norm_eps) if cfg.qk_norm else None
        self.k_norm = nn.RMSNorm(self.head_dim, eps=cfg.norm_eps) if cfg.qk_norm else None
        self.dropout = cfg.dropout

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None, causal: bool,
        kv: tuple[KVCache | BlockCache | PrefixCache, int] | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        B, T, C = x.shape
        hs = self.head_dim
        q, k, v = self.qkv(x).split([self.q_dim, self.kv_dim, self.kv_dim], dim=2)
        q = q.view(B, T, self.n_heads, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_kv, hs).transpose(1, 2)  # (B, n_kv, T, hs)
        v = v.view(B, T, self.n_kv, hs).transpose(1, 2)  # (B, n_kv, T, hs)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        if kv is not None and isinstance(kv[0], (BlockCache, PrefixCache)):
            k, v = kv[0].update(kv[1], k, v)  # (B, n_kv, T_keys, hs)
        elif kv is not None:
            cache, layer = kv
            has_past = cache.layers[layer] is not None
            if has_past and T > 1:
                raise ValueError("KVCache: after the prefill, feed one token per call")
            causal = causal and not has_past  # one new query may see every cached key
            k, v = cache.update(layer, k, v)  # (B, n_kv, T_past + T, hs)
        y = attend(q, k, v, attn_mask, causal, self.dropout if self.training else 0.0,
                   enable_gqa=self.n_kv != self.n_heads)  # (B, nh, T, hs); SDPA, or FlexAttention for a BlockMask
        y = y.transpose(1, 2).contiguous().view(B, T, self.q_dim)
        return self.proj(y)


# ----------------------------------------------------------------------------
# MLP
# ----------------------------------------------------------------------------

class MLP(nn.Module):
    """GELU MLP (GPT-2: fc2(gelu_tanh(fc1 x))), SwiGLU (Shazeer 2020, Eq. 6; Llama's LlamaMLP) or GeGLU (Gemma).

    SwiGLU fuses the gate and up projections into one `fc1` with rows [W_gate; W_up]:
    fc2(silu(x W_gate) * x W_up), each half `d_ff` wide.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.kind = cfg.mlp
        self.fc1 = nn.Linear(cfg.d_model, (2 if cfg.gated_mlp else 1) * cfg.d_ff, bias=cfg.bias)
        self.fc2 = nn.Linear(cfg.d_ff, cfg.d_model, bias=cfg.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)  # (B, T, f) or (B, T, 2f)
        if self.kind != "gelu":
            gate, up = h.chunk(2, dim=-1)  # (B, T, f) each
            act = F.silu(gate) if self.kind == "swiglu" else F.gelu(gate, approximate="tanh")  # geglu: Gemma
            return self.fc2(act * up)
        return self.fc2(F.gelu(h, approximate="tanh"))
