"""Configuration: frozen dataclasses (one per concern, each validating itself), presets, JSON round-trip.

`Config` gathers model, objective, data, training and sampling; `Config.from_dict(json.load(...))`
rebuilds a run exactly. Overrides (`override`, `--set key=value`) are parsed and typed in
`overrides.py`; the allowed values and the checks live in `validation.py`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, ClassVar, Mapping

from sunfish_lib.errors import ConfigError
from sunfish_lib.config.overrides import (  # noqa: F401 (parse_set_args, with_max_steps: callers import them here)
    accumulation_for, from_dict, parse_set_args, set_key, short_run_rules, with_max_steps,
)
from sunfish_lib.config.validation import (  # noqa: F401 (the allowed values: callers import them from config)
    BACKBONE_NEEDS, CACHES, DEFAULT_SAMPLERS, DEVICE_HELP, DTYPE_NAMES, LR_DECAYS, MASK_SCHEDULES, MASKED_LOSSES, MLPS,
    NAN_POLICIES, NOISE_SCHEDULES, NORMS, OBJECTIVES, POS_ENCODINGS, PRECISIONS, PREDICTIONS, ROUNDINGS, SAMPLERS, STRATEGIES,
    validate_data, validate_diffusion, validate_model, validate_run, validate_sample, validate_train,
)


@dataclass(frozen=True)
class ModelConfig:
    """The backbone: a bidirectional pre-LN transformer with timestep conditioning."""

    vocab_size: int = 50304
    """Rows of the token embedding; at least the tokenizer's length (incl. [MASK]); padded to a multiple of 64 is faster."""
    n_layers: int = 12
    """Transformer blocks."""
    n_heads: int = 12
    """Attention heads; must divide d_model."""
    d_model: int = 768
    """Width of the residual stream."""
    d_ff: int | None = None
    """Hidden width of the MLP; None means 4 * d_model (SwiGLU: the width of each of its gate and up halves)."""
    max_seq_len: int = 1024
    """Position limit (rows of the learned position embedding; with RoPE only a length check)."""
    embed_dim: int | None = None
    """Width of the token-embedding space; None means d_model. Continuous diffusion runs in this space (Diffusion-LM uses 16-128)."""
    time_conditioning: bool | None = None
    """Build the timestep pathway (sinusoid -> MLP -> adaLN). None: as the objective wants (continuous on, masked/ar off)."""
    causal: bool | None = None
    """Causal attention mask. None: as the objective wants (ar on, diffusion off)."""
    self_cond_input: bool | None = None
    """Build the self-conditioning input (a zero-init Linear embed_dim -> d_model for the previous x0 estimate). None: as diffusion.self_conditioning says."""
    time_freq_dim: int = 256
    """Width of the sinusoidal timestep embedding fed to the time MLP."""
    bias: bool = False
    """Biases in Linear and LayerNorm layers (GPT-2 has them; without is a little faster)."""
    qkv_bias: bool | None = None
    """Bias on the q/k/v projection alone; None follows `bias` (Qwen2: true with bias false)."""
    norm: str = "layernorm"
    """layernorm (GPT-2) or rmsnorm (Llama/Qwen/Mistral: x / rms(x) * g, no bias, no mean)."""
    mlp: str = "gelu"
    """gelu (tanh-approximate GELU, GPT-2's gelu_new), swiglu (silu(x W_gate) * x W_up, Llama) or
    geglu (gelu_tanh(x W_gate) * x W_up, Gemma)."""
    pos_encoding: str = "learned"
    """learned (absolute position embedding, GPT-2) or rope (rotary on q and k, Su et al. 2021; Llama)."""
    rope_theta: float = 10_000.0
    """RoPE base: frequencies theta^(-2i/head_dim)."""
    rope_type: str = "default"
    """default, or llama3: Llama-3.1's frequency scaling (low frequencies / rope_factor, a smooth band between)."""
    rope_factor: float = 8.0
    """llama3 RoPE: how much the low frequencies are slowed (Llama-3.1: 8)."""
    rope_low_freq_factor: float = 1.0
    """llama3 RoPE: wavelengths above rope_original_max_len / this are fully scaled."""
    rope_high_freq_factor: float = 4.0
    """llama3 RoPE: wavelengths below rope_original_max_len / this are kept."""
    rope_original_max_len: int = 8192
    """llama3 RoPE: the context length the parent was pretrained at before scaling."""
    head_dim: int | None = None
    """Width of one attention head; None means d_model // n_heads (Qwen3 sets it apart from d_model)."""
    embed_scale: float = 1.0
    """Token embeddings are multiplied by this before the first block (Gemma: sqrt(d_model)); 1 = off."""
    qk_norm: bool = False
    """RMSNorm over each head's queries and keys before RoPE (Qwen3's q_norm / k_norm)."""
    n_kv_heads: int | None = None
    """Key/value heads (grouped-query attention, Ainslie et al. 2023); None means n_heads; must divide n_heads."""
    tie_embeddings: bool = True
    """Output projection shares the token embedding matrix."""
    dropout: float = 0.0
    """Dropout on attention weights and residual branches."""
    norm_eps: float = 1e-5
    """LayerNorm / RMSNorm epsilon."""
    init_std: float = 0.02
    """Std of the normal init; residual output projections use init_std / sqrt(2 * n_layers)."""
    activation_checkpointing: bool = False
    """Recompute each block's activations in backward instead of storing them."""

    LEGACY_KEYS: ClassVar[dict[str, str]] = {"attn_head_dim": "head_dim"}
    """Keys that older config.json files (run folders, checkpoints, exports) wrote, and the field each is now
    (`overrides.from_dict` reads them)."""

    def validate(self) -> "ModelConfig":
        validate_model(self)
        return self

    @property
    def gated_mlp(self) -> bool:
        """swiglu or geglu: fc1 holds the gate and up halves."""
        return self.mlp in ("swiglu", "geglu")

    def resolve(self, objective: str, self_conditioning: bool = False) -> "ModelConfig":
        """Every `None` field filled, the one place: the widths (d_ff = 4 d_model, embed_dim = d_model,
        head_dim = d_model // n_heads, n_kv_heads = n_heads, qkv_bias = bias) and what the objective decides
        (time_conditioning, causal, self_cond_input). `Backbone` refuses a ModelConfig with a None left."""
        need = BACKBONE_NEEDS.get(objective, BACKBONE_NEEDS["masked"])  # an unknown name: validation names it
        default = {
            "d_ff": 4 * self.d_model, "embed_dim": self.d_model, "n_kv_heads": self.n_heads, "qkv_bias": self.bias,
            "head_dim": self.d_model // self.n_heads if self.n_heads else None,  # n_heads 0: validation names it
            "time_conditioning": need["time_conditioning"], "causal": need["causal"],
            "self_cond_input": need["self_cond"] and self_conditioning,
        }
        return replace(self, **{name: value for name, value in default.items() if getattr(self, name) is None})


