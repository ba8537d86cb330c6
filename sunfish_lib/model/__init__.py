"""The backbone: a bidirectional pre-LayerNorm transformer with timestep conditioning.

One backbone serves every objective:
- masked diffusion and the AR baseline feed token ids and read logits;
- continuous (embedding-space) diffusion feeds noisy vectors in the token-embedding
  space and reads vectors back (`to_embedding_space`) and rounding logits (`logits`).

Timestep conditioning is **adaLN-single** (PixArt-alpha, Chen et al. 2023, Sec. 2.3):
t -> sinusoid (Vaswani et al. 2017) -> 2-layer MLP -> c; one shared Linear maps c to
four d-vectors (shift/scale before attention, shift/scale before the MLP); each block
adds its own learned (4, d) table and modulates its pre-norm outputs,
`LN(x) * (1 + scale) + shift` (DiT, Peebles & Xie 2023, Sec. 3.2). Why this and not
an addition to the residual stream: modulating the normalised sublayer inputs lets
the noise level set each sublayer's gain, which an additive bias cannot do once the
residual stream's norm grows with depth; why the shared ("single") variant and not
DiT's per-block MLP: per-block adaLN costs 4*d^2 parameters a block (+31% at 1.4B),
the shared one 4*d^2 in total plus 4*d a block. The shared Linear and the tables are
zero-initialised, so at init the modulation is exactly the identity; with
`time_conditioning=False` the pieces are not built at all (an exact no-op).

Architecture options (`ModelConfig.norm`, `mlp`, `pos_encoding`, `n_kv_heads`,
`qkv_bias`) make GPT-2 and Llama/Qwen/Mistral-family models representable; the
sublayers live in `sunfish_lib.model.layers`, the weight mapping in `sunfish_lib.convert`.
"""

from __future__ import annotations

import math
from dataclasses import fields

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from sunfish_lib.model.attention import block_mask, dense_mask, use_flex
from sunfish_lib.config import Config, ModelConfig
from sunfish_lib.model.layers import (  # noqa: F401 (re-exported: callers import them from here)
    MLP, TIME_SCALE, BlockCache, KVCache, PrefixCache, SelfAttention, TimeEmbedding, apply_rope, make_norm, rope_cos_sin, rope_inv_freq,
    timestep_embedding,
)


