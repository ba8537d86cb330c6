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
- ar: causal; `logits[:, i]` predicts the token at i + 1. `SunfishForCausalLM` inherits `GenerationMixin`:
  `generate()` (greedy, sampling, top-k/top-p) and `pipeline("text-generation")` run on a transformers `Cache`
  (`DynamicCache` by default), which each attention layer updates with its post-RoPE keys/values.
"""

import math
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache, GenerationMixin, PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_sunfish import SunfishConfig
from .continuous_sunfish import ContinuousSettings, ddim_generate
from .sampling_sunfish import MASK_RATE, BlockSettings, MaskedSettings, RowNoise, block_generate, masked_generate

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


def _fields(config: SunfishConfig) -> "Fields":
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
    return Fields(**m)


class Fields(SimpleNamespace):
    """The backbone's resolved fields (config.json's resolved_model), read as attributes like `ModelConfig`."""

    @property
    def gated_mlp(self) -> bool:
        """swiglu or geglu: fc1 holds the gate and up halves (`ModelConfig.gated_mlp`)."""
        return self.mlp in ("swiglu", "geglu")


# Copied from sunfish_lib.model.layers.make_norm with make_norm->_norm, cfg->c
def _norm(c: SimpleNamespace, dim: int) -> nn.Module:
    """LayerNorm (GPT-2; bias only with `c.bias`) or RMSNorm (Zhang & Sennrich 2019; Llama's LlamaRMSNorm).

    RMSNorm: x / sqrt(mean(x^2) + eps) * g, no mean subtraction and no bias.
    """
    if c.norm == "rmsnorm":
        return nn.RMSNorm(dim, eps=c.norm_eps)
    return nn.LayerNorm(dim, eps=c.norm_eps, bias=c.bias)


# Copied from sunfish_lib.model.layers.rope_inv_freq with rope_inv_freq->_inv_freq, cfg->c
def _inv_freq(c: SimpleNamespace, device=None) -> torch.Tensor:
    """RoPE frequencies (head_dim/2,): theta^(-2i/head_dim) (RoFormer Eq. 15), llama3-scaled if asked.

    llama3 (Llama 3.1; HF `_compute_llama3_parameters`): wavelengths 2 pi / f longer than
    L / low_freq_factor are slowed by `rope_factor`, those shorter than L / high_freq_factor
    kept, and the band between interpolates linearly in L / wavelength (L = the original context).
    """
    hd = c.head_dim
    inv_freq = 1.0 / (c.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float32, device=device) / hd))
    if c.rope_type != "llama3":
        return inv_freq
    L, lo, hi, factor = c.rope_original_max_len, c.rope_low_freq_factor, c.rope_high_freq_factor, c.rope_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > L / lo, inv_freq / factor, inv_freq)
    smooth = (L / wavelen - lo) / (hi - lo)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= L / hi) & (wavelen <= L / lo)
    return torch.where(medium, smoothed, scaled)


# Copied from sunfish_lib.model.layers.apply_rope with apply_rope->_rotate
def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, h, T, hs) queries or keys by position: x cos + rotate_half(x) sin (HF apply_rotary_pos_emb)."""
    x1, x2 = x.chunk(2, dim=-1)  # (B, h, T, hs/2) each
    rotated = torch.cat([-x2, x1], dim=-1)  # (B, h, T, hs)
    return x * cos.to(x.dtype) + rotated * sin.to(x.dtype)


def _attention_mask(attention_mask, causal: bool, past: int, T: int, device):
    """Boolean (B or 1, 1, T, P + T) SDPA mask, True = may attend, or None (nothing restricts: SDPA's is_causal).

    Query i sits at position P + i; a query that may see nothing attends to itself (padding rows give no NaN).
    """
    S = past + T
    if attention_mask is None and not (causal and past and T > 1):
        return None
    keys = torch.ones(1, S, dtype=torch.bool, device=device) if attention_mask is None else attention_mask.bool()
    mask = keys[:, None, None, -S:].expand(-1, 1, T, S)
    query_pos = past + torch.arange(T, device=device)[:, None]  # (T, 1)
    key_pos = torch.arange(S, device=device)[None]  # (1, S)
    if causal:
        mask = mask & (key_pos <= query_pos)
    return mask | (key_pos == query_pos)


# Copied from sunfish_lib.model.layers.timestep_embedding
def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of t in [0, 1] (Vaswani et al. 2017, Sec. 3.5): (B,) -> (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = (t.float() * TIME_SCALE)[:, None] * freqs[None, :]  # (B, half)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


# Copied from sunfish_lib.model.layers.TimeEmbedding with TimeEmbedding->SunfishTimeEmbedding, cfg->c
class SunfishTimeEmbedding(nn.Module):
    """t -> sinusoid -> Linear -> SiLU -> Linear -> c (B, d_model)."""

    def __init__(self, c: SimpleNamespace):
        super().__init__()
        self.freq_dim = c.time_freq_dim
        self.fc1 = nn.Linear(c.time_freq_dim, c.d_model, bias=c.bias)
        self.fc2 = nn.Linear(c.d_model, c.d_model, bias=c.bias)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        h = timestep_embedding(t, self.freq_dim).to(self.fc1.weight.dtype)
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

    def forward(self, x, mask, causal, rope, cache=None, layer_idx: int = 0):
        """x (B, T, d) -> (B, T, d); `cache` (a transformers Cache) gets this call's keys/values appended."""
        B, T, _ = x.shape
        q, k, v = self.qkv(x).split([self.q_dim, self.kv_dim, self.kv_dim], dim=2)
        q = q.view(B, T, self.n_heads, self.hd).transpose(1, 2)  # (B, nh, T, hd)
        k = k.view(B, T, self.n_kv, self.hd).transpose(1, 2)  # (B, n_kv, T, hd)
        v = v.view(B, T, self.n_kv, self.hd).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = _rotate(q, *rope), _rotate(k, *rope)
        if cache is not None:
            k, v = cache.update(k, v, layer_idx)  # (B, n_kv, T_past + T, hd)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0,
                                           is_causal=causal and mask is None, enable_gqa=self.n_kv != self.n_heads)
        return self.proj(y.transpose(1, 2).contiguous().view(B, T, self.q_dim))


# Copied from sunfish_lib.model.layers.MLP with MLP->SunfishMLP, cfg->c
class SunfishMLP(nn.Module):
    """GELU MLP (GPT-2: fc2(gelu_tanh(fc1 x))), SwiGLU (Shazeer 2020, Eq. 6; Llama's LlamaMLP) or GeGLU (Gemma).

    SwiGLU fuses the gate and up projections into one `fc1` with rows [W_gate; W_up]:
    fc2(silu(x W_gate) * x W_up), each half `d_ff` wide.
    """

    def __init__(self, c: SimpleNamespace):
        super().__init__()
        self.kind = c.mlp
        self.fc1 = nn.Linear(c.d_model, (2 if c.gated_mlp else 1) * c.d_ff, bias=c.bias)
        self.fc2 = nn.Linear(c.d_ff, c.d_model, bias=c.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)  # (B, T, f) or (B, T, 2f)
        if self.kind != "gelu":
            gate, up = h.chunk(2, dim=-1)  # (B, T, f) each
            act = F.silu(gate) if self.kind == "swiglu" else F.gelu(gate, approximate="tanh")  # geglu: Gemma
            return self.fc2(act * up)
        return self.fc2(F.gelu(h, approximate="tanh"))


class SunfishBlock(nn.Module):
    """x + Attn(mod(norm(x))), then x + MLP(mod(norm(x))); mod = LN(x) * (1 + scale) + shift (DiT, Sec. 3.2)."""

    # Copied from sunfish_lib.model.Block.__init__ with make_norm->_norm, SelfAttention->SunfishAttention, MLP->SunfishMLP, cfg->c
    def __init__(self, c: SimpleNamespace):
        super().__init__()
        self.ln1 = _norm(c, c.d_model)
        self.attn = SunfishAttention(c)
        self.ln2 = _norm(c, c.d_model)
        self.mlp = SunfishMLP(c)
        self.drop = nn.Dropout(c.dropout)
        # Per-block adaLN-single table: rows = shift_attn, scale_attn, shift_mlp, scale_mlp.
        self.mod_table = nn.Parameter(torch.zeros(4, c.d_model)) if c.time_conditioning else None

    def forward(self, x, mod, mask, causal, rope, cache=None, layer_idx: int = 0):
        h = self.ln1(x)
        if mod is not None:
            m = mod + self.mod_table.to(mod.dtype)  # (B, 4, d): shift_a, scale_a, shift_m, scale_m
            h = h * (1 + m[:, 1, None]) + m[:, 0, None]
        x = x + self.drop(self.attn(h, mask, causal, rope, cache, layer_idx))
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
    cache: Optional[object] = None
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

    def never_emitted(self, allow_eos: bool = False) -> list:
        """Ids no sampler emits (Sunfish's `never_emitted`): [MASK], [PAD], EOS unless allowed, ids past the tokenizer."""
        c = self.config
        specials = [c.mask_token_id, c.pad_token_id] + ([] if allow_eos else [c.eos_token_id])
        known = c.tokenizer_size or c.vocab_size
        return sorted({int(i) for i in specials if i is not None} | set(range(known, c.vocab_size)))

    def encode(self, input_ids=None, inputs_embeds=None, attention_mask=None, timesteps=None, self_cond=None,
               cache=None, position_ids=None):
        """Final hidden states (B, T, d_model) after the final norm (as `Backbone.encode`).

        cache: a transformers Cache holding the keys/values of the P positions before these T (causal models);
        attention_mask: (B, T) or, with a cache, (B, P + T), 1 = real token, or a dense bool (B or 1, 1, T, P + T),
        True = may attend (a block model's block-causal mask); position_ids: (B, T), default P..P+T-1.
        """
        c = self.fields
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        x = self.tok_emb(input_ids) if input_ids is not None else inputs_embeds
        if c.embed_scale != 1.0 and input_ids is not None:
            x = x * torch.tensor(c.embed_scale, dtype=x.dtype)
        B, T = x.shape[:2]
        past = cache.get_seq_length() if cache is not None else 0
        if past and not c.causal:
            raise ValueError("a KV cache needs a causal (ar) model: bidirectional positions change every step")
        if past + T > c.max_seq_len:
            raise ValueError(f"sequence length {past + T} exceeds max_seq_len={c.max_seq_len}")
        if self.in_proj is not None:
            x = self.in_proj(x)
        if self.self_cond_proj is not None:
            sc = self_cond if self_cond is not None else x.new_zeros(B, T, c.embed_dim)
            x = x + self.self_cond_proj(sc.to(x.dtype))
        pos = torch.arange(past, past + T, device=x.device)[None] if position_ids is None else position_ids  # (b, T)
        rope = None
        if self.pos_emb is not None:
            x = x + self.pos_emb(pos)
        else:
            emb = pos.float()[..., None] * _inv_freq(c).to(x.device)  # (b, T, hd/2)
            emb = torch.cat([emb, emb], dim=-1)[:, None]  # (b, 1, T, hd)
            rope = (emb.cos(), emb.sin())
        x = self.drop(x)
        mod = None
        if self.time_emb is not None:
            if timesteps is None:
                raise ValueError("this model is time-conditioned: pass timesteps (B,) in [0, 1]")
            t = torch.as_tensor(timesteps, device=x.device, dtype=torch.float32)
            t = t.expand(B) if t.dim() == 0 else t
            mod = self.time_mod(F.silu(self.time_emb(t))).view(B, 4, -1).to(x.dtype)  # (B, 4, d)
        if attention_mask is not None and bool(attention_mask.all()):  # restricts nothing: SDPA's fast path, as Sunfish
            attention_mask = None
        mask = (attention_mask.bool() if attention_mask is not None and attention_mask.dim() == 4  # dense (b, 1, T, S)
                else _attention_mask(attention_mask, bool(c.causal), past, T, x.device))
        for i, blk in enumerate(self.blocks):
            x = blk(x, mod, mask, bool(c.causal) and past == 0, rope, cache, i)  # one new query sees every cached key
        return self.ln_f(x)

    def logits_of(self, h):
        """Hidden (..., d_model) -> (x0 (..., embed_dim), logits (..., V)), as `Backbone.logits`."""
        x0 = self.out_proj(h) if self.out_proj is not None else h
        return x0, (self.lm_head(h) if self.lm_head is not None else x0 @ self.tok_emb.weight.t())

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, timesteps=None, self_cond=None,
                labels=None, output_hidden_states=False, return_dict=True, cache=None, past_key_values=None,
                use_cache=None, position_ids=None, logits_to_keep=0, **kwargs):
        cache = cache if cache is not None else past_key_values
        if cache is None and use_cache and self.fields.causal:
            cache = DynamicCache()
        h = self.encode(input_ids, inputs_embeds, attention_mask, timesteps, self_cond, cache, position_ids)
        kept = h[:, -logits_to_keep:] if logits_to_keep else h  # generate() asks for the last position only
        x0, logits = self.logits_of(kept)
        loss = self._loss(logits, labels) if labels is not None else None
        out = SunfishOutput(loss=loss, logits=logits, x0=x0, cache=cache,
                            hidden_states=(h,) if output_hidden_states else None)
        return out if return_dict else out.to_tuple()

    def _loss(self, logits, labels):
        """Cross-entropy on labels != -100 at the same position (causal models: next token)."""
        if self.fields.causal:
            logits, labels = logits[:, :-1], labels[:, 1:]
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100)


