"""Config validation: the allowed values, and one-line errors naming the field, the value given and what is allowed.

Each section of `config` validates itself (`ModelConfig.validate()` calls `validate_model`, ...);
`Config.validate()` runs them and then `validate_run`, the checks across sections. This module
imports no config (the sections arrive as arguments), so `config` builds on it without a cycle.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sunfish_lib.errors import ConfigError

OBJECTIVES = ("continuous", "masked", "ar", "block")
NOISE_SCHEDULES = ("linear", "cosine", "sqrt")
MASK_SCHEDULES = ("linear", "loglinear")
MASKED_LOSSES = ("elbo", "masked_mean")
PREDICTIONS = ("eps", "v", "x0")
CONTINUOUS_LOSSES = ("mse", "ce")
PRECISIONS = ("auto", "32-true", "bf16-mixed", "bf16-true", "16-mixed")
STRATEGIES = ("auto", "single", "ddp", "fsdp")
LR_DECAYS = ("cosine", "linear", "constant")
NAN_POLICIES = ("stop", "skip")
ROUNDINGS = ("auto", "cosine", "euclidean")
CACHES = ("none", "prefix", "dual")
NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "swiglu", "geglu")
POS_ENCODINGS = ("learned", "rope")
SAMPLERS = {
    "continuous": ("ddpm", "ddim"),
    "masked": ("ancestral", "low_confidence", "random", "threshold", "margin"),
    "ar": ("ar",),
    "block": ("ancestral", "low_confidence", "random", "threshold"),
}
CHOICES = {
    "model.norm": NORMS, "model.mlp": MLPS, "model.pos_encoding": POS_ENCODINGS, "model.rope_type": ("default", "llama3"),
    "diffusion.objective": OBJECTIVES, "diffusion.schedule": NOISE_SCHEDULES, "diffusion.mask_schedule": MASK_SCHEDULES,
    "diffusion.masked_loss": MASKED_LOSSES, "diffusion.prediction": PREDICTIONS,
    "diffusion.continuous_loss": CONTINUOUS_LOSSES,
    "train.decay": LR_DECAYS, "train.nan_policy": NAN_POLICIES, "train.precision": PRECISIONS, "train.strategy": STRATEGIES,
    "sample.rounding": ROUNDINGS, "sample.cache": CACHES,
}
"""Config key -> its allowed values: the one map the section checks below and the notebooks' `config:KEY`
parameter rules (`notebook_params`) both read."""
DTYPE_NAMES = ("float32", "bfloat16", "float16")
"""Inference dtypes of the weights (`devices.resolve_dtype`), named here so the CLI parser needs no torch."""
DEVICE_HELP = "cuda, cuda:N, mps or cpu (default: the best available: CUDA, then MPS, then CPU)"
BACKBONE_NEEDS = {
    "continuous": {"time_conditioning": True, "causal": False, "self_cond": True},
    "masked": {"time_conditioning": False, "causal": False, "self_cond": False},
    "ar": {"time_conditioning": False, "causal": True, "self_cond": False},
    "block": {"time_conditioning": False, "causal": False, "self_cond": False},
}
"""What each objective's backbone is built with where the model section leaves it None (`ModelConfig.resolve`,
the one place): the timestep pathway, the causal mask, and whether self_cond_input follows
diffusion.self_conditioning (self_cond) or stays off. Each objective class exposes its row (`backbone_needs`)."""
DEFAULT_SAMPLERS = {"continuous": "ddim", "masked": "ancestral", "ar": "ar", "block": "ancestral"}
"""The sampler a run gets when only its objective is chosen. Masked: ancestral (MDLM's reverse process, which
draws from the model's own distribution); confidence-ordered decoding (low_confidence, threshold) trades sample
entropy for speed and stays one setting away (measured in bench/sampling_masked.py)."""



def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _one_of(name: str, value: Any) -> None:
    allowed = CHOICES[name]
    _check(value in allowed, f"{name}={value!r} is not allowed; choose one of {', '.join(map(str, allowed))}")


def _positive(name: str, value: Any) -> None:
    _check(value > 0, f"{name}={value!r} must be > 0")


def _fraction(name: str, value: float, hi_open: bool = False) -> None:
    ok = 0.0 <= value < 1.0 if hi_open else 0.0 <= value <= 1.0
    _check(ok, f"{name}={value!r} must be in [0, 1{')' if hi_open else ']'}")


def _validate_architecture(m) -> None:
    """The options that make GPT-2 and Llama-family models representable (sunfish_lib/convert.py)."""
    _one_of("model.norm", m.norm)
    _one_of("model.mlp", m.mlp)
    _one_of("model.pos_encoding", m.pos_encoding)
    _positive("model.rope_theta", m.rope_theta)
    _one_of("model.rope_type", m.rope_type)
    if m.rope_type == "llama3":
        for name in ("rope_factor", "rope_low_freq_factor", "rope_original_max_len"):
            _positive(f"model.{name}", getattr(m, name))
        _check(m.rope_high_freq_factor > m.rope_low_freq_factor, f"model.rope_high_freq_factor="
               f"{m.rope_high_freq_factor} must exceed model.rope_low_freq_factor={m.rope_low_freq_factor}")
    _positive("model.embed_scale", m.embed_scale)
    if m.head_dim is not None:
        _positive("model.head_dim", m.head_dim)
    if m.pos_encoding == "rope":
        hd = m.resolve("masked").head_dim  # the widths do not depend on the objective
        _check(hd % 2 == 0, f"model.pos_encoding='rope' needs an even head dim; d_model/n_heads = {hd}")
    if m.n_kv_heads is not None:
        _positive("model.n_kv_heads", m.n_kv_heads)
        _check(m.n_heads % m.n_kv_heads == 0,
               f"model.n_kv_heads={m.n_kv_heads} must divide model.n_heads={m.n_heads} (grouped-query attention)")


def validate_run(cfg) -> None:
    """The checks across sections of a Config (each section has checked itself)."""
    _check(0 <= cfg.seed < 2**32, f"seed={cfg.seed} must be in [0, 2**32 - 1] (the range numpy and torch seed from)")
    # Continuous x_t shows no token, so clean-x0 document ids would leak every boundary into the denoiser.
    _check(cfg.diffusion.objective != "continuous" or cfg.data.cross_document_attention,
           "data.cross_document_attention=False does not combine with objective 'continuous' (its noisy input "
           "shows no EOS, so the document mask would leak x0); set it to true")
    if cfg.diffusion.objective == "block":
        _check(cfg.data.cross_document_attention, "data.cross_document_attention=False does not combine with objective "
               "'block' (its attention is the BD3-LM block mask); set it to true")
        _check(cfg.data.seq_len % cfg.diffusion.block_size == 0,
               f"diffusion.block_size={cfg.diffusion.block_size} does not divide data.seq_len={cfg.data.seq_len}; "
               "pick a divisor of seq_len")
    _validate_global_batch(cfg)


def validate_model(m) -> None:
    """Shapes and init of the backbone."""
    for name in ("vocab_size", "n_layers", "n_heads", "d_model", "max_seq_len", "time_freq_dim"):
        _positive(f"model.{name}", getattr(m, name))
    _check(m.head_dim is not None or m.d_model % m.n_heads == 0,
           f"model.d_model={m.d_model} is not divisible by model.n_heads={m.n_heads}; pick heads that divide it")
    _check(m.time_freq_dim % 2 == 0, f"model.time_freq_dim={m.time_freq_dim} must be even")
    if m.d_ff is not None:
        _positive("model.d_ff", m.d_ff)
    if m.embed_dim is not None:
        _positive("model.embed_dim", m.embed_dim)
    _validate_architecture(m)
    _fraction("model.dropout", m.dropout, hi_open=True)
    _positive("model.norm_eps", m.norm_eps)
    _positive("model.init_std", m.init_std)


def validate_diffusion(d, m) -> None:
    """The objective and its fit with the model."""
    _one_of("diffusion.objective", d.objective)
    _one_of("diffusion.schedule", d.schedule)
    _one_of("diffusion.mask_schedule", d.mask_schedule)
    _one_of("diffusion.masked_loss", d.masked_loss)
    _one_of("diffusion.prediction", d.prediction)
    _one_of("diffusion.continuous_loss", d.continuous_loss)
    _check(d.continuous_loss != "ce" or d.prediction == "x0",
           f"diffusion.continuous_loss='ce' predicts x0 by score interpolation, not {d.prediction!r}; set prediction=x0")
    _positive("diffusion.num_timesteps", d.num_timesteps)
    _check(0.0 < d.t_min < 1.0, f"diffusion.t_min={d.t_min!r} must be in (0, 1)")
    _check(d.rounding_weight >= 0, f"diffusion.rounding_weight={d.rounding_weight!r} must be >= 0")
    if d.objective == "continuous":
        _check(m.time_conditioning is not False,
               "model.time_conditioning=False but objective 'continuous' needs the timestep; set it to true or null")
        _check(not d.self_conditioning or m.self_cond_input is not False,
               "model.self_cond_input=False but diffusion.self_conditioning=True needs it; set it to true or null")
    _check(not d.shift_logits or d.objective in ("masked", "block"),
           f"diffusion.shift_logits=True applies to the masked and block objectives, not {d.objective!r}; set it to false")
    _validate_block(d, m)
    if d.objective == "ar":
        _check(m.causal is not False, "model.causal=False but objective 'ar' needs causal attention; set it to true or null")
    elif m.causal:
        _check(False, f"model.causal=True but objective {d.objective!r} is bidirectional; set it to false or null")


def _validate_block(d, m) -> None:
    """Block diffusion (BD3-LM): block size, the clipped schedule, and no per-row time pathway."""
    _check(d.block_size >= 1, f"diffusion.block_size={d.block_size!r} must be >= 1 (1: autoregressive, seq_len: masked)")
    lo, hi = d.t_clip
    _check(0.0 <= lo < hi <= 1.0, f"diffusion.t_clip={list(d.t_clip)!r} must be [low, high] with 0 <= low < high <= 1")
    if d.objective == "block":
        _check(m.time_conditioning is not True, "model.time_conditioning=True does not combine with objective 'block' "
               "(each block has its own t, the time pathway one per row); set it to false or null")


def validate_data(da, m) -> None:
    """Data source, packing and tokenizer limits."""
    _positive("data.seq_len", da.seq_len)
    _check(da.seq_len <= m.max_seq_len,
           f"data.seq_len={da.seq_len} exceeds model.max_seq_len={m.max_seq_len}; lower seq_len or raise max_seq_len")
    _positive("data.micro_batch_size", da.micro_batch_size)
    _positive("data.bpe_vocab_size", da.bpe_vocab_size)
    _check(da.bpe_vocab_size >= 260, f"data.bpe_vocab_size={da.bpe_vocab_size} must be >= 260 (256 bytes + specials)")
    _check(da.num_workers >= 0, f"data.num_workers={da.num_workers} must be >= 0")
    _check(da.shuffle_buffer >= 0, f"data.shuffle_buffer={da.shuffle_buffer} must be >= 0")
    _check(da.read_retries >= 0, f"data.read_retries={da.read_retries} must be >= 0 (0: fail at the first error)")
    _check(0 <= da.retry_backoff_s <= 3600,
           f"data.retry_backoff_s={da.retry_backoff_s!r} must be in [0, 3600] seconds")
    _check(bool(da.source.strip()), "data.source is empty; use shakespeare, fineweb[:CONFIG] or a path")
    _fraction("data.random_length_fraction", da.random_length_fraction)
    _fraction("data.val_fraction", da.val_fraction, hi_open=True)
    _check(da.curriculum_steps >= 0, f"data.curriculum_steps={da.curriculum_steps} must be >= 0")
    if da.curriculum_steps:
        _check(0 < da.curriculum_start_len <= da.seq_len,
               f"data.curriculum_start_len={da.curriculum_start_len} must be in [1, data.seq_len={da.seq_len}]")
    if da.tokenizer == "bpe":
        _check(da.bpe_vocab_size <= m.vocab_size,
               f"data.bpe_vocab_size={da.bpe_vocab_size} exceeds model.vocab_size={m.vocab_size}; raise vocab_size")


def validate_train(t) -> None:
    """Optimisation, precision and distribution."""
    _positive("train.max_steps", t.max_steps)
    _positive("train.lr", t.lr)
    _check(t.warmup_steps >= 0, f"train.warmup_steps={t.warmup_steps} must be >= 0")
    _check(t.warmup_steps <= t.max_steps,
           f"train.warmup_steps={t.warmup_steps} is longer than train.max_steps={t.max_steps}; shorten warmup")
    _fraction("train.min_lr_ratio", t.min_lr_ratio)
    _one_of("train.decay", t.decay)
    _check(t.weight_decay >= 0, f"train.weight_decay={t.weight_decay} must be >= 0")
    _fraction("train.beta1", t.beta1, hi_open=True)
    _fraction("train.beta2", t.beta2, hi_open=True)
    _check(t.init_from is None or bool(t.init_from.strip()),
           "train.init_from is empty; give an exported model folder or null")
    _check(t.grad_clip >= 0, f"train.grad_clip={t.grad_clip} must be >= 0 (0 disables clipping)")
    _positive("train.accumulate_grad_batches", t.accumulate_grad_batches)
    _one_of("train.nan_policy", t.nan_policy)
    _check(t.max_nan_skips >= 0, f"train.max_nan_skips={t.max_nan_skips} must be >= 0 (0: stop at the first)")
    _check(t.nan_policy != "skip" or t.precision != "16-mixed",
           "train.nan_policy='skip' does not combine with precision '16-mixed' (its loss scaler skips "
           "non-finite steps itself); use nan_policy='stop' or precision 'bf16-mixed'")
    _one_of("train.precision", t.precision)
    _one_of("train.strategy", t.strategy)
    _positive("train.devices", t.devices)
    _positive("train.num_nodes", t.num_nodes)
    _fraction("train.ema_decay", t.ema_decay, hi_open=True)
    for name in ("lr_mult_attn", "lr_mult_mlp", "lr_mult_embed", "lr_mult_norm", "lr_mult_time", "lr_depth_decay"):
        _check(getattr(t, name) >= 0, f"train.{name}={getattr(t, name)} must be >= 0")
    for name in ("log_every", "val_every", "val_batches", "ckpt_every"):
        _positive(f"train.{name}", getattr(t, name))
    for name in ("keep_best", "sample_every"):
        _check(getattr(t, name) >= 0, f"train.{name}={getattr(t, name)} must be >= 0")
    _check(not t.cpu_offload or t.strategy == "fsdp",
           f"train.cpu_offload=True needs train.strategy='fsdp' (got {t.strategy!r})")


def _validate_global_batch(cfg) -> None:
    """train.global_batch_size must split evenly into micro-batches on every device of every node."""
    t, micro = cfg.train, cfg.data.micro_batch_size
    _check(t.global_batch_size >= 0, f"train.global_batch_size={t.global_batch_size} must be >= 0 (0: off)")
    if not t.global_batch_size:
        return
    per_pass = micro * t.devices * t.num_nodes
    _check(t.global_batch_size % per_pass == 0,
           f"train.global_batch_size={t.global_batch_size} does not divide into data.micro_batch_size={micro} x "
           f"train.devices={t.devices} x train.num_nodes={t.num_nodes} = {per_pass} sequences per pass; "
           "pick a micro-batch or device count whose product divides it")
    _check(t.accumulate_grad_batches in (1, cfg.accumulation),
           f"train.accumulate_grad_batches={t.accumulate_grad_batches} contradicts train.global_batch_size="
           f"{t.global_batch_size} (which derives {cfg.accumulation}); leave it at 1 or set global_batch_size=0")


def validate_sample(s, d, m) -> None:
    """Sampler settings and their fit with the objective."""
    check_sampler_fits(s.sampler, d.objective)
    check_sample_ranges(num_timesteps=d.num_timesteps if d.objective == "continuous" else None,
                        max_seq_len=m.max_seq_len,
                        **{k: v for k, v in dataclasses.asdict(s).items() if k != "sampler"})
    _check(s.cfg_scale == 0 or d.objective == "masked",
           f"sample.cfg_scale={s.cfg_scale} applies to the masked samplers, not objective {d.objective!r}; set it to 0")


def check_sampler_fits(sampler: str, objective: str) -> None:
    """The sampler name is one the objective supports (`config.SAMPLERS`)."""
    allowed = SAMPLERS[objective]
    _check(sampler in allowed,
           f"sample.sampler={sampler!r} does not fit objective {objective!r}; choose one of {', '.join(allowed)}")


def check_sample_ranges(num_timesteps: int | None = None, max_seq_len: int | None = None, **fields) -> None:
    """The range rules of the given SampleConfig fields: the one copy (config validation and the samplers'
    constructors both call it). num_timesteps: the continuous chain `steps` may not exceed."""
    rules = {
        "steps": lambda v: _positive("sample.steps", v),
        "eta": lambda v: _check(v >= 0, f"sample.eta={v} must be >= 0"),
        "temperature": lambda v: _check(v >= 0, f"sample.temperature={v} must be >= 0 (0: greedy)"),
        "top_k": lambda v: _check(v >= 0, f"sample.top_k={v} must be >= 0 (0 disables)"),
        "top_p": lambda v: _check(0.0 < v <= 1.0, f"sample.top_p={v} must be in (0, 1]"),
        "length": lambda v: _positive("sample.length", v),
        "num_samples": lambda v: _positive("sample.num_samples", v),
        "mask_length": lambda v: _positive("sample.mask_length", v),
        "rounding": lambda v: _one_of("sample.rounding", v),
        "block_length": lambda v: _check(v >= 0, f"sample.block_length={v} must be >= 0 (0: one block)"),
        "threshold": lambda v: _check(0.0 < v <= 1.0, f"sample.threshold={v} must be in (0, 1]"),
        "cfg_scale": lambda v: _check(v >= 0, f"sample.cfg_scale={v} must be >= 0"),
        "allow_eos": lambda v: _check(isinstance(v, bool), f"sample.allow_eos={v!r} must be true or false"),
        "clamp": lambda v: _check(isinstance(v, bool), f"sample.clamp={v!r} must be true or false"),
        "cache": lambda v: _one_of("sample.cache", v),
        "remask": lambda v: _check(0.0 <= v < 1.0, f"sample.remask={v} must be in [0, 1) (0: off)"),
    }
    for name, value in fields.items():
        rules.get(name, lambda v: None)(value)
    if "steps" in fields and num_timesteps is not None:
        _check(fields["steps"] <= num_timesteps, f"sample.steps={fields['steps']} exceeds "
               f"diffusion.num_timesteps={num_timesteps}; use at most that many")
    if "length" in fields and max_seq_len is not None:
        _check(fields["length"] <= max_seq_len, f"sample.length={fields['length']} exceeds model.max_seq_len={max_seq_len}; "
               "lower sample.length or raise model.max_seq_len")
