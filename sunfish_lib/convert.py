"""Autoregressive checkpoint -> Sunfish diffusion backbone (RND1's simple continual pretraining).

RND1 (Radical Numerics 2025) turns a pretrained AR model into a masked diffusion LM by
(1) switching causal attention to bidirectional, (2) continuing pretraining with the
masked objective, (3) giving attention a higher and MLP a lower learning rate, which
keeps the parent's knowledge (`train.lr_mult_attn` / `lr_mult_mlp`). This module does
(1) and writes a folder that training starts from (`train.init_from`):

    DIR/model.safetensors, DIR/config.json, the tokenizer and remote code   (as `export_model` writes them)

Parents: a Hugging Face causal LM folder (`save_pretrained`) of the GPT-2 family or the
Llama family (RoPE, RMSNorm, SwiGLU, grouped-query attention, tied or untied embeddings:
Llama incl. Llama-3.x `rope_type: llama3` scaling, Mistral, Qwen2, Qwen3 with its q/k norms
and separate head_dim, Gemma v1 with GeGLU, sqrt(d)-scaled embeddings and 1 + w norm gains),
or a Sunfish run trained with the `ar` objective.

What changes besides the mask: a `[MASK]` (and `[PAD]`) token is added to the tokenizer
when missing; embedding rows past the parent's tokenizer start at the mean of its rows
(Hewitt 2021, "Initializing new word embeddings for pretrained language models"); with
time conditioning on, the adaLN pieces start at zero, an exact no-op. `check_logits`
proves the mapping: with the causal mask kept, the converted model's logits equal the
parent's. Transformers is imported inside functions only: the core needs only torch.
"""

from __future__ import annotations

import json
import pickle
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Mapping

import torch

from sunfish_lib.config import Config, DataConfig, DiffusionConfig, ModelConfig, SampleConfig
from sunfish_lib.errors import SunfishError

HF_FAMILIES = {"gpt2": "gpt2", "llama": "llama", "mistral": "llama", "qwen2": "llama", "qwen3": "llama", "gemma": "llama"}
"""HF `model_type` -> the weight layout it shares."""
OBJECTIVES = ("masked", "ar")
SAMPLER = {"masked": "low_confidence", "ar": "ar"}
TIME_KEYS = ("time_emb.", "time_mod.", "mod_table")
"""Parameters a converted model may lack in its parent: the time pathway (a no-op at init)."""


@dataclass
class Conversion:
    """What `convert` wrote and found."""

    out_dir: Path
    config: Config
    parent: str  # "gpt2", "llama" (Llama/Mistral/Qwen2) or "sunfish-ar"
    params: int
    added_tokens: dict[str, int]  # special tokens added to the tokenizer -> their ids
    parent_vocab: int  # rows of the parent's embedding
    check: dict | None = None  # `check_logits` result

    def summary(self) -> dict:
        return {"out_dir": str(self.out_dir), "parent": self.parent, "params": self.params,
                "vocab_size": self.config.model.vocab_size, "parent_vocab": self.parent_vocab,
                "added_tokens": self.added_tokens, "objective": self.config.diffusion.objective,
                "shift_logits": self.config.diffusion.shift_logits, "check": self.check,
                "model": asdict(self.config.model)}


# ----------------------------------------------------------------------------
# Loading a Hugging Face parent
# ----------------------------------------------------------------------------

def resolve_source(name: str) -> Path:
    """A local `save_pretrained` folder for `name`; a hub name that cannot be had offline fails in one line."""
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise SunfishError(f"--from {name}: the folder has no config.json; pass a `save_pretrained` folder "
                               "of a causal LM or a Sunfish ar run")
        return path
    if name.startswith((".", "/", "~")) or name.count("/") > 1:  # hub names are NAME or ORG/NAME (dots allowed)
        raise SunfishError(f"--from {name}: no such folder; pass a `save_pretrained` folder or a hub name")
    from transformers import AutoConfig

    from sunfish_lib.data.tokenizer import _hub_offline

    offline = "offline (HF_HUB_OFFLINE=1)" if _hub_offline() else None if _hub_reachable() else "unreachable"
    try:
        AutoConfig.from_pretrained(name, local_files_only=bool(offline))  # the local HF cache still counts
    except (OSError, ValueError) as e:
        why = f"the hub is {offline} and it is not cached" if offline \
            else f"it could not be fetched ({str(e).splitlines()[0][:160]})"
        raise SunfishError(
            f"--from {name!r} is not a local folder and {why}; where the hub is reachable run "
            f"`AutoModelForCausalLM.from_pretrained({name!r}).save_pretrained(DIR)` and the same for AutoTokenizer, "
            "then pass --from DIR") from None
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(name, local_files_only=bool(offline)))


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub's host takes a TCP connection within `timeout` s (DNS included): fail fast without network."""
    import os
    import socket
    import threading
    from urllib.parse import urlparse

    host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname or "huggingface.co"
    ok: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, 443), timeout=timeout).close()
            ok.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(ok)