@dataclass(frozen=True)
class DiffusionConfig:
    """The objective: what the forward process is and what the model predicts."""

    objective: str = "continuous"
    """One of continuous (Gaussian diffusion on embeddings), masked (absorbing state), ar (next token),
    block (BD3-LM block diffusion: blocks left to right, masked diffusion inside each)."""
    schedule: str = "sqrt"
    """Continuous noise schedule: linear, cosine, or sqrt (Diffusion-LM)."""
    num_timesteps: int = 1000
    """T, steps of the discrete forward chain used in training (continuous)."""
    prediction: str = "x0"
    """What the continuous model outputs: eps, v or x0."""
    embed_norm: bool = True
    """L2-normalise token embeddings and scale them by sqrt(embed_dim) (Plaid/CDCD; bench/continuous_recipe.py)."""
    self_conditioning: bool = True
    """Feed the previous x0 estimate back as input (continuous, Chen et al. 2022)."""
    rounding_weight: float = 1.0
    """Weight of the rounding cross-entropy in the continuous loss (continuous_loss=mse)."""
    continuous_loss: str = "ce"
    """Continuous: mse (Diffusion-LM: MSE + rounding CE + prior KL) or ce (CDCD: token logits trained with cross-entropy,
    x0_hat = softmax @ embeddings, score interpolation; needs prediction=x0). See diffusion/continuous.py."""
    own_evidence: bool = True
    """ce: add each position's exact evidence log q(x_t,i | w) to its logits: p(w_i | x_t) = p(w_i | x_t,-i) q(x_t,i | w_i)/Z
    (x_t,i depends on the rest only through w_i), so the network models the context's part only."""
    time_warping: bool = True
    """Continuous: CDCD's time warping (Sec. 6.1): training t drawn where the loss rises fastest (diffusion/time_warp.py)."""
    mask_schedule: str = "linear"
    """Masked diffusion: linear (alpha_t = 1 - t) or loglinear."""
    masked_loss: str = "elbo"
    """Masked training loss: elbo (MDLM Eq. 10) or masked_mean (each row's mean CE over its masked tokens: lower
    variance at small t). Evaluation and val/loss always report the ELBO."""
    t_min: float = 1e-3
    """Masked: smallest t sampled in training (avoids the 1/t singularity); the continuous chain does not use it."""
    low_discrepancy: bool = True
    """Stratified (low-discrepancy) timestep sampling across the batch."""
    block_size: int = 4
    """Block: tokens per block (a divisor of data.seq_len); 1 is autoregressive, seq_len is masked diffusion."""
    t_clip: tuple[float, float] = (0.0, 1.0)
    """Block: training draws each block's masking rate 1 - alpha_t from [low, high] (BD3-LM's clipped schedule,
    Arriola et al. 2025 Sec. 5.2: lower gradient variance); evaluation always integrates the whole [t_min, 1]."""
    shift_logits: bool = False
    """Masked: keep the AR parent's shift (RND1; dllm's right_shift_logits): the token at position i is scored
    by the logits at position i - 1 (position 0, having no left neighbour, by its own); training and sampling alike."""

    def validate(self, model: ModelConfig) -> "DiffusionConfig":
        validate_diffusion(self, model)
        return self


