"""A Sunfish backbone for `transformers` (torch + transformers only; loaded with trust_remote_code=True).

The same computation as `sunfish_lib.model.Backbone`, with the same parameter names, so
an export's model.safetensors loads into either. Pre-norm transformer blocks
(LayerNorm or RMSNorm; GELU or SwiGLU MLP; learned positions or RoPE, optionally
llama3-scaled; grouped-query attention; Qwen3 q/k norms), optional timestep
conditioning by adaLN-single (PixArt-alpha, Chen et al. 2023, Sec. 2.3).

- masked: bidirectional; `logits[:, i]` scores the token at i where input i is [MASK]
  (if `diffusion.shift_logits` in config.json, the logits at i - 1 score the token at i).
- continuous: pass `inputs_embeds` (noisy vectors in the embedding space) and `timesteps`
  in [0, 1]; `logits` are the rounding logits and `x0` the predicted clean vectors.
- ar: causal; `logits[:, i]` predicts the token at i + 1.
"""

import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_sunfish import SunfishConfig

KNOWN_FIELDS = frozenset({
    "vocab_size", "n_layers", "n_heads", "d_model", "d_ff", "max_seq_len", "embed_dim", "time_conditioning",
    "causal", "self_cond_input", "time_freq_dim", "bias", "qkv_bias", "norm", "mlp", "pos_encoding", "rope_theta",
    "rope_type", "rope_factor", "rope_low_freq_factor", "rope_high_freq_factor", "rope_original_max_len",
    "head_dim", "qk_norm", "embed_scale", "n_kv_heads", "tie_embeddings", "dropout", "norm_eps", "init_std",
    "activation_checkpointing",
})
"""The backbone fields this file knows (Sunfish's ModelConfig, every None resolved); an export with others needs a
newer copy of this file."""
LEGACY_WIDTHS = {"ff_dim": "d_ff", "emb_dim": "embed_dim", "kv_heads": "n_kv_heads", "has_qkv_bias": "qkv_bias",
                 "attn_head_dim": None, "gated_mlp": None}
"""Exports written before every field was resolved: each derived width (old key -> the field it fills; None: dropped,
`head_dim` and `mlp` carry it)."""
TIME_SCALE = 1000.0


def _fields(config: SunfishConfig) -> SimpleNamespace:
    m = dict(config.resolved_model)
    for old, new in LEGACY_WIDTHS.items():
        if old in m:
            value = m.pop(old)
            if new is not None and m.get(new) is None:
                m[new] = value
    unknown = sorted(set(m) - KNOWN_FIELDS)
    if unknown:
        raise ValueError(f"config.json has model fields {unknown} this modeling_sunfish.py does not know; "
                         "re-export with the Sunfish version that trained it")
    unresolved = sorted(k for k in KNOWN_FIELDS if m.get(k) is None)
    if unresolved:
        raise ValueError(f"config.json's resolved_model leaves {unresolved} unset; re-export the model with Sunfish")
    return SimpleNamespace(**m)


def _norm(c, dim: int) -> nn.Module:
    return nn.RMSNorm(dim, eps=c.norm_eps) if c.norm == "rmsnorm" else nn.LayerNorm(dim, eps=c.norm_eps, bias=c.bias)


def _inv_freq(c) -> torch.Tensor:
    """RoPE frequencies theta^(-2i/hd) (RoFormer Eq. 15); llama3: Llama 3.1's low-frequency scaling."""
    inv = 1.0 / (c.rope_theta ** (torch.arange(0, c.head_dim, 2, dtype=torch.float32) / c.head_dim))
    if c.rope_type != "llama3":
        return inv
    L, lo, hi, factor = c.rope_original_max_len, c.rope_low_freq_factor, c.rope_high_freq_factor, c.rope_factor
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > L / lo, inv / factor, inv)
    smooth = (L / wavelen - lo) / (hi - lo)
    medium = (wavelen >= L / hi) & (wavelen <= L / lo)
    return torch.where(medium, (1 - smooth) * scaled / factor + smooth * scaled, scaled)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)  # rotate-half convention (HF apply_rotary_pos_emb)
    return x * cos.to(x.dtype) + torch.cat([-x2, x1], dim=-1) * sin.to(x.dtype)


class SunfishTimeEmbedding(nn.Module):
    """t in [0, 1] -> sinusoid of t * 1000 (Vaswani et al. 2017) -> Linear -> SiLU -> Linear."""

    def __init__(self, c):
        super().__init__()
        self.freq_dim = c.time_freq_dim
        self.fc1 = nn.Linear(c.time_freq_dim, c.d_model, bias=c.bias)
        self.fc2 = nn.Linear(c.d_model, c.d_model, bias=c.bias)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = (t.float() * TIME_SCALE)[:, None] * freqs[None, :]  # (B, half)
        h = torch.cat([torch.cos(args), torch.sin(args)], dim=-1).to(self.fc1.weight.dtype)
        return self.fc2(F.silu(self.fc1(h)))


