"""Counts on the config alone: exact parameters, training FLOPs per token, checkpoint bytes.

Arithmetic on a `ModelConfig` (torch is imported only by `built_params`, which builds the model on
the meta device to check the count), so a 1.4B model is counted on a laptop. `estimate` gathers
these with the memory model into reports; `perf/mfu` (train/callbacks.py) and the free-space check
(train/diskspace.py) use `executed_flops_per_token` and `checkpoint_bytes` directly.
"""

from __future__ import annotations

from typing import Any, Sequence

from sunfish_lib.config import Config, ModelConfig
from sunfish_lib.errors import ConfigError
from sunfish_lib.sizing.memory import PRECISIONS, attention_params, linear_params


def model_of(cfg: Config | ModelConfig) -> ModelConfig:
    """The ModelConfig that gets built, every None resolved (`ModelConfig.resolve`); a bare ModelConfig's
    objective switches left None count as off (the masked objective's backbone)."""
    return cfg.resolved_model if isinstance(cfg, Config) else cfg.resolve("masked")


def check_choice(name: str, value: Any, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ConfigError(f"{name}={value!r} is not allowed; choose one of {', '.join(allowed)}")
    return value


def param_counts(cfg: Config | ModelConfig) -> dict[str, int]:
    """Parameters by component, exactly as `Backbone.from_config(cfg)` creates them."""
    m = model_of(cfg)
    d, e, f, V, L, b = m.d_model, m.embed_dim, m.d_ff, m.vocab_size, m.n_layers, m.bias
    tc = m.time_conditioning
    kv = m.n_kv_heads * m.head_dim  # width of k (and of v): < d under grouped-query attention
    norm = d * (2 if b and m.norm == "layernorm" else 1)  # LayerNorm weight (+ bias); RMSNorm weight only
    up = 2 * f if m.gated_mlp else f  # SwiGLU's fc1 holds the gate and up halves
    return {
        "token_embedding": V * e,
        "in_proj": linear_params(e, d, b) if e != d else 0,
        "self_cond_proj": linear_params(e, d, b) if m.self_cond_input else 0,
        "position_embedding": m.max_seq_len * d if m.pos_encoding == "learned" else 0,  # RoPE has no parameters
        "attention": L * attention_params(m),  # qkv + output projection (+ Qwen3 q/k norm gains)
        "mlp": L * (linear_params(d, up, b) + linear_params(f, d, b)),
        "block_norms": L * 2 * norm,
        "adaln_tables": L * 4 * d if tc else 0,  # per-block (4, d) modulation table
        "final_norm": norm,
        "out_proj": linear_params(d, e, b) if e != d else 0,
        "lm_head": 0 if m.tie_embeddings else V * d,
        "time_mlp": linear_params(m.time_freq_dim, d, b) + linear_params(d, d, b) if tc else 0,
        "adaln_shared": linear_params(d, 4 * d, b) if tc else 0,  # adaLN-single projection c -> 4d
    }


def num_params(cfg: Config | ModelConfig) -> int:
    """Total parameters; equals `sum(p.numel() for p in Backbone(m).parameters())`."""
    return sum(param_counts(cfg).values())


def built_params(cfg: Config | ModelConfig) -> int:
    """sum(p.numel()) of the `Backbone` actually built, on the meta device (no memory at any size)."""
    # lazy: `sunfish estimate` counts without torch (1.6 s to import, model.py 1.5 s more)
    import torch

    from sunfish_lib.model import Backbone

    with torch.device("meta"):
        model = Backbone(model_of(cfg))  # resolved as the counts read it
    return sum(p.numel() for p in model.parameters())


def matmul_params(cfg: Config | ModelConfig) -> int:
    """N in 6N: weights of the per-token matmuls.

    Counted: in_proj, self_cond_proj, every block's qkv / proj / fc1 / fc2, out_proj, and the output
    projection to the vocabulary (lm_head, or the tied token embedding used as a matmul).
    Not counted: the token and position embedding lookups (gathers, no FLOPs), norms,
    biases and adaLN tables (elementwise), and the time MLP (once per sequence, see
    `flops_breakdown`).
    """
    m = model_of(cfg)
    d, e, f, V = m.d_model, m.embed_dim, m.d_ff, m.vocab_size
    kv = m.n_kv_heads * m.head_dim
    proj = (2 * d * e if e != d else 0) + (e * d if m.self_cond_input else 0)
    head = V * e if m.tie_embeddings else V * d
    mlp = (3 if m.gated_mlp else 2) * d * f
    q = m.n_heads * m.head_dim  # = d unless head_dim sets it apart
    return m.n_layers * (d * (q + 2 * kv) + q * d + mlp) + proj + head


# ----------------------------------------------------------------------------
# FLOPs
# ----------------------------------------------------------------------------

def flops_breakdown(cfg: Config | ModelConfig, seq_len: int) -> dict[str, float]:
    """Training FLOPs per token (forward + backward), by term.

    PaLM (Chowdhery et al. 2022, appendix B): 6N + 12 L H Q T, with H*Q = d_model; the
    same as Kaplan et al. 2020 (Sec. 2.1, C_forward = 2N + 2 n_layer n_ctx d_attn, and
    backward = 2x forward). N here is `matmul_params`. The attention term counts QK^T and
    AV, 2 matmuls x 2 FLOPs x T x d per layer forward, x3 with backward; no causal
    discount: attention is bidirectional. Grouped-query attention shrinks only the k/v
    projections (in N): every query head still scores T keys. RoPE and SwiGLU's product
    are elementwise (not counted). The time MLP runs once per sequence: its
    forward is 2 FLOPs per weight, its backward 4 except fc1, whose input (the sinusoid)
    needs no gradient (2). So does self_cond_proj's (a detached x0 estimate, or zeros): 4 per weight, not 6.
    """
    m = model_of(cfg)
    d = m.d_model
    dense = 6 * matmul_params(m) - (2 * m.embed_dim * d if m.self_cond_input else 0)
    attention = 6 * 2 * m.n_layers * seq_len * d
    time = 0.0
    if m.time_conditioning:
        per_seq = 4 * m.time_freq_dim * d + 6 * (d * d + 4 * d * d)
        time = per_seq / seq_len
    return {"dense": float(dense), "attention": float(attention), "time": time,
            "total": dense + attention + time}


def flops_per_token(cfg: Config | ModelConfig, seq_len: int) -> float:
    """Nominal training FLOPs per token: 6N + 12 L T d (+ the per-sequence time MLP / T).

    The head counted at every position, as a plain LM step would run it; for what an
    objective's step actually executes (the MFU convention) see `executed_flops_per_token`.
    """
    return flops_breakdown(cfg, seq_len)["total"]


def expected_mask_fraction(cfg: Config) -> float:
    """E_t[1 - alpha_t] for t ~ U[t_min, 1]: (1 + t_min) / 2 (loglinear's extra (1 - 1e-3) factor ignored)."""
    return 0.5 * (1.0 + cfg.diffusion.t_min)


def executed_flops_per_token(cfg: Config, seq_len: int | None = None, *, masked_fraction: float | None = None) -> float:
    """Training FLOPs one input token costs under `cfg`'s objective, as executed. THE MFU convention.

    Used by `perf/mfu` (train/callbacks.py), bench/train_throughput.py and bench/gpu_check.py.
    Forward + backward matmul FLOPs (`flops_breakdown`: PaLM's 6N + attention + time MLP), except:
    - the vocabulary projection runs only where the objective computes logits: masked, at the
      masked positions (`masked_fraction`, default `expected_mask_fraction`); AR, at every
      position; continuous, at every position: with continuous_loss=mse the rounding logits
      x0_hat @ table^T (V x embed_dim), with ce (CDCD) the backbone's own logits (the tied table
      after out_proj, or lm_head V x d_model, which leaves out_proj idle);
    - continuous, ce: score interpolation's x0_hat = softmax(logits) @ table is forward only (2 V e:
      the loss reads the logits, not x0_hat); own_evidence's x_t @ table^T is 6 V e (x_t and the
      table both carry gradients: x_t is made from the table);
    - continuous: self-conditioning adds its gradient-free first forward on every row: 2 FLOPs
      per backbone weight it runs + the forward third of attention + the time MLP's forward
      (2 x (time_freq_dim d + 5 d^2) per sequence), and with ce the logits, x0_hat and evidence forwards.
    Time warping adds nothing: its density is a per-bin running loss in the objective (no parameters,
    no matmuls). Not counted: elementwise work, the optimizer step, recomputation under activation
    checkpointing.
    """
    m = model_of(cfg)
    T = seq_len or cfg.data.seq_len
    fb = flops_breakdown(m, T)
    head = m.vocab_size * (m.embed_dim if m.tie_embeddings else m.d_model)  # in matmul_params
    body = fb["total"] - 6 * head
    objective = cfg.diffusion.objective
    if objective == "masked":
        frac = expected_mask_fraction(cfg) if masked_fraction is None else masked_fraction
        return body + 6 * head * frac
    if objective == "block":  # [z, x0]: 2T positions per T scored, each attending densely to 2T keys
        frac = expected_mask_fraction(cfg) if masked_fraction is None else masked_fraction
        return 2 * (body - fb["attention"]) + 4 * fb["attention"] + 6 * head * frac
    if objective == "continuous":
        dc, Ve = cfg.diffusion, m.vocab_size * m.embed_dim
        ce = dc.continuous_loss == "ce"
        idle = m.embed_dim * m.d_model if ce and not m.tie_embeddings and m.embed_dim != m.d_model else 0  # out_proj
        decoder = head if ce else Ve  # the backbone's logits (ce), or the rounding logits against the table (mse)
        readout = (Ve + (Ve if dc.own_evidence else 0)) if ce else 0  # forward-only x0_hat (+ the evidence forward)
        total = body - 6 * idle + 6 * decoder + 2 * readout + (4 * Ve if ce and dc.own_evidence else 0)
        if dc.self_conditioning:  # the gradient-free first pass: forwards only
            time_fwd = 2 * (m.time_freq_dim * m.d_model + 5 * m.d_model**2) / T if m.time_conditioning else 0.0
            total += 2 * (matmul_params(m) - head - idle) + fb["attention"] / 3 + time_fwd
            total += 2 * (decoder + readout) if ce else 0
        return total
    return fb["total"]


# ----------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------

def checkpoint_bytes(cfg: Config | ModelConfig, precision: str = "bf16-mixed", *, ema: bool = False) -> dict[str, int]:
    """Size on disk: weights alone (tied weights stored once), and with the AdamW state.

    Weights are saved in their master dtype (fp32, or bf16 under bf16-true); the optimizer
    adds two moments per parameter plus a step counter per tensor (a few KB, ignored).
    An EMA copy, when kept, is saved beside the weights in the same dtype.
    """
    p = PRECISIONS[check_choice("precision", precision, tuple(PRECISIONS))]
    n = num_params(cfg)
    weights = n * p.weight * (2 if ema else 1)
    return {"weights": weights, "with_optimizer": weights + 2 * n * p.state}