class SunfishForMaskedLM(SunfishPreTrainedModel):
    """A masked, block or continuous diffusion Sunfish model; `diffusion_generate` samples from it (a block model
    block by block under its block-causal mask; its plain forward is bidirectional)."""

    @torch.no_grad()
    def diffusion_generate(self, input_ids=None, max_new_tokens: int = 0, steps=None, sampler=None, temperature=None,
                           top_k=None, top_p=None, block_length=None, threshold=None, cfg_scale=None, eta=None,
                           clamp=None, rounding=None, allow_eos=None, attention_mask=None, generator=None,
                           seed: int = 0, num_samples: int = 1):
        """Generate with Sunfish's samplers: ids (B, P + max_new_tokens), every [MASK] filled.

        input_ids (B, P): the prompt, kept exactly; `max_new_tokens` [MASK] are appended after it. Infill: put
        `mask_token_id` where text goes (max_new_tokens may be 0). `num_samples` rows per prompt (no input_ids:
        rows of max_new_tokens [MASK] only), drawn as one batch as `sunfish sample --num-samples` draws them.
        The settings are Sunfish's (`sunfish sample --help`; masked: sampler, steps, temperature, top_k, top_p,
        block_length, threshold, cfg_scale; continuous: ddim with steps, eta, clamp, rounding, temperature); None keeps the
        run's own (config.json's `sample`). `seed` (as `sunfish sample --seed`) makes it reproducible: the same
        seed gives Sunfish's tokens, and a prompt's sample j is the same whatever else is in the batch (row j of
        each prompt draws from its own stream, seeded from (seed, j)). A `generator` (transformers' convention)
        instead seeds the streams from one draw of it.
        """
        cfg = {**self.config.sample, **{k: v for k, v in dict(
            steps=steps, sampler=sampler, temperature=temperature, top_k=top_k, top_p=top_p,
            block_length=block_length, threshold=threshold, cfg_scale=cfg_scale, eta=eta, clamp=clamp,
            rounding=rounding, allow_eos=allow_eos).items()
            if v is not None}}
        mask_id = self.config.mask_token_id
        if mask_id is None:
            raise ValueError("config.json has no mask_token_id; re-export the model with `sunfish export`")
        device = self.tok_emb.weight.device
        if input_ids is None:
            input_ids = torch.empty(1, 0, dtype=torch.long, device=device)
        rows = [j for _ in range(input_ids.shape[0]) for j in range(num_samples)]  # each row's sample index
        input_ids = input_ids.to(device).repeat_interleave(num_samples, dim=0)  # rows of a prompt are adjacent
        if attention_mask is not None:
            attention_mask = attention_mask.repeat_interleave(num_samples, dim=0)
        x = torch.cat([input_ids.to(device), torch.full((input_ids.shape[0], max_new_tokens), mask_id,
                                                       dtype=torch.long, device=device)], dim=1)
        if attention_mask is not None:
            attention_mask = torch.cat([attention_mask.to(device), attention_mask.new_ones(x.shape[0], max_new_tokens)
                                        .to(device)], dim=1)
        if not (x == mask_id).any():
            raise ValueError("nothing to generate: give max_new_tokens > 0 or put mask_token_id in input_ids")
        noise = RowNoise(seed, rows) if generator is None else RowNoise.from_generator(generator, rows)
        never = self.never_emitted(bool(cfg.get("allow_eos", False)))
        was_training = self.training
        self.eval()
        try:
            if self.config.objective == "continuous":
                return self._ddim(x, cfg, never, noise)
            if self.config.objective == "block":
                if block_length or cfg_scale:
                    raise ValueError("a block export samples block by block (diffusion.block_size) without guidance; "
                                     "leave block_length and cfg_scale unset")
                if attention_mask is not None and not bool(attention_mask.all()):
                    raise ValueError("a block export takes one prompt length per batch (blocks are shared columns); "
                                     "pass prompts of equal length or one at a time")
                return self._masked(x, cfg, never, mask_id, None, noise, block=True)
            return self._masked(x, cfg, never, mask_id, attention_mask, noise)
        finally:
            self.train(was_training)

    def _ddim(self, x, cfg: dict, never, noise):
        if cfg["sampler"] != "ddim":
            raise ValueError(f"sampler={cfg['sampler']!r}: a continuous export samples with ddim here "
                             "(eta=1 is DDPM's law; `sunfish sample` has ddpm itself)")
        settings = ContinuousSettings(self, self.config.diffusion, never, steps=cfg["steps"], eta=cfg.get("eta", 0.0),
                                      clamp=bool(cfg.get("clamp", False)), rounding=cfg.get("rounding", "auto"),
                                      temperature=float(cfg.get("temperature", 1.0)))
        return ddim_generate(settings, x, x != self.config.mask_token_id, noise)

    def _masked(self, x, cfg: dict, never, mask_id: int, attention_mask, noise, block: bool = False):
        d = self.config.diffusion
        kw = dict(sampler=cfg["sampler"], steps=cfg["steps"], temperature=cfg["temperature"], top_k=cfg["top_k"],
                  top_p=cfg["top_p"], threshold=cfg["threshold"], rate=MASK_RATE[d.get("mask_schedule", "linear")],
                  shift_logits=bool(d.get("shift_logits", False)), attention_mask=attention_mask)
        if block:
            settings = BlockSettings(self, mask_id, never, block_size=int(d["block_size"]),
                                     eos_id=self.config.eos_token_id, **kw)
            return block_generate(settings, x, noise)
        settings = MaskedSettings(self, mask_id, never, block_length=cfg["block_length"], cfg_scale=cfg["cfg_scale"],
                                  **kw)
        return masked_generate(settings, x, noise)