class SunfishAttention(nn.Module):
    """Fused q/k/v projection (rows [W_q; W_k; W_v]), grouped-query attention over SDPA."""

    def __init__(self, c):
        super().__init__()
        self.n_heads, self.n_kv, self.hd = c.n_heads, c.n_kv_heads, c.head_dim
        self.q_dim, self.kv_dim = self.n_heads * self.hd, self.n_kv * self.hd
        self.qkv = nn.Linear(c.d_model, self.q_dim + 2 * self.kv_dim, bias=c.qkv_bias)
        self.proj = nn.Linear(self.q_dim, c.d_model, bias=c.bias)
        self.q_norm = nn.RMSNorm(self.hd, eps=c.norm_eps) if c.qk_norm else None
        self.k_norm = nn.RMSNorm(self.hd, eps=c.norm_eps) if c.qk_norm else None
        self.dropout = c.dropout

    def forward(self, x, mask, causal, rope):
        B, T, _ = x.shape
        q, k, v = self.qkv(x).split([self.q_dim, self.kv_dim, self.kv_dim], dim=2)
        q = q.view(B, T, self.n_heads, self.hd).transpose(1, 2)  # (B, nh, T, hd)
        k = k.view(B, T, self.n_kv, self.hd).transpose(1, 2)  # (B, n_kv, T, hd)
        v = v.view(B, T, self.n_kv, self.hd).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = _rotate(q, *rope), _rotate(k, *rope)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=causal and mask is None, enable_gqa=self.n_kv != self.n_heads)
        return self.proj(y.transpose(1, 2).contiguous().view(B, T, self.q_dim))


class SunfishMLP(nn.Module):
    """GELU (tanh form) MLP, or SwiGLU / GeGLU with fc1 rows [W_gate; W_up] (Shazeer 2020, Eq. 6)."""

    def __init__(self, c):
        super().__init__()
        self.kind = c.mlp
        self.fc1 = nn.Linear(c.d_model, (2 if c.mlp != "gelu" else 1) * c.d_ff, bias=c.bias)
        self.fc2 = nn.Linear(c.d_ff, c.d_model, bias=c.bias)

    def forward(self, x):
        h = self.fc1(x)
        if self.kind != "gelu":
            gate, up = h.chunk(2, dim=-1)
            act = F.silu(gate) if self.kind == "swiglu" else F.gelu(gate, approximate="tanh")  # geglu: Gemma
            return self.fc2(act * up)
        return self.fc2(F.gelu(h, approximate="tanh"))


class SunfishBlock(nn.Module):
    """x + Attn(mod(norm(x))), then x + MLP(mod(norm(x))); mod = LN(x) * (1 + scale) + shift (DiT, Sec. 3.2)."""

    def __init__(self, c):
        super().__init__()
        self.ln1, self.attn, self.ln2, self.mlp = _norm(c, c.d_model), SunfishAttention(c), _norm(c, c.d_model), SunfishMLP(c)
        self.drop = nn.Dropout(c.dropout)
        self.mod_table = nn.Parameter(torch.zeros(4, c.d_model)) if c.time_conditioning else None

    def forward(self, x, mod, mask, causal, rope):
        h = self.ln1(x)
        if mod is not None:
            m = mod + self.mod_table.to(mod.dtype)  # (B, 4, d): shift_a, scale_a, shift_m, scale_m
            h = h * (1 + m[:, 1, None]) + m[:, 0, None]
        x = x + self.drop(self.attn(h, mask, causal, rope))
        h = self.ln2(x)
        if mod is not None:
            h = h * (1 + m[:, 3, None]) + m[:, 2, None]
        return x + self.drop(self.mlp(h))


@dataclass
class SunfishOutput(ModelOutput):
    """logits (B, T, V); x0: the output in the embedding space (B, T, embed_dim), what continuous diffusion predicts."""

    loss: Optional[torch.Tensor] = None
    logits: Optional[torch.Tensor] = None
    x0: Optional[torch.Tensor] = None
    hidden_states: Optional[tuple] = None