class Block(nn.Module):
    """Pre-norm block: x + Attn(mod(norm(x))), then x + MLP(mod(norm(x))) (norm: LayerNorm or RMSNorm)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.ln1 = make_norm(cfg, cfg.d_model)
        self.attn = SelfAttention(cfg)
        self.ln2 = make_norm(cfg, cfg.d_model)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)
        # Per-block adaLN-single table: rows = shift_attn, scale_attn, shift_mlp, scale_mlp.
        self.mod_table = nn.Parameter(torch.zeros(4, cfg.d_model)) if cfg.time_conditioning else None

    def forward(
        self, x: torch.Tensor, mod: torch.Tensor | None, attn_mask: torch.Tensor | None, causal: bool,
        kv: tuple[KVCache, int] | None = None, rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        h1, h2 = self.ln1(x), None
        if mod is not None:
            m = mod + self.mod_table.to(mod.dtype)  # (B, 4, d)
            shift_a, scale_a, shift_m, scale_m = (m[:, i, None, :] for i in range(4))  # each (B, 1, d)
            h1 = h1 * (1 + scale_a) + shift_a
        x = x + self.drop(self.attn(h1, attn_mask, causal, kv, rope))
        h2 = self.ln2(x)
        if mod is not None:
            h2 = h2 * (1 + scale_m) + shift_m
        return x + self.drop(self.mlp(h2))


class Backbone(nn.Module):
    """Bidirectional (or causal) pre-LN transformer over token ids or embedding-space vectors."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        unresolved = [f.name for f in fields(cfg) if getattr(cfg, f.name) is None]
        if unresolved:  # ModelConfig.resolve fills every None (the one place): here it would silently mean "off"
            raise ValueError(f"model.{unresolved[0]} is None (an unresolved ModelConfig); build with "
                             "Backbone.from_config(cfg) or pass ModelConfig.resolve(objective)")
        self.cfg = cfg
        self.attention_kernel = "auto"  # "flex" / "sdpa" for document masks (sunfish_lib/model/attention.py); not a weight
        d, e = cfg.d_model, cfg.embed_dim
        self.tok_emb = nn.Embedding(cfg.vocab_size, e)
        self.in_proj = nn.Linear(e, d, bias=cfg.bias) if e != d else None
        # Self-conditioning (Chen et al. 2022, Sec. 3.3): the previous x0 estimate enters through its own
        # Linear, which equals a Linear on concat(x_t, x0_prev) and is zero-init, so it starts as a no-op.
        self.self_cond_proj = nn.Linear(e, d, bias=cfg.bias) if cfg.self_cond_input else None
        # Absolute learned positions (GPT-2), or none here and RoPE inside attention (Llama).
        self.pos_emb = nn.Embedding(cfg.max_seq_len, d) if cfg.pos_encoding == "learned" else None
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_layers)])
        self.ln_f = make_norm(cfg, d)
        self.out_proj = nn.Linear(d, e, bias=cfg.bias) if e != d else None
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(d, cfg.vocab_size, bias=False)
        if cfg.time_conditioning:
            self.time_emb = TimeEmbedding(cfg)
            self.time_mod = nn.Linear(d, 4 * d, bias=cfg.bias)  # adaLN-single shared projection
        else:
            self.time_emb = None
            self.time_mod = None
        self.reset_parameters()

    @classmethod
    def from_config(cls, cfg: Config) -> "Backbone":
        """The backbone of a run: every None field resolved (`Config.resolved_model`)."""
        return cls(cfg.resolved_model)

    # -- init ----------------------------------------------------------------------
    def reset_parameters(self) -> None:
        """Normal(0, init_std); residual outputs scaled by 1/sqrt(2L) (GPT-2, Radford et al. 2019, Sec. 2.3)."""
        std = self.cfg.init_std
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                scale = 1 / math.sqrt(2 * self.cfg.n_layers) if name.endswith(("attn.proj.weight", "mlp.fc2.weight")) else 1.0
                nn.init.normal_(p, mean=0.0, std=std * scale)
            elif name.endswith("bias"):
                nn.init.zeros_(p)
            elif ".ln" in name or name.startswith("ln_f"):
                nn.init.ones_(p)
        for blk in self.blocks:
            if blk.mod_table is not None:
                nn.init.zeros_(blk.mod_table)
        if self.self_cond_proj is not None:
            nn.init.zeros_(self.self_cond_proj.weight)
            if self.self_cond_proj.bias is not None:
                nn.init.zeros_(self.self_cond_proj.bias)
        if self.time_mod is not None:  # zero-init: adaLN starts as the identity
            nn.init.zeros_(self.time_mod.weight)
            if self.time_mod.bias is not None:
                nn.init.zeros_(self.time_mod.bias)

    # -- forward -------------------------------------------------------------------
    def embedding_weight(self) -> torch.Tensor:
        """The token-embedding matrix (V, embed_dim): continuous diffusion's x_0 table.

        A method (not attribute access) so FSDP2 can gather it like a forward pass.
        """
        return self.tok_emb.weight

    def embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids (B, T) -> vectors in the embedding space (B, T, embed_dim)."""
        return self.tok_emb(tokens)

    def encode(
        self,
        tokens: torch.Tensor | None = None,
        *,
        vectors: torch.Tensor | None = None,
        t: torch.Tensor | float | None = None,
        segment_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        kv_cache: KVCache | BlockCache | PrefixCache | None = None,
        self_cond: torch.Tensor | None = None,
        positions: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Final hidden states (B, T, d_model) after the final norm.

        tokens: (B, T) ids, or vectors: (B, T, embed_dim); t: (B,) or scalar in [0, 1]
        (ignored when time conditioning is off); segment_ids: (B, T) document ids,
        attention stays within a document; attention_mask: (B, T) 1 for real tokens,
        0 for padding (padding is never attended to); kv_cache: a `KVCache` (causal models, for
        incremental decoding: positions continue after the cached ones) or a `BlockCache` (any
        model: a full pass records, then tokens are the window start..stop-1 and attention_mask
        stays (B, T_full)), or a `PrefixCache` (any model: the fed tokens follow the cached ones and
        see them all; block diffusion's exact cache); self_cond:
        (B, T, embed_dim) previous x0 estimate, only with `self_cond_input` (None feeds zeros);
        positions: (T,) position ids (default: start..start+T-1; block diffusion feeds x_t and x0
        at the same positions); attn_mask: a ready mask, dense bool (B or 1, 1, T, T_keys) or a
        FlexAttention BlockMask, True = may attend, used instead of the one segment_ids/attention_mask build.
        """
        if (tokens is None) == (vectors is None):
            raise ValueError("pass exactly one of tokens or vectors")
        x = self.embed(tokens) if tokens is not None else vectors  # (B, T, e)
        if self.cfg.embed_scale != 1.0 and tokens is not None:  # Gemma's normalizer sqrt(d_model), on token ids
            x = x * torch.tensor(self.cfg.embed_scale, dtype=x.dtype)
        B, T = x.shape[:2]
        start = kv_cache.length if kv_cache is not None else 0
        end = start + T if positions is None else int(positions.max()) + 1
        if end > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {end} exceeds model.max_seq_len={self.cfg.max_seq_len}")
        window = isinstance(kv_cache, BlockCache)
        if kv_cache is not None and not window and not isinstance(kv_cache, PrefixCache) and (not self.cfg.causal or segment_ids is not None
                                                    or attention_mask is not None):
            raise ValueError("kv_cache needs a causal model and no segment_ids/attention_mask")
        if self.in_proj is not None:
            x = self.in_proj(x)  # (B, T, d)
        if self.self_cond_proj is not None:
            sc = self_cond if self_cond is not None else x.new_zeros(B, T, self.cfg.embed_dim)
            x = x + self.self_cond_proj(sc.to(x.dtype))  # (B, T, d)
        elif self_cond is not None:
            raise ValueError("self_cond needs a backbone built with model.self_cond_input=True")
        x, rope = self._positions(x, start, positions)
        x = self.drop(x)
        mod = self._time_modulation(t, B, x)
        if attn_mask is not None:
            mask = attn_mask
        elif window and not kv_cache.recording:  # a window pass: attention_mask (B, T_full) masks keys only
            mask = None if attention_mask is None else attention_mask.bool()[:, None, None, :]
        else:
            mask = self._attn_mask(segment_ids, attention_mask, T, x.device)
        causal = bool(self.cfg.causal)
        for i, blk in enumerate(self.blocks):
            if self.cfg.activation_checkpointing and self.training and kv_cache is None:
                x = checkpoint(blk, x, mod, mask, causal, None, rope, use_reentrant=False)
            else:
                x = blk(x, mod, mask, causal, None if kv_cache is None else (kv_cache, i), rope)
        return self.ln_f(x)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Hidden (B, T, d) -> logits over the vocabulary (B, T, V)."""
        if self.lm_head is not None:
            return self.lm_head(h)
        return self.to_embedding_space(h) @ self.tok_emb.weight.t()

    def to_embedding_space(self, h: torch.Tensor) -> torch.Tensor:
        """Hidden (B, T, d) -> vectors in the token-embedding space (B, T, embed_dim)."""
        return self.out_proj(h) if self.out_proj is not None else h

    def forward(self, tokens: torch.Tensor | None = None, **kw) -> torch.Tensor:
        """Logits (B, T, V); keyword arguments as in `encode`."""
        return self.logits(self.encode(tokens, **kw))

    # -- helpers -------------------------------------------------------------------
    def _positions(self, x: torch.Tensor, start: int, positions: torch.Tensor | None = None):
        """Positions start.. (after any cached ones) or the given ones: added as learned embeddings, or RoPE
        tables (T, hs) for attention."""
        if positions is None:
            positions = torch.arange(start, start + x.shape[1], device=x.device)  # (T,)
        if self.pos_emb is not None:
            return x + self.pos_emb(positions), None
        return x, rope_cos_sin(positions, rope_inv_freq(self.cfg, x.device))

    def _time_modulation(self, t, B: int, x: torch.Tensor) -> torch.Tensor | None:
        if self.time_emb is None:
            return None
        if t is None:
            raise ValueError("this backbone is time-conditioned: pass t (B,) in [0, 1]")
        t = torch.as_tensor(t, device=x.device, dtype=torch.float32)
        if t.dim() == 0:
            t = t.expand(B)
        c = self.time_emb(t)  # (B, d)
        return self.time_mod(F.silu(c)).view(B, 4, -1).to(x.dtype)  # (B, 4, d)

    def _attn_mask(self, segment_ids, attention_mask, T: int, device):
        """True = may attend: None when nothing restricts attention (SDPA then keeps its flash /
        memory-efficient kernels, and causal models use is_causal); else a FlexAttention BlockMask
        or a dense (B, 1, T, T) mask, by `self.attention_kernel` (sunfish_lib/model/attention.py)."""
        segment_ids, attention_mask = self._restricting(segment_ids, attention_mask)
        if segment_ids is None and attention_mask is None:
            return None
        dropout = self.cfg.dropout if self.training else 0.0
        if use_flex(self.attention_kernel, device, dropout):  # (a KVCache pass has no mask; a BlockCache records T x T)
            return block_mask(segment_ids, attention_mask, bool(self.cfg.causal), T, device)
        return dense_mask(segment_ids, attention_mask, bool(self.cfg.causal), T, device)

    def _restricting(self, segment_ids, attention_mask):
        """Drop the inputs that restrict nothing: an all-ones attention_mask; under a causal model, one that
        only pads on the right (no real token sees a later pad; pad positions' outputs are never scored);
        segment_ids that give each row one document. Costs one host sync per forward."""
        if attention_mask is not None:
            am = attention_mask.to(torch.int8)  # (B, T)
            if bool(am.all()) or (self.cfg.causal and bool((am.cummin(dim=1).values == am).all())):
                attention_mask = None
        if segment_ids is not None and bool((segment_ids == segment_ids[:, :1]).all()):
            segment_ids = None
        return segment_ids, attention_mask

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