@contextmanager
def quiet_transformers():
    """No progress bars and only errors from transformers inside (they clutter notebooks and logs)."""
    from transformers.utils import logging as hf_logging

    bars, level = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()
        hf_logging.set_verbosity(level)


def load_hf_parent(source: str | Path):
    """(HF causal LM in fp32, eval mode; its family) from a folder or a cached hub name."""
    from transformers import AutoConfig, AutoModelForCausalLM

    path = resolve_source(str(source))
    try:
        hf_cfg = AutoConfig.from_pretrained(str(path))
    except (OSError, ValueError) as e:  # unreadable or foreign config.json
        reason = str(e).strip().split("\n")[0][:160]
        raise SunfishError(f"--from {source}: config.json is not a readable Hugging Face config ({reason}); "
                           "pass a `save_pretrained` folder of a causal LM") from None
    family = HF_FAMILIES.get(hf_cfg.model_type)
    if family is None:
        raise SunfishError(f"--from {source}: model_type {hf_cfg.model_type!r} is not supported; "
                           f"convert handles {', '.join(HF_FAMILIES)}")
    why = _unsupported(hf_cfg, family)
    if why:  # before reading the weights
        raise SunfishError(f"this {hf_cfg.model_type} model cannot be converted exactly: {why}")
    with quiet_transformers():
        try:
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, weights_only=True)
        except (pickle.UnpicklingError, OSError, EOFError) as e:  # a .bin weights file is a pickle
            from sunfish_lib.train.ckpt_verify import load_error

            weights = next(iter(sorted(Path(path).glob("*.bin"))), Path(path))
            raise load_error(weights, e) from None
    return model.eval(), family


def _rope(c) -> tuple[float, str]:
    """(theta, rope type) from a transformers 5 `rope_parameters` dict or the older `rope_theta`/`rope_scaling`."""
    params = dict(getattr(c, "rope_parameters", None) or {})
    scaling = dict(getattr(c, "rope_scaling", None) or {})
    theta = params.get("rope_theta", getattr(c, "rope_theta", 10_000.0))
    kind = params.get("rope_type", scaling.get("rope_type", scaling.get("type", "default")))
    return float(theta), str(kind)


