"""Mapping a Hugging Face causal LM onto Sunfish's backbone: its config fields and its weights.

GPT-2 (fused c_attn, Conv1D weights transposed) and the Llama family (separate q/k/v, RMSNorm,
SwiGLU/GeGLU, grouped-query attention, RoPE incl. llama3 scaling, Qwen3 q/k norms, Gemma's 1 + w
norm gains and sqrt(d) embedding scale). `check_logits` proves a mapping: with the causal mask
kept, the converted model's logits equal the parent's.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

import torch

from sunfish_lib.config import ModelConfig
from sunfish_lib.errors import SunfishError
from sunfish_lib.model import Backbone

HF_FAMILIES = {"gpt2": "gpt2", "llama": "llama", "mistral": "llama", "qwen2": "llama", "qwen3": "llama", "gemma": "llama"}
"""HF `model_type` -> the weight layout it shares."""
TIME_KEYS = ("time_emb.", "time_mod.", "mod_table")
"""Parameters a converted model may lack in its parent: the time pathway (a no-op at init)."""


def _rope(c) -> tuple[float, str]:
    """(theta, rope type) from a transformers 5 `rope_parameters` dict or the older `rope_theta`/`rope_scaling`."""
    params = dict(getattr(c, "rope_parameters", None) or {})
    scaling = dict(getattr(c, "rope_scaling", None) or {})
    theta = params.get("rope_theta", getattr(c, "rope_theta", 10_000.0))
    kind = params.get("rope_type", scaling.get("rope_type", scaling.get("type", "default")))
    return float(theta), str(kind)


def unsupported(c, family: str) -> str | None:
    """Why this HF config cannot be represented exactly, or None."""
    if family == "gpt2":
        if c.activation_function not in ("gelu_new", "gelu_pytorch_tanh"):
            return f"activation_function={c.activation_function!r} (the backbone's GELU is the tanh form, gelu_new)"
        if getattr(c, "scale_attn_by_inverse_layer_idx", False) or not getattr(c, "scale_attn_weights", True):
            return "non-standard attention scaling (scale_attn_by_inverse_layer_idx / scale_attn_weights)"
        return None
    want = "gelu_pytorch_tanh" if c.model_type == "gemma" else "silu"
    if c.hidden_act != want:
        return f"hidden_act={c.hidden_act!r} (the gated MLP here is {want})"
    if _rope(c)[1] not in ("default", "llama3"):
        return f"rope type {_rope(c)[1]!r} (the default RoPE and llama3 scaling are implemented)"
    return None


def _gemma_fields(c) -> dict[str, Any]:
    """Gemma: GeGLU MLP and token embeddings scaled by sqrt(hidden_size) (its norms' 1 + w is in the weights)."""
    if c.model_type != "gemma":
        return {"mlp": "swiglu"}
    return {"mlp": "geglu", "embed_scale": float(c.hidden_size) ** 0.5}


def _rope_fields(c) -> dict[str, Any]:
    """ModelConfig RoPE fields: theta, and Llama-3.1's scaling parameters when rope_type is llama3."""
    theta, kind = _rope(c)
    if kind != "llama3":
        return {"rope_theta": theta}
    p = {**dict(getattr(c, "rope_scaling", None) or {}), **dict(getattr(c, "rope_parameters", None) or {})}
    return {"rope_theta": theta, "rope_type": "llama3", "rope_factor": float(p["factor"]),
            "rope_low_freq_factor": float(p["low_freq_factor"]), "rope_high_freq_factor": float(p["high_freq_factor"]),
            "rope_original_max_len": int(p["original_max_position_embeddings"])}


def model_config_from_hf(c, family: str, vocab_size: int) -> ModelConfig:
    """The ModelConfig that holds an HF GPT-2 / Llama-family config exactly (attention switched by the objective)."""
    why = unsupported(c, family)
    if why:
        raise SunfishError(f"this {c.model_type} model cannot be converted exactly: {why}")
    if family == "gpt2":
        return ModelConfig(vocab_size=vocab_size, n_layers=c.n_layer, n_heads=c.n_head, d_model=c.n_embd,
                           d_ff=c.n_inner or 4 * c.n_embd, max_seq_len=c.n_positions, bias=True,
                           tie_embeddings=bool(getattr(c, "tie_word_embeddings", True)),
                           norm_eps=c.layer_norm_epsilon, pos_encoding="learned", dropout=0.0)
    attn_bias, mlp_bias = bool(getattr(c, "attention_bias", False)), bool(getattr(c, "mlp_bias", False))
    max_len = c.max_position_embeddings
    window = getattr(c, "sliding_window", None)
    if window and (c.model_type == "mistral" or getattr(c, "use_sliding_window", False)):
        max_len = min(max_len, window)  # within the window, sliding-window attention is full attention
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return ModelConfig(
        vocab_size=vocab_size, n_layers=c.num_hidden_layers, n_heads=c.num_attention_heads, d_model=c.hidden_size,
        d_ff=c.intermediate_size, max_seq_len=max_len, n_kv_heads=c.num_key_value_heads,
        head_dim=None if head_dim * c.num_attention_heads == c.hidden_size else head_dim,
        qk_norm=c.model_type == "qwen3", **_rope_fields(c), **_gemma_fields(c),
        norm="rmsnorm", pos_encoding="rope", norm_eps=c.rms_norm_eps,
        bias=attn_bias or mlp_bias,  # biases the parent lacks start at zero
        qkv_bias=True if c.model_type == "qwen2" else attn_bias,
        tie_embeddings=bool(getattr(c, "tie_word_embeddings", False)), dropout=0.0)


# ----------------------------------------------------------------------------
# Weight mapping: HF names and layouts -> Backbone names
# ----------------------------------------------------------------------------

def _gpt2_weights(sd: Mapping[str, torch.Tensor], n_layers: int, tied: bool) -> dict[str, torch.Tensor]:
    """GPT-2: Conv1D stores (in, out), so every matrix is transposed; c_attn's rows are already [q; k; v]."""
    g = lambda k: sd[f"transformer.{k}"]  # noqa: E731
    out = {"tok_emb.weight": g("wte.weight"), "pos_emb.weight": g("wpe.weight"),
           "ln_f.weight": g("ln_f.weight"), "ln_f.bias": g("ln_f.bias")}
    for i in range(n_layers):
        h, b = f"h.{i}.", f"blocks.{i}."
        for ours, theirs in (("ln1", "ln_1"), ("ln2", "ln_2")):
            out[f"{b}{ours}.weight"], out[f"{b}{ours}.bias"] = g(h + theirs + ".weight"), g(h + theirs + ".bias")
        for ours, theirs in (("attn.qkv", "attn.c_attn"), ("attn.proj", "attn.c_proj"),
                             ("mlp.fc1", "mlp.c_fc"), ("mlp.fc2", "mlp.c_proj")):
            out[f"{b}{ours}.weight"] = g(h + theirs + ".weight").t()  # (in, out) -> (out, in)
            out[f"{b}{ours}.bias"] = g(h + theirs + ".bias")
    if not tied:
        out["lm_head.weight"] = sd["lm_head.weight"]
    return out


def _llama_weights(sd: Mapping[str, torch.Tensor], n_layers: int, tied: bool,
                   norm_offset: float = 0.0) -> dict[str, torch.Tensor]:
    """Llama/Mistral/Qwen2/Qwen3/Gemma: q/k/v_proj stack into qkv, gate/up_proj into fc1 (rows [gate; up]), q/k norms."""
    out = {"tok_emb.weight": sd["model.embed_tokens.weight"], "ln_f.weight": sd["model.norm.weight"]}
    for i in range(n_layers):
        h, b = f"model.layers.{i}.", f"blocks.{i}."
        out[b + "ln1.weight"] = sd[h + "input_layernorm.weight"]
        out[b + "ln2.weight"] = sd[h + "post_attention_layernorm.weight"]
        for qk in ("q_norm", "k_norm"):  # Qwen3
            if f"{h}self_attn.{qk}.weight" in sd:
                out[f"{b}attn.{qk}.weight"] = sd[f"{h}self_attn.{qk}.weight"]
        for kind in ("weight", "bias"):
            qkv = [sd.get(f"{h}self_attn.{p}_proj.{kind}") for p in "qkv"]
            if all(x is not None for x in qkv):
                out[f"{b}attn.qkv.{kind}"] = torch.cat(qkv, 0)
            gate_up = [sd.get(f"{h}mlp.{p}_proj.{kind}") for p in ("gate", "up")]
            if all(x is not None for x in gate_up):
                out[f"{b}mlp.fc1.{kind}"] = torch.cat(gate_up, 0)
            for ours, theirs in (("attn.proj", "self_attn.o_proj"), ("mlp.fc2", "mlp.down_proj")):
                if f"{h}{theirs}.{kind}" in sd:
                    out[f"{b}{ours}.{kind}"] = sd[f"{h}{theirs}.{kind}"]
    if not tied:
        out["lm_head.weight"] = sd["lm_head.weight"]
    if norm_offset:  # Gemma's RMSNorm scales by (1 + w): our gain is 1 + w
        out = {k: v + norm_offset if k == "ln_f.weight" or k.endswith(("ln1.weight", "ln2.weight")) else v
               for k, v in out.items()}
    return out


def _vocab_rows(parent: torch.Tensor, rows: int, n_keep: int) -> torch.Tensor:
    """(rows, d): the parent's first n_keep rows; every other row the mean of those (Hewitt 2021)."""
    out = parent.new_empty(rows, parent.shape[1])
    out[:n_keep] = parent[:n_keep]
    out[n_keep:] = parent[:n_keep].float().mean(0).to(parent.dtype)
    return out


def backbone_from(cfg: ModelConfig, state_dict: Mapping[str, torch.Tensor]):
    """A Backbone that holds `state_dict`'s tensors (built on the meta device: no second copy of a large model)."""
    with torch.device("meta"):
        model = Backbone(cfg)
    model.load_state_dict(state_dict, strict=True, assign=True)
    return model


def assemble_state_dict(cfg: ModelConfig, mapped: Mapping[str, torch.Tensor], n_keep: int,
                        seed: int = 0) -> dict[str, torch.Tensor]:
    """A full Backbone state dict: mapped weights, vocabulary rows resized, missing biases zero, time pieces no-op.

    The time pathway (absent in any AR parent) is initialised as `Backbone.reset_parameters`
    does: the time MLP at random (seeded), the adaLN projection and tables at zero, so the
    modulation is exactly the identity whatever t is.
    """
    with torch.device("meta"):
        shapes = {k: (v.shape, v.dtype) for k, v in Backbone(cfg).state_dict().items()}
    unknown = sorted(set(mapped) - set(shapes))
    if unknown:
        raise KeyError(f"mapped weight {unknown[0]} has no place in the backbone (a mapping bug)")
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, (shape, dtype) in shapes.items():
        if key in mapped:
            value = mapped[key].detach()
            if key in ("tok_emb.weight", "lm_head.weight"):
                value = _vocab_rows(value, cfg.vocab_size, n_keep)
            if value.shape != shape:
                raise ValueError(f"{key}: parent shape {tuple(value.shape)} != backbone {tuple(shape)}")
            sd[key] = value.to(dtype).contiguous()
        elif key.endswith(".bias") or key.startswith("time_mod.") or key.endswith("mod_table"):
            sd[key] = torch.zeros(shape, dtype=dtype)  # a bias the parent lacks, or the zero-init adaLN: no-op
        elif key.startswith("time_emb."):
            sd[key] = (cfg.init_std * torch.randn(shape, generator=g)).to(dtype)
        else:
            raise KeyError(f"backbone weight {key} has no source in the parent (a mapping bug)")
    return sd


# ----------------------------------------------------------------------------
# Equivalence check
# ----------------------------------------------------------------------------

@torch.no_grad()
def check_logits(parent_logits, state_dict: Mapping[str, torch.Tensor], cfg: ModelConfig, *, n_compare: int,
                 vocab: int, seq_len: int = 32, batch: int = 2, seed: int = 0) -> dict[str, Any]:
    """Max |logit difference| between the parent and the converted weights run causally, time neutral.

    parent_logits(tokens (B, T)) -> (B, T, >= n_compare); the first n_compare columns (the
    parent's own tokens) are compared, on random ids < vocab. Time-conditioned models get
    random t: their adaLN starts at zero, so t must not matter.
    """
    causal = backbone_from(replace(cfg, causal=True), state_dict).eval()
    g = torch.Generator().manual_seed(seed)
    T = min(seq_len, cfg.max_seq_len)
    tokens = torch.randint(0, vocab, (batch, T), generator=g)
    t = torch.rand(batch, generator=g) if cfg.time_conditioning else None
    ref = parent_logits(tokens)[..., :n_compare].float()
    ours = causal(tokens, t=t)[..., :n_compare].float()
    diff = (ours - ref).abs()
    return {"max_abs_diff": diff.max().item(), "mean_abs_diff": diff.mean().item(),
            "max_abs_logit": ref.abs().max().item(), "tokens": batch * T, "compared_vocab": n_compare,
            "argmax_agreement": (ours.argmax(-1) == ref.argmax(-1)).float().mean().item()}


# ----------------------------------------------------------------------------
# Parents
# ----------------------------------------------------------------------------
