"""Memory per GPU for one training step of the backbone: the model behind `estimate.report`.

Pure arithmetic on a resolved `ModelConfig` (`ModelConfig.resolve`; no torch import). What is counted, per GPU:

- weights, gradients, AdamW state (two moments): the bytes each precision keeps
  (`PRECISIONS`), divided by the GPU count under FSDP, moved to host RAM by CPU offload;
- activations: the tensors autograd saves in `model.py`'s forward, op by op
  (`block_activations`), or only each block's input under activation checkpointing;
- temporaries: the fp32 loss path over (B, T, V), one block's backward working set
  (and its recomputation under checkpointing), autocast weight copies, FSDP all-gather
  and reduce-scatter buffers, DDP gradient buckets, the AdamW step's scratch.

The peak is taken over three moments of a step, in Lightning's order (training_step,
then `zero_grad(set_to_none=True)`, backward, optimizer step): `forward` (at the loss:
every activation saved, the previous step's grads still alive), `backward` (at its
start: the loss gradient forming, grads freed unless accumulating) and
`optimizer_step` (every gradient present, activations freed). The components of a
`MemoryEstimate` are what is resident at the peak moment, so they add up to `total`;
`phases` gives each moment's total.

Checked against CPU measurements by `bench/memory_estimate.py`; GPU-only pieces (CUDA
kernels' output layouts, autocast, FSDP/DDP buffers) follow the torch 2.13 and
Lightning 2.6 sources and are not measured here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from sunfish_lib.config import ModelConfig

GiB = 2**30


@dataclass(frozen=True)
class Precision:
    """Bytes per element that a Lightning `precision=` setting keeps."""

    weight: int
    """Master weights (what AdamW updates)."""
    grad: int
    """Gradients as accumulated in `.grad`."""
    state: int
    """Each AdamW moment (`torch.zeros_like(param)`: the weights' dtype)."""
    compute: int
    """Matmul inputs/outputs: c."""
    residual: int
    """Residual stream and LayerNorm inputs/outputs as saved: a (LayerNorm runs in fp32 under autocast)."""
    autocast: bool
    """torch.autocast casts the fp32 weights to bf16 for each matmul (copies kept for backward)."""


PRECISIONS: dict[str, Precision] = {
    "32-true": Precision(4, 4, 4, compute=4, residual=4, autocast=False),
    # Lightning's MixedPrecision plugin: fp32 weights, grads and AdamW state; torch.autocast.
    "bf16-mixed": Precision(4, 4, 4, compute=2, residual=4, autocast=True),
    "16-mixed": Precision(4, 4, 4, compute=2, residual=4, autocast=True),  # + a GradScaler (a few scalars)
    # Lightning's HalfPrecision plugin: the module is cast to bf16; AdamW state follows the weights.
    "bf16-true": Precision(2, 2, 2, compute=2, residual=2, autocast=False),
}
STRATEGIES = ("single", "ddp", "fsdp")

LOSS_BACKWARD_COPIES = {"continuous": 3, "ar": 3, "masked": 5, "block": 5}
"""fp32 (rows, V) tensors alive at the start of backward. Cross-entropy (continuous
rounding, AR): the log-softmax output (saved), its gradient, the logits' gradient.
Masked (`MaskedDiffusion.masked_nll`, logsumexp - gather): the saved logits,
logsumexp's (x - lse) and exp(), gather's scattered gradient and the clone made by
the in-place -inf on [MASK]. Counted op by op, then checked by bench/memory_estimate.py. Block diffusion's
`masked_nll` is the same ops (its 2L activations are not counted here)."""
CONTINUOUS_TENSORS = {"forward": 9, "backward": 3}
"""fp32 (B, T, e) tensors of the continuous objective alive at the loss / at the start of
backward (x0, noise, x_t, the scaled input, output, x0_hat, target, its error, the prior's
KL terms): measured on CPU by bench/memory_estimate.py, stable across e and B*T."""


@dataclass(frozen=True)
class Setup:
    """How one step runs: what the memory depends on beyond the model's shape."""

    micro_batch: int = 1
    seq_len: int = 1024
    strategy: str = "single"
    n_gpus: int = 1
    precision: str = "bf16-mixed"
    activation_checkpointing: bool = False
    cpu_offload: bool = False
    accumulate: int = 1
    """Gradient accumulation steps; > 1 keeps gradients resident through forward/backward."""
    device: str = "cuda"
    """cuda, or cpu (what `bench/memory_estimate.py` measures)."""
    attention: str = "auto"
    """auto: flash on CUDA (or memory-efficient: neither keeps T x T scores); on CPU flash, math when dropout > 0."""
    segment_mask: bool = False
    """Attention restricted to documents (data.cross_document_attention=False): a (B, 1, T, T) mask."""
    ema: bool = False
    """An EMA copy of the weights (same dtype and sharding) lives beside them (train.ema_decay > 0)."""
    objective: str = "continuous"
    """continuous, masked or ar: decides how many positions reach the vocabulary and the loss's tensors."""
    low_discrepancy: bool = True
    """Stratified timesteps across the batch (diffusion.low_discrepancy): bounds the masked fraction."""
    mask_fraction: float | None = None
    """Masked objective: the fraction of tokens masked; None takes the worst step's (`loss_rows`)."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per GPU at the step's peak, by component; the components add up to `total`."""

    weights: int
    grads: int
    optimizer: int
    activations: int
    temporaries: int
    peak_phase: str
    """forward, backward or optimizer_step."""
    phases: dict[str, int] = field(default_factory=dict)
    """Total bytes at each modelled moment of the step."""
    detail: dict[str, int] = field(default_factory=dict)
    """Named sub-items (full sizes, whichever phase they belong to)."""
    host: int = 0
    """Bytes per process in host RAM (CPU offload: sharded weights, grads, AdamW state)."""

    @property
    def total(self) -> int:
        """Peak bytes per GPU: the sum of the five components."""
        return self.weights + self.grads + self.optimizer + self.activations + self.temporaries

    def breakdown(self) -> dict[str, int]:
        """The five components resident at the peak (what the stacked bars show)."""
        return {k: getattr(self, k) for k in ("weights", "grads", "optimizer", "activations", "temporaries")}

    def to_dict(self) -> dict:
        """JSON-able fields plus `total`."""
        return {**asdict(self), "total": self.total}


# ----------------------------------------------------------------------------
# Parameter groups the memory model needs (the full count lives in estimate.py)
# ----------------------------------------------------------------------------

def linear_params(i: int, o: int, bias: bool) -> int:
    """Weights (and bias) of a Linear(i, o)."""
    return i * o + (o if bias else 0)


def attention_params(m: ModelConfig) -> int:
    """One block's attention: fused qkv (q: n_heads * head_dim wide), output projection, q/k norm gains."""
    q, kv = m.n_heads * m.head_dim, m.n_kv_heads * m.head_dim
    return linear_params(m.d_model, q + 2 * kv, m.qkv_bias) + linear_params(q, m.d_model, m.bias) \
        + (2 * m.head_dim if m.qk_norm else 0)


def block_params(m: ModelConfig) -> int:
    """Parameters of one transformer block (an FSDP unit)."""
    d, f, b = m.d_model, m.d_ff, m.bias
    norms = 2 * d * (2 if b and m.norm == "layernorm" else 1)
    table = 4 * d if m.time_conditioning else 0
    up = 2 * f if m.gated_mlp else f
    return attention_params(m) + linear_params(d, up, b) + linear_params(f, d, b) + norms + table


def largest_optimizer_group(m: ModelConfig) -> int:
    """Elements in the largest AdamW parameter group of `sunfish_lib.train.optim.param_groups`.

    Groups are (category, block, weight decay): the embedding group (token and position
    embeddings, in/out projections, an untied lm_head), a block's MLP or attention
    matrices, or the time path's matrices.
    """
    d, e, f, b = m.d_model, m.embed_dim, m.d_ff, m.bias
    proj = (linear_params(e, d, b) + linear_params(d, e, b) if e != d else 0)
    proj += linear_params(e, d, b) if m.self_cond_input else 0
    pos = m.max_seq_len * d if m.pos_encoding == "learned" else 0
    embed = m.vocab_size * e + pos + proj + (0 if m.tie_embeddings else m.vocab_size * d)
    time = m.time_freq_dim * d + 5 * d * d if m.time_conditioning else 0
    attn = d * (m.n_heads + 2 * m.n_kv_heads) * m.head_dim + m.n_heads * m.head_dim * d
    mlp = (3 if m.gated_mlp else 2) * d * f
    return max(embed, mlp, attn, time)


# ----------------------------------------------------------------------------
# Activations: tensors saved for backward, derived op by op from model.py
# ----------------------------------------------------------------------------

def attention_kernel(s: Setup, dropout: float) -> str:
    """The SDPA kernel torch picks: 'flash' (no T x T scores kept) or 'math' (scores kept)."""
    if s.attention != "auto":
        return s.attention
    # CPU flash needs dropout_p == 0; CUDA flash/memory-efficient handle dropout (Philox, no mask).
    return "math" if s.device == "cpu" and dropout > 0 else "flash"


def block_activations(m: ModelConfig, s: Setup) -> dict[str, int]:
    """Bytes one block saves for backward over the micro-batch, by tensor.

    Per token, with a = residual bytes, c = compute bytes: LayerNorm inputs 2da (+ fp32
    mean/rstd), qkv and fc1 inputs 2dc, q/k/v 3dc, attention output dc, GELU input and
    output 2fc (SwiGLU 4fc). For 16-bit a = c = 2 and f = 4d that is 32d bytes: Korthikanti et al. 2022
    ("Reducing Activation Recomputation", Sec. 4.1, eq. 1) count 34d + 5 a T (heads a)
    per token; the differences are no dropout masks (p=0: -2d) and flash/memory-efficient
    attention, which keeps the output and a log-sum-exp instead of the T x T scores.
    The output of a flash kernel is laid out (B, T, h, hs), so `.contiguous()` before the
    projection copies nothing (checked on CPU with saved-tensor hooks).
    """
    p = PRECISIONS[s.precision]
    a, c = p.residual, p.compute
    B, T, d, f, h = s.micro_batch, s.seq_len, m.d_model, m.d_ff, m.n_heads
    n, kv = B * T, m.n_kv_heads * m.head_dim
    kernel = attention_kernel(s, m.dropout)
    mask_b = 1 if s.device == "cuda" else c  # dropout masks: bool on CUDA, input dtype on CPU
    items = {
        "layernorm_inputs": n * 2 * _norm_saved(m, a),  # block input x, x + attn, and the norm's statistics
        "adaln_normed": n * 2 * d * a if m.time_conditioning else 0,  # LN(x) kept by the adaLN multiply
        "linear_inputs": n * 2 * d * c,  # qkv and fc1 inputs (bf16 casts under autocast)
        "qkv": n * (d + 2 * kv) * c,  # q, k, v views of one (B, T, d + 2 kv) tensor (math: scaled copies)
        "attention_out": n * d * c,
        # GELU: fc1 output and GELU output; SwiGLU: fc1 output (gate | up, 2f), silu(gate), the product
        "mlp_hidden": n * (4 if m.gated_mlp else 2) * f * c,
    }
    if m.pos_encoding == "rope" and kernel != "math":
        # rotated q and k, saved by the fused kernel as its inputs; the rotations themselves save only cos/sin.
        # The math kernel saves its scaled copies of q and k instead (counted under qkv), not the rotated ones.
        items["rope_qk"] = n * (d + kv) * c
    if kernel == "math":
        items["attention_scores"] = B * h * T * T * c  # softmax output, kept for attn @ v
    else:
        items["softmax_stats"] = n * h * 4  # fp32 log-sum-exp per query and head
    if s.segment_mask and kernel != "math":
        items["attention_mask"] = B * T * T * c  # bool mask converted to an additive one per call
    if m.dropout > 0:
        items["dropout_masks"] = n * 2 * d * mask_b + (B * h * T * T * (mask_b + c) if kernel == "math" else 0)
    return items


def _norm_saved(m: ModelConfig, a: int) -> int:
    """Bytes per token a norm saves: LayerNorm its input and fp32 mean/rstd; RMSNorm (composite on CPU, assumed
    on CUDA too) its input, the normalised x * rstd before the gain, and the fp32 rstd."""
    d = m.d_model
    return d * a + 8 if m.norm == "layernorm" else 2 * d * a + 4


def head_activations(m: ModelConfig, s: Setup) -> dict[str, int]:
    """Bytes saved outside the blocks: input projections, final norm, output projection input, time path."""
    p = PRECISIONS[s.precision]
    a, c, n = p.residual, p.compute, s.micro_batch * s.seq_len
    d, e = m.d_model, m.embed_dim
    items = {"final_norm": n * _norm_saved(m, a) + n * d * c}  # ln_f input (+stats), output kept by the logits
    if m.pos_encoding == "rope":  # fp32 cos and sin (T, hs), shared by blocks; 16-bit casts per rotation
        items["rope_tables"] = 2 * s.seq_len * m.head_dim * 4 + (
            m.n_layers * 4 * s.seq_len * m.head_dim * c if c != 4 else 0)
    if m.self_cond_input:
        items["self_cond_input"] = n * e * c  # the previous x0 estimate, kept by self_cond_proj
    if e != d:
        items["in_proj_input"] = n * e * c
        if m.tie_embeddings:
            items["out_proj_output"] = n * e * c  # kept by the tied logits matmul
    if m.time_conditioning:
        # per sequence: sinusoid, the MLP's hidden values, SiLU(c), and each block's (1 + scale) pair
        items["time_path"] = s.micro_batch * (m.time_freq_dim + 4 * d + 2 * m.n_layers * d) * 4
    if m.dropout > 0:
        items["embedding_dropout"] = n * d * (1 if s.device == "cuda" else c)
    return items


def activations(m: ModelConfig, s: Setup) -> dict[str, int]:
    """Saved activations for the whole micro-batch: every block, or only block inputs when checkpointing.

    With (non-reentrant) activation checkpointing each block keeps only its input
    (Korthikanti et al. 2022, Sec. 5: full recomputation, 2sbhL bytes in 16-bit); one
    block's activations are rebuilt during backward, counted under temporaries.
    """
    p = PRECISIONS[s.precision]
    out = {f"head_{k}": v for k, v in head_activations(m, s).items()}
    if s.activation_checkpointing:
        out["block_inputs"] = m.n_layers * s.micro_batch * s.seq_len * m.d_model * p.residual
    else:
        for k, v in block_activations(m, s).items():
            out[f"blocks_{k}"] = m.n_layers * v
    return out


# ----------------------------------------------------------------------------
# Temporaries and the two phases
# ----------------------------------------------------------------------------

def _backward_working_set(m: ModelConfig, s: Setup) -> int:
    """Gradient tensors alive inside one block's backward (MLP: d GELU-out and d fc1-out; attention: dq, dk, dv)."""
    p = PRECISIONS[s.precision]
    n, d, f, c, a = s.micro_batch * s.seq_len, m.d_model, m.d_ff, p.compute, p.residual
    mlp = n * ((4 if m.gated_mlp else 2) * f * c + 2 * d * a)
    attn = n * (3 * d * c + 4 * d + 2 * d * a)  # + the flash backward's fp32 dq accumulator
    ws = max(mlp, attn)
    if s.activation_checkpointing:  # the block being recomputed
        ws += sum(block_activations(m, s).values())
    return ws


def _fsdp_units(m: ModelConfig, total_params: int) -> tuple[int, int]:
    """(root params, one block's params): FSDP wraps each Block; the rest is the root unit."""
    blk = block_params(m)
    return total_params - m.n_layers * blk, blk


def loss_rows(s: Setup) -> int:
    """Positions whose logits are formed: all of them, or only the masked ones for masked diffusion.

    The masked fraction is p_mask(t) = t (linear and log-linear schedules) averaged over
    the batch; stratified t (MDLM Sec. 3.5.1) keeps that mean within 1/(2B) of 1/2, so
    the worst step masks at most (1/2 + 1/(2B)) of the tokens; with i.i.d. t, all of them.
    """
    n = s.micro_batch * s.seq_len
    if s.objective == "masked" and s.mask_fraction is not None:
        return int(round(n * s.mask_fraction))
    if s.objective == "masked" and s.low_discrepancy:
        return min(n, int(n * (0.5 + 0.5 / s.micro_batch)) + 1)
    return n


def loss_temporaries(m: ModelConfig, s: Setup) -> dict[str, int]:
    """The objective's tensors in its forward (at the loss) and at the start of backward.

    Forward: the logits in compute dtype (when not fp32), their fp32 copy and one more
    fp32 (rows, V) tensor (log-softmax output, or logsumexp's exp). Backward:
    `LOSS_BACKWARD_COPIES` fp32 tensors; once they are freed, blocks run backward one at
    a time (`_backward_working_set`). The continuous objective adds (B, T, e) tensors.
    """
    c = PRECISIONS[s.precision].compute
    rv = loss_rows(s) * m.vocab_size
    fwd = rv * ((c if c != 4 else 0) + 8)
    bwd = LOSS_BACKWARD_COPIES[s.objective] * rv * 4
    if s.objective == "continuous":
        ne4 = s.micro_batch * s.seq_len * m.embed_dim * 4
        fwd, bwd = fwd + CONTINUOUS_TENSORS["forward"] * ne4, bwd + CONTINUOUS_TENSORS["backward"] * ne4
    return {"forward": fwd, "backward": max(bwd, _backward_working_set(m, s))}


def buffers(m: ModelConfig, s: Setup, total_params: int, matmul_params: int) -> dict[str, int]:
    """Bytes held through forward and backward besides activations: batch, masks, communication buffers."""
    n = s.micro_batch * s.seq_len
    items = {"batch": n * 8 * 2}  # int64 inputs and targets
    if s.segment_mask:
        items["segment_mask"] = s.micro_batch * s.seq_len**2  # the bool (B, 1, T, T) mask, shared by blocks
    items.update(_comm_buffers(m, s, total_params))
    return items


def autocast_copies(m: ModelConfig, s: Setup, matmul_params: int) -> dict[str, int]:
    """bf16 casts of the matmul weights under autocast, at the loss and at the start of backward.

    autocast caches the cast of each leaf weight until forward ends, and each matmul saves
    its cast for backward. Under Sunfish's FSDP2 too (Lightning's ModelParallelStrategy:
    autocast, no MixedPrecisionPolicy): FSDP frees the gathered fp32 weights after each
    block, not the casts autograd holds. With checkpointing the blocks save nothing, so
    once forward ends only the output projection's cast (a view, never cached) remains;
    the recomputation re-casts one block at a time.
    """
    p = PRECISIONS[s.precision]
    if not p.autocast:
        return {"forward": 0, "backward": 0}
    head = m.vocab_size * (m.embed_dim if m.tie_embeddings else m.d_model)
    full = matmul_params * p.compute
    return {"forward": full, "backward": head * p.compute if s.activation_checkpointing else full}


def _comm_buffers(m: ModelConfig, s: Setup, total_params: int) -> dict[str, int]:
    """DDP gradient buckets; FSDP unsharded parameters and gradients of the units in flight."""
    p = PRECISIONS[s.precision]
    if s.strategy == "ddp":
        # DDP(gradient_as_bucket_view=False), Lightning's default: buckets as large as the grads.
        return {"ddp_grad_buckets": total_params * p.grad}
    if s.strategy == "fsdp":
        root, blk = _fsdp_units(m, total_params)
        # FSDP2 `fully_shard` per block, then the root (sunfish_lib.train.module), no mixed-precision
        # policy: parameters are gathered and gradients reduce-scattered in their stored dtype. The
        # root unit (embeddings, final norm, time path) stays unsharded through forward and backward
        # (FSDP2's root heuristic); two blocks are unsharded at once (current + prefetched).
        return {"fsdp_unsharded_params": (root + 2 * blk) * p.weight,
                "fsdp_unsharded_grads": (root + 2 * blk) * p.grad}
    return {}


def step_temporaries(m: ModelConfig, s: Setup, total_params: int) -> dict[str, int]:
    """Scratch of `AdamW.step` plus buffers that outlive backward (the host runs the step under offload)."""
    p = PRECISIONS[s.precision]
    items: dict[str, int] = {}
    # sunfish_lib.train.optim: fused AdamW on CUDA (no scratch); foreach elsewhere, whose
    # _foreach_sqrt(exp_avg_sq) makes one state-sized list per parameter group.
    if s.device == "cpu" and not s.cpu_offload:
        items["adamw_foreach_sqrt"] = largest_optimizer_group(m) * p.state
    if s.strategy == "ddp":
        items["ddp_grad_buckets"] = total_params * p.grad
    return items


def memory_per_gpu(m: ModelConfig, s: Setup, total_params: int, matmul_params: int) -> MemoryEstimate:
    """Peak bytes per GPU for one training step of `m` under `s` (see the module docstring).

    Three moments (Lightning's order: training_step, zero_grad(set_to_none=True),
    backward, optimizer step): `forward` at the loss, with the previous step's grads
    still alive; `backward` at its start, grads freed unless accumulating; and
    `optimizer_step`, activations freed.
    """
    p = PRECISIONS[s.precision]
    shard = s.n_gpus if s.strategy == "fsdp" else 1
    local = -(-total_params // shard)  # FSDP pads the flat parameter to a multiple of the world size
    w = local * p.weight * (2 if s.ema else 1)  # SunfishModule's EMA: a clone of each (sharded) parameter
    g, o = local * p.grad, local * 2 * p.state
    host = 0
    if s.cpu_offload:
        host, w, g, o = w + g + o, 0, 0, 0
    acts, a = activations(m, s), sum(activations(m, s).values())
    loss, buf = loss_temporaries(m, s), buffers(m, s, total_params, matmul_params)
    cast = autocast_copies(m, s, matmul_params)
    st = step_temporaries(m, s, total_params)
    g_bwd = g if s.accumulate > 1 else 0
    comp = {
        "forward": dict(grads=g, activations=a, temporaries=loss["forward"] + cast["forward"] + sum(buf.values())),
        "backward": dict(grads=g_bwd, activations=a,
                         temporaries=loss["backward"] + cast["backward"] + sum(buf.values())),
        "optimizer_step": dict(grads=g, activations=0, temporaries=sum(st.values())),
    }
    phases = {k: w + o + sum(v.values()) for k, v in comp.items()}
    peak = max(phases, key=phases.get)
    detail = {"weights": w, "grads": g, "optimizer": o, **acts,
              "loss_forward": loss["forward"], "loss_or_block_backward": loss["backward"],
              "autocast_weight_copies": cast["forward"], **buf, **st}
    return MemoryEstimate(weights=w, optimizer=o, peak_phase=peak, phases=phases, detail=detail, host=host,
                          **comp[peak])