@dataclass(frozen=True)
class DataConfig:
    """Where text comes from and how it becomes fixed-length sequences."""

    source: str = "shakespeare"
    """shakespeare (embedded, offline), fineweb[:CONFIG], fineweb-edu[:CONFIG], or a local path/glob."""
    tokenizer: str = "bpe"
    """bpe (byte-level BPE trained offline on the embedded corpus), or an HF tokenizer name or folder."""
    bpe_vocab_size: int = 4096
    """Vocabulary of the offline BPE, special tokens included."""
    seq_len: int = 256
    """Tokens per packed training sequence."""
    micro_batch_size: int = 8
    """Sequences per device per forward pass."""
    num_workers: int = 0
    """DataLoader worker processes."""
    shuffle_buffer: int = 1000
    """Documents in the streaming shuffle buffer (0 disables shuffling)."""
    cross_document_attention: bool = True
    """Let attention cross the EOS between packed documents; False masks it block-diagonally."""
    random_length_fraction: float = 0.0
    """Fraction of sequences cut to a random shorter length (LLaDA uses 0.01)."""
    curriculum_steps: int = 0
    """Grow sequence length from curriculum_start_len to seq_len over this many steps (0: off)."""
    curriculum_start_len: int = 64
    """Sequence length at step 0 of the curriculum."""
    val_fraction: float = 0.05
    """Fraction of documents held out for validation (deterministic by document)."""
    text_field: str = "text"
    """Field holding the text in JSON/JSONL/parquet sources."""
    read_retries: int = 5
    """Retries of a read that fails mid-stream (file gone, connection dropped) before training stops."""
    retry_backoff_s: float = 1.0
    """Sleep before the first retry; doubles for each further one (capped at 60 s)."""

    def validate(self, model: ModelConfig) -> "DataConfig":
        validate_data(self, model)
        return self


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, precision and distribution."""

    max_steps: int = 1000
    """Optimizer steps."""
    lr: float = 3e-4
    """Peak learning rate."""
    min_lr_ratio: float = 0.1
    """Final LR as a fraction of the peak."""
    warmup_steps: int = 100
    """Linear warmup steps."""
    decay: str = "cosine"
    """LR decay after warmup: cosine, linear or constant."""
    weight_decay: float = 0.1
    """AdamW weight decay (not applied to norms, biases, embeddings)."""
    beta1: float = 0.9
    """AdamW beta1."""
    beta2: float = 0.95
    """AdamW beta2."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0: off)."""
    global_batch_size: int = 0
    """Sequences per optimizer step over all devices and nodes; the accumulation is derived from it
    (global / (micro_batch_size x devices x nodes)). 0: use accumulate_grad_batches as given."""
    accumulate_grad_batches: int = 1
    """Micro-batches per optimizer step (leave at 1 when global_batch_size is set: it is derived)."""
    nan_policy: str = "stop"
    """Non-finite loss: stop (naming the step and the last good checkpoint) or skip that optimizer step (weights unchanged)."""
    max_nan_skips: int = 10
    """nan_policy='skip': stop once more than this many optimizer steps in a row were skipped."""
    precision: str = "auto"
    """auto (bf16-mixed on GPUs that support it, fp32 on CPU), 32-true, bf16-mixed, bf16-true, 16-mixed."""
    strategy: str = "auto"
    """auto, single, ddp, or fsdp (FSDP2 fully_shard per block)."""
    devices: int = 1
    """Devices (GPUs, or CPU processes) per node."""
    num_nodes: int = 1
    """Nodes."""
    cpu_offload: bool = False
    """FSDP: keep parameters and optimizer state on CPU."""
    compile: bool | None = None
    """torch.compile each transformer block: true, false, or auto (null in config.json): on with CUDA; on CPU when
    max_steps exceeds the measured compile break-even (`train.module.CPU_COMPILE_BREAK_EVEN_STEPS`)."""
    requeue: bool = False
    """In a SLURM job: after SIGUSR1's checkpoint, `scontrol requeue` the job (sbatch --signal=USR1@90 --requeue)."""
    ema_decay: float = 0.0
    """EMA of weights for evaluation and sampling (0: off)."""
    lr_mult_attn: float = 1.0
    """Layer-wise LR multiplier for attention weights (RND1)."""
    lr_mult_mlp: float = 1.0
    """Layer-wise LR multiplier for MLP weights (RND1)."""
    lr_mult_embed: float = 1.0
    """Layer-wise LR multiplier for embeddings."""
    lr_mult_norm: float = 1.0
    """Layer-wise LR multiplier for norms."""
    lr_mult_time: float = 1.0
    """Layer-wise LR multiplier for the time MLP and adaLN."""
    lr_depth_decay: float = 1.0
    """Multiply block i's LR by decay ** (n_layers - 1 - i) (1.0: off)."""
    log_every: int = 10
    """Log metrics every N steps."""
    val_every: int = 200
    """Validate every N steps."""
    val_batches: int = 20
    """Batches per validation."""
    ckpt_every: int = 200
    """Save `last` every N steps."""
    keep_best: int = 3
    """Keep the k checkpoints with the best validation loss (0: only `last`)."""
    sample_every: int = 0
    """Write a few samples to the run folder every N steps (0: off)."""
    tensorboard: bool = True
    """Log to TensorBoard (CSV metrics and the text log are always written)."""
    wandb: bool = False
    """Also log to Weights & Biases (WANDB_MODE=offline works without an account)."""
    init_from: str | None = None
    """Exported model folder (`sunfish convert` output or a run's export/) whose weights start training; None: random init."""

    def validate(self) -> "TrainConfig":
        validate_train(self)
        return self