class SunfishPreTrainedModel(PreTrainedModel):
    config_class = SunfishConfig
    base_model_prefix = "sunfish"
    _no_split_modules = ["SunfishBlock"]

    def __init__(self, config: SunfishConfig):
        super().__init__(config)
        c = self.fields = _fields(config)
        e, d = c.embed_dim, c.d_model
        self.tok_emb = nn.Embedding(c.vocab_size, e)
        self.in_proj = nn.Linear(e, d, bias=c.bias) if e != d else None
        self.self_cond_proj = nn.Linear(e, d, bias=c.bias) if c.self_cond_input else None
        self.pos_emb = nn.Embedding(c.max_seq_len, d) if c.pos_encoding == "learned" else None
        self.drop = nn.Dropout(c.dropout)
        self.blocks = nn.ModuleList([SunfishBlock(c) for _ in range(c.n_layers)])
        self.ln_f = _norm(c, d)
        self.out_proj = nn.Linear(d, e, bias=c.bias) if e != d else None
        self.lm_head = None if c.tie_embeddings else nn.Linear(d, c.vocab_size, bias=False)
        self.time_emb = SunfishTimeEmbedding(c) if c.time_conditioning else None
        self.time_mod = nn.Linear(d, 4 * d, bias=c.bias) if c.time_conditioning else None
        self.post_init()

    def _init_weights(self, module):  # weights come from model.safetensors; fresh models start like Sunfish's
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=self.fields.init_std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def get_input_embeddings(self):
        return self.tok_emb

    def encode(self, input_ids=None, inputs_embeds=None, attention_mask=None, timesteps=None, self_cond=None):
        """Final hidden states (B, T, d_model) after the final norm (as `Backbone.encode`)."""
        c = self.fields
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        x = self.tok_emb(input_ids) if input_ids is not None else inputs_embeds
        if c.embed_scale != 1.0 and input_ids is not None:
            x = x * torch.tensor(c.embed_scale, dtype=x.dtype)
        B, T = x.shape[:2]
        if T > c.max_seq_len:
            raise ValueError(f"sequence length {T} exceeds max_seq_len={c.max_seq_len}")
        if self.in_proj is not None:
            x = self.in_proj(x)
        if self.self_cond_proj is not None:
            sc = self_cond if self_cond is not None else x.new_zeros(B, T, c.embed_dim)
            x = x + self.self_cond_proj(sc.to(x.dtype))
        pos = torch.arange(T, device=x.device)
        rope = None
        if self.pos_emb is not None:
            x = x + self.pos_emb(pos)
        else:
            emb = pos.float()[:, None] * _inv_freq(c).to(x.device)[None, :]  # (T, hd/2)
            emb = torch.cat([emb, emb], dim=-1)  # (T, hd)
            rope = (emb.cos(), emb.sin())
        x = self.drop(x)
        mod = None
        if self.time_emb is not None:
            if timesteps is None:
                raise ValueError("this model is time-conditioned: pass timesteps (B,) in [0, 1]")
            t = torch.as_tensor(timesteps, device=x.device, dtype=torch.float32)
            t = t.expand(B) if t.dim() == 0 else t
            mod = self.time_mod(F.silu(self.time_emb(t))).view(B, 4, -1).to(x.dtype)  # (B, 4, d)
        mask = None
        if attention_mask is not None:  # (B, T) 1 = real token; a query that sees nothing attends to itself
            mask = torch.ones(1, 1, T, T, dtype=torch.bool, device=x.device) & attention_mask.bool()[:, None, None, :]
            if c.causal:
                mask = mask & torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            mask = mask | torch.eye(T, dtype=torch.bool, device=x.device)
        for blk in self.blocks:
            x = blk(x, mod, mask, bool(c.causal), rope)
        return self.ln_f(x)

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, timesteps=None, self_cond=None,
                labels=None, output_hidden_states=False, return_dict=True, **kwargs):
        h = self.encode(input_ids, inputs_embeds, attention_mask, timesteps, self_cond)
        x0 = self.out_proj(h) if self.out_proj is not None else h
        logits = self.lm_head(h) if self.lm_head is not None else x0 @ self.tok_emb.weight.t()
        loss = self._loss(logits, labels) if labels is not None else None
        out = SunfishOutput(loss=loss, logits=logits, x0=x0, hidden_states=(h,) if output_hidden_states else None)
        return out if return_dict else out.to_tuple()

    def _loss(self, logits, labels):
        """Cross-entropy on labels != -100 at the same position (causal models: next token)."""
        if self.fields.causal:
            logits, labels = logits[:, :-1], labels[:, 1:]
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100)


class SunfishForMaskedLM(SunfishPreTrainedModel):
    """A masked or continuous diffusion Sunfish model (bidirectional)."""


class SunfishForCausalLM(SunfishPreTrainedModel):
    """A Sunfish model trained with the ar objective (causal attention, next-token logits)."""