class SunfishForCausalLM(SunfishPreTrainedModel, GenerationMixin):
    """A Sunfish model trained with the ar objective (causal attention, next-token logits).

    `generate()` comes from GenerationMixin; its default `prepare_inputs_for_generation` feeds the new tokens
    with the cache (`forward(cache=...)`) and `logits_to_keep=1`. Positions follow the attention mask, so
    left-padded batches keep each row's positions.
    """

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, **kwargs):
        inputs = super().prepare_inputs_for_generation(input_ids, attention_mask=attention_mask, **kwargs)
        if attention_mask is not None and inputs.get("position_ids") is None:  # left padding: count real tokens
            pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, P + T)
            inputs["position_ids"] = pos[:, -inputs["input_ids"].shape[1]:]
        return inputs

    def generate(self, *args, **kwargs):
        """GenerationMixin.generate, never emitting what Sunfish's ar sampler never emits (unless `suppress_tokens`
        is given): [MASK], [PAD], EOS (unless the run's `sample.allow_eos`), ids past the tokenizer."""
        if kwargs.get("suppress_tokens") is None and getattr(self.generation_config, "suppress_tokens", None) is None:
            kwargs["suppress_tokens"] = self.never_emitted(bool(self.config.sample.get("allow_eos", False)))
        return super().generate(*args, **kwargs)