@dataclass(frozen=True)
class SampleConfig:
    """Generation settings (the sampler names depend on the objective)."""

    sampler: str = "ddim"
    """continuous: ddpm, ddim; masked: ancestral, low_confidence (top probability), random, threshold, margin
    (top-probability margin, Kim et al. 2025); ar: ar."""
    steps: int = 50
    """Reverse steps (continuous: <= num_timesteps)."""
    eta: float = 0.0
    """DDIM stochasticity (0: deterministic, 1: DDPM marginals)."""
    temperature: float = 1.0
    """Softmax temperature (0: greedy argmax); continuous CE (CDCD) models: of p(w | x_t) in score interpolation."""
    top_k: int = 0
    """Discrete sampling (masked, ar): keep the k most likely tokens (0: off)."""
    top_p: float = 1.0
    """Discrete sampling (masked, ar): nucleus sampling mass (1.0: off)."""
    length: int = 64
    """Tokens per unconditional sample."""
    num_samples: int = 4
    """Samples per call."""
    mask_length: int = 8
    """Tokens per [MASK] span in infilling."""
    clamp: bool = False
    """Continuous: snap predicted x0 to the nearest embedding each step (Diffusion-LM clamping trick)."""
    rounding: str = "auto"
    """Continuous: nearest-embedding rule for clamping and final rounding: euclidean (what the rounding CE trains),
    cosine, or auto = euclidean, cosine only with diffusion.embed_norm (equal norms: the two agree)."""
    block_length: int = 0
    """Masked: semi-autoregressive block size (0: one block)."""
    threshold: float = 0.9
    """Masked threshold sampler: commit positions whose confidence exceeds this."""
    cfg_scale: float = 0.0
    """Masked: classifier-free guidance scale (0: off)."""
    allow_eos: bool = False
    """Let samples contain EOS (variable-length generation); off: EOS, like [MASK] and [PAD], never appears."""
    cache: str = "none"
    """Masked low_confidence/random/threshold: Fast-dLLM's approximate KV cache, refreshed per block: none, prefix (prompt and committed blocks) or dual (the suffix too)."""
    remask: float = 0.0
    """Masked low_confidence/random/margin: ReMDM-style remasking, the chance per step that a committed generated token is masked again (0: off)."""

    def validate(self, diffusion: DiffusionConfig, model: ModelConfig) -> "SampleConfig":
        validate_sample(self, diffusion, model)
        return self