def _unsupported(c, family: str) -> str | None:
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
    why = _unsupported(c, family)
    if why:
        raise SunfishError(f"this {c.model_type} model cannot be converted exactly: {why}")
    if family == "gpt2":
        return ModelConfig(vocab_size=vocab_size, n_layers=c.n_layer, n_heads=c.n_head, d_model=c.n_embd,
                           d_ff=c.n_inner or 4 * c.n_embd, max_seq_len=c.n_positions, bias=True,
                           tie_embeddings=bool(getattr(c, "tie_word_embeddings", True)),
                           norm_eps=c.layer_norm_epsilon, dropout=0.0)
    attn_bias, mlp_bias = bool(getattr(c, "attention_bias", False)), bool(getattr(c, "mlp_bias", False))
    max_len = c.max_position_embeddings
    window = getattr(c, "sliding_window", None)
    if window and (c.model_type == "mistral" or getattr(c, "use_sliding_window", False)):
        max_len = min(max_len, window)  # within the window, sliding-window attention is full attention
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return ModelConfig(
        vocab_size=vocab_size, n_layers=c.num_hidden_layers, n_heads=c.num_attention_heads, d_model=c.hidden_size,
        d_ff=c.intermediate_size, max_seq_len=max_len, n_kv_heads=c.num_key_value_heads,
        attn_head_dim=None if head_dim * c.num_attention_heads == c.hidden_size else head_dim,
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
    from sunfish_lib.model import Backbone

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
    from sunfish_lib.model import Backbone

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

@dataclass
class _Parent:
    kind: str
    model: ModelConfig  # unresolved: causal and time_conditioning follow the objective
    mapped: dict[str, torch.Tensor]
    n_keep: int  # leading vocabulary rows kept as they are (the parent's tokenizer's)
    vocab: int  # rows of the parent's embedding
    tokenizer: Any
    logits: Any  # tokens (B, T) -> the parent's logits (B, T, V)
    data: DataConfig | None = None  # the parent's data settings (Sunfish parents)
    added: dict[str, int] | None = None


def _round_up(n: int, k: int = 64) -> int:
    return -(-n // k) * k


def _hf_tokenizer(path: Path, tokenizer: str | None):
    """(SunfishTokenizer with EOS/[MASK]/[PAD] added where missing, length of the parent's own tokenizer)."""
    from transformers import AutoTokenizer

    from sunfish_lib.data.tokenizer import get_tokenizer

    name = tokenizer or str(path)
    files = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
    missing = Path(name).is_dir() and not any((Path(name) / f).is_file() for f in files)
    try:
        n_orig = None if missing else len(AutoTokenizer.from_pretrained(name))
    except (OSError, ValueError, TypeError, KeyError):
        n_orig = None
    if n_orig is None:  # transformers 5 even builds an empty tokenizer for a folder without one
        raise SunfishError(f"no tokenizer could be loaded from {name}; pass --tokenizer NAME_OR_DIR "
                           "(the parent's tokenizer, e.g. its save_pretrained folder)")
    return get_tokenizer(name), n_orig


def _hf_parent(source: str | Path, tokenizer: str | None) -> _Parent:
    hf, family = load_hf_parent(source)
    tok, n_orig = _hf_tokenizer(resolve_source(str(source)), tokenizer)
    V = hf.config.vocab_size
    mcfg = model_config_from_hf(hf.config, family, _round_up(max(V, len(tok))))
    mapper = _gpt2_weights if family == "gpt2" else _llama_weights
    extra = {"norm_offset": 1.0} if hf.config.model_type == "gemma" else {}
    mapped = mapper(hf.state_dict(), mcfg.n_layers, mcfg.tie_embeddings, **extra)
    specials = {s: tok.backend.token_to_id(s) for s in (tok.eos_token, tok.mask_token, tok.pad_token)}
    return _Parent(family, mcfg, mapped, min(n_orig, V), V, tok, lambda ids: hf(input_ids=ids).logits,
                   added={s: i for s, i in specials.items() if i >= n_orig})


def _sunfish_parent(source: str | Path) -> _Parent:
    """A Sunfish run (or export) trained with the ar objective: same weights, attention switched by the config."""
    from sunfish_lib.data.tokenizer import get_tokenizer
    from sunfish_lib.train.checkpoint import load_for_inference

    model, cfg, tok = load_for_inference(source)
    if cfg.diffusion.objective != "ar":
        raise SunfishError(f"--from {source} is a Sunfish {cfg.diffusion.objective} model; convert takes a run "
                           "trained with the ar objective, or a Hugging Face causal LM folder")
    tok = tok or get_tokenizer(cfg.data.tokenizer, cfg.data.bpe_vocab_size)
    sd = {k: v for k, v in model.state_dict().items() if not k.startswith(TIME_KEYS) and ".mod_table" not in k}
    mcfg = replace(cfg.model, causal=None, time_conditioning=None, self_cond_input=None)
    return _Parent("sunfish-ar", mcfg, sd, cfg.model.vocab_size, cfg.model.vocab_size, tok,
                   lambda ids: model(ids, t=torch.zeros(ids.shape[0]) if model.cfg.time_conditioning else None),
                   data=cfg.data, added={})


def _is_sunfish(source: str | Path) -> bool:
    p = Path(source).expanduser()
    if p.is_file() or (p / "export").is_dir() or (p / "checkpoints").is_dir():
        return True
    try:
        return {"model", "diffusion"} <= set(json.loads((p / "config.json").read_text()))
    except (OSError, ValueError, TypeError):
        return False


# ----------------------------------------------------------------------------
# The conversion
# ----------------------------------------------------------------------------

def export_config(parent: _Parent, out_dir: Path, *, objective: str, shift_logits: bool, time_conditioning: bool,
                  overrides: Mapping[str, Any] | None = None) -> Config:
    """config.json of the converted model: the parent's shape, the new objective, `train.init_from` = out_dir."""
    m = replace(parent.model, time_conditioning=True if time_conditioning else None)
    data = parent.data or DataConfig(tokenizer=str(out_dir), seq_len=min(256, m.max_seq_len))
    cfg = Config(model=m, diffusion=DiffusionConfig(objective=objective, shift_logits=shift_logits), data=data,
                 sample=SampleConfig(sampler=SAMPLER[objective], length=min(64, m.max_seq_len)),
                 preset=f"converted-{parent.kind}")
    return cfg.override({"train.init_from": str(out_dir)}).override(dict(overrides or {})).validate()


def convert(source: str | Path, out_dir: str | Path, *, objective: str = "masked", shift_logits: bool | None = None,
            time_conditioning: bool = False, tokenizer: str | None = None,
            overrides: Mapping[str, Any] | None = None, check: bool = False, check_seq_len: int = 32) -> Conversion:
    """Convert an AR parent (HF folder/cached hub name, or a Sunfish ar run) into an exported Sunfish folder.

    objective: masked (bidirectional attention) or ar (kept causal: the parent repackaged, an
    AR baseline); shift_logits: keep the AR shift (`diffusion.shift_logits`); None (default) keeps
    it for the masked objective, as RND1, Dream and dllm do: every parent is an AR model whose
    position i-1 names token i (before any masked training the ELBO is 6.32 nats with the
    shift vs 7.48 without, bench/convert_vs_scratch.py); time_conditioning:
    build the adaLN time pathway (a no-op at start); overrides: config keys for config.json
    (e.g. {"train.lr_mult_attn": 2.0}); check: compare logits with the parent (`check_logits`).
    """
    from sunfish_lib.train.checkpoint import export_model

    if objective not in OBJECTIVES:
        raise SunfishError(f"--objective {objective!r} is not allowed; choose masked or ar")
    if shift_logits is None:
        shift_logits = objective == "masked"
    out_dir = Path(out_dir).expanduser().resolve()
    parent = _sunfish_parent(source) if _is_sunfish(source) else _hf_parent(source, tokenizer)
    cfg = export_config(parent, out_dir, objective=objective, shift_logits=shift_logits,
                        time_conditioning=time_conditioning, overrides=overrides)
    m = cfg.resolved_model
    sd = assemble_state_dict(m, parent.mapped, parent.n_keep, seed=cfg.seed)
    result = check_logits(parent.logits, sd, m, n_compare=parent.n_keep, vocab=parent.n_keep,
                          seq_len=check_seq_len) if check else None
    model = backbone_from(m, sd)
    export_model(model, cfg, out_dir, parent.tokenizer)
    conv = Conversion(out_dir, cfg, parent.kind, model.num_params(), parent.added or {}, parent.vocab, result)
    (out_dir / "conversion.json").write_text(json.dumps(conv.summary(), indent=2) + "\n")
    return conv


def continuation_config(converted: Config, base: Config, *, attn_mlp_ratio: float = 1.0,
                        overrides: Mapping[str, Any] | None = None) -> Config:
    """Continued-pretraining config: the converted model with `base`'s training section and layer-wise LRs.

    For a comparison at equal steps with a from-scratch run of `base`: same steps, batch,
    schedule and optimizer settings. RND1's layer-wise rates are one ratio r = attention LR /
    MLP LR, split symmetrically: lr_mult_attn = sqrt(r), lr_mult_mlp = 1/sqrt(r).
    """
    if attn_mlp_ratio <= 0:
        raise SunfishError(f"attn_mlp_ratio={attn_mlp_ratio} must be > 0 (attention LR / MLP LR)")
    train = {f"train.{k}": v for k, v in asdict(base.train).items() if k != "init_from"}
    root = attn_mlp_ratio ** 0.5
    train.update({"train.lr_mult_attn": root, "train.lr_mult_mlp": 1 / root})
    return converted.override(train).override({"seed": base.seed, **dict(overrides or {})}).validate()