@dataclass(frozen=True)
class Config:
    """A whole run: everything needed to rebuild it."""

    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    seed: int = 0
    """One seed for torch, data order and sampling."""
    preset: str = "custom"
    """Name of the preset this config started from (informational)."""

    # -- derived ---------------------------------------------------------------
    @property
    def resolved_model(self) -> ModelConfig:
        """ModelConfig with objective-dependent fields filled in (what gets built)."""
        return self.model.resolve(self.diffusion.objective, self.diffusion.self_conditioning)

    @property
    def accumulation(self) -> int:
        """Micro-batches per optimizer step on each device: derived from train.global_batch_size when set."""
        t = self.train
        return accumulation_for(t.global_batch_size, self.data.micro_batch_size * t.devices * t.num_nodes,
                                t.accumulate_grad_batches)

    @property
    def sequences_per_step(self) -> int:
        """Sequences per optimizer step over all devices and nodes."""
        return self.data.micro_batch_size * self.accumulation * self.train.devices * self.train.num_nodes

    @property
    def tokens_per_step(self) -> int:
        """Tokens per optimizer step (at the full sequence length)."""
        return self.sequences_per_step * self.data.seq_len

    def resolve_batch(self) -> "Config":
        """Copy with train.accumulate_grad_batches set to the derived accumulation (what the trainer runs)."""
        return replace(self, train=replace(self.train, accumulate_grad_batches=self.accumulation))

    # -- serialisation ---------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self, **kw: Any) -> str:
        return json.dumps(self.to_dict(), indent=kw.pop("indent", 2), sort_keys=True, **kw)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Config":
        """Rebuild a Config from `to_dict()` output; unknown keys are errors.

        An export's Hugging Face config.json (model_type "sunfish") adds keys for `transformers`
        (auto_map, resolved_model, ...); only the Config's own sections are read from it.
        """
        if isinstance(d, Mapping) and d.get("model_type") == "sunfish":
            d = {k: v for k, v in d.items() if k in {f.name for f in fields(cls)}}
        return from_dict(cls, d)

    @classmethod
    def from_json(cls, text: str) -> "Config":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise ConfigError(f"config JSON is not valid JSON ({e.msg} at line {e.lineno}); fix or regenerate it") from None

    def save(self, path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls, path) -> "Config":
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist; pass a run folder's config.json")
        return cls.from_json(p.read_text())

    # -- overrides ---------------------------------------------------------------
    def override(self, overrides: Mapping[str, Any] | None = None, **kw: Any) -> "Config":
        """Return a copy with dotted or bare keys replaced; string values are parsed by field type."""
        items = dict(overrides or {})
        items.update(kw)
        cfg = self
        for key, value in items.items():
            cfg = set_key(cfg, key, value)
        # choosing only an objective brings its default sampler (ddim cannot sample a masked model)
        objective = cfg.diffusion.objective
        if objective != self.diffusion.objective and objective in DEFAULT_SAMPLERS \
                and not any(k.split(".")[-1] == "sampler" for k in items):
            cfg = set_key(cfg, "sample.sampler", DEFAULT_SAMPLERS[objective])
        return cfg

    def validate(self) -> "Config":
        """Raise ConfigError naming the first impossible field or combination; return self.

        Each section checks itself, then the checks across sections (`validation.py`)."""
        self.model.validate()
        self.diffusion.validate(self.model)
        self.data.validate(self.model)
        self.train.validate()
        self.sample.validate(self.diffusion, self.model)
        validate_run(self)
        return self


# -- presets ---------------------------------------------------------------------

def _preset(model: dict, data: dict, train: dict, name: str) -> Config:
    """Every preset uses rotary positions unless it says otherwise (MDLM, LLaDA and Llama do; masked
    diffusion with learned positions stays on the unigram plateau at tiny scale)."""
    return Config(
        model=ModelConfig(**{"pos_encoding": "rope", **model}),
        data=DataConfig(**data),
        train=TrainConfig(**train),
        preset=name,
    )


PRESETS: dict[str, Config] = {
    # A laptop CPU in minutes, embedded corpus, offline BPE. bench/tiny_recipe.py's best held-out bits/byte (README,
    # "What to expect on a CPU"): 64-token rows let a bidirectional model find its neighbours sooner than 128.
    "tiny": _preset(
        dict(vocab_size=1024, n_layers=4, n_heads=4, d_model=128, max_seq_len=256),
        dict(source="shakespeare", tokenizer="bpe", bpe_vocab_size=1024, seq_len=64, micro_batch_size=32),
        dict(max_steps=1500, lr=2e-3, warmup_steps=50, weight_decay=0.0, log_every=10, val_every=100, ckpt_every=100),
        "tiny",
    ),
    # GPT-2 small shape, GPT-2 tokenizer (50257 + [MASK], padded to 50304), FineWeb.
    "125M": _preset(
        dict(vocab_size=50304, n_layers=12, n_heads=12, d_model=768, max_seq_len=1024),
        dict(source="fineweb:sample-10BT", tokenizer="gpt2", seq_len=1024, micro_batch_size=16),
        dict(max_steps=100_000, lr=6e-4, warmup_steps=2000, global_batch_size=128),
        "125M",
    ),
    "350M": _preset(
        dict(vocab_size=50304, n_layers=24, n_heads=16, d_model=1024, max_seq_len=1024),
        dict(source="fineweb:sample-10BT", tokenizer="gpt2", seq_len=1024, micro_batch_size=8),
        dict(max_steps=100_000, lr=3e-4, warmup_steps=5000, global_batch_size=128),
        "350M",
    ),
    # The seed's production model: global batch 256 x 2048 tokens on any device count (accumulate 64 on one GPU, 8 on 8).
    "1.4B": _preset(
        dict(vocab_size=50304, n_layers=24, n_heads=16, d_model=2048, max_seq_len=2048),
        dict(source="fineweb:sample-10BT", tokenizer="gpt2", seq_len=2048, micro_batch_size=4),
        dict(max_steps=200_000, lr=2e-4, warmup_steps=10_000, global_batch_size=256),
        "1.4B",
    ),
}
# Seconds on a CPU (tests, smoke runs, `recipe_config(smoke=True)`): tiny's data at 2 layers x 64, 4 x 32 tokens, 8 steps.
PRESETS["smoke"] = replace(PRESETS["tiny"].override({
    "n_layers": 2, "d_model": 64, "n_heads": 2, "seq_len": 32, "micro_batch_size": 4, "max_steps": 8, "warmup_steps": 1,
    "log_every": 2, "val_every": 4, "ckpt_every": 4, "val_batches": 2, "tensorboard": False}), preset="smoke")


def get_config(preset: str = "tiny", overrides: Mapping[str, Any] | None = None, **kw: Any) -> Config:
    """The named preset with overrides applied and the short-run rules (`short_run_rules`), validated."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    items = {**dict(overrides or {}), **kw}
    return short_run_rules(PRESETS[preset].override(items), items).validate()
