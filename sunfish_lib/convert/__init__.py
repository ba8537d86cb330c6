"""Autoregressive checkpoint -> Sunfish diffusion backbone (RND1's simple continual pretraining).

RND1 (Radical Numerics 2025) turns a pretrained AR model into a masked diffusion LM by
(1) switching causal attention to bidirectional, (2) continuing pretraining with the
masked objective, (3) giving attention a higher and MLP a lower learning rate, which
keeps the parent's knowledge (`train.lr_mult_attn` / `lr_mult_mlp`). This module does
(1) and writes a folder that training starts from (`train.init_from`):

    DIR/model.safetensors, DIR/config.json, the tokenizer and remote code   (as `export_model` writes them)
    DIR/conversion.json    what was found; `source`, the parent's resolved folder (`runs.lineage` follows it)

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
from sunfish_lib.convert.mapping import (  # noqa: F401 (re-exported: the mapping is imported from here)
    HF_FAMILIES, TIME_KEYS, assemble_state_dict, backbone_from, check_logits, model_config_from_hf, unsupported,
    _gpt2_weights, _llama_weights,
)
from sunfish_lib.data.tokenizer import get_tokenizer
from sunfish_lib.errors import SunfishError
from sunfish_lib.hf.hub import hub_offline, hub_reachable, quiet_transformers
from sunfish_lib.io.export import export_model, load_for_inference
from sunfish_lib.io.verify import load_error
from sunfish_lib.runs.lineage import CONVERSION, model_identity

OBJECTIVES = ("masked", "ar", "block")
SAMPLER = {"masked": "low_confidence", "ar": "ar", "block": "low_confidence"}


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
    source: str | None = None  # the parent's resolved folder: `runs.lineage` follows it back

    def summary(self) -> dict:
        return {"out_dir": str(self.out_dir), "parent": self.parent, "source": self.source, "params": self.params,
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
    # lazy: transformers takes 2.6 s to import after this module; converting a Sunfish run never needs it
    from transformers import AutoConfig

    offline = "offline (HF_HUB_OFFLINE=1)" if hub_offline() else None if hub_reachable() else "unreachable"
    try:
        AutoConfig.from_pretrained(name, local_files_only=bool(offline))  # the local HF cache still counts
    except (OSError, ValueError) as e:
        why = f"the hub is {offline} and it is not cached" if offline \
            else f"it could not be fetched ({str(e).splitlines()[0][:160]})"
        raise SunfishError(
            f"--from {name!r} is not a local folder and {why}; where the hub is reachable run "
            f"`AutoModelForCausalLM.from_pretrained({name!r}).save_pretrained(DIR)` and the same for AutoTokenizer, "
            "then pass --from DIR") from None
    from huggingface_hub import snapshot_download  # lazy: 1.0 s to import; only hub names need it

    return Path(snapshot_download(name, local_files_only=bool(offline)))


def load_hf_parent(source: str | Path):
    """(HF causal LM in fp32, eval mode; its family) from a folder or a cached hub name."""
    # lazy: transformers takes 2.6 s to import after this module; converting a Sunfish run never needs it
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
    why = unsupported(hf_cfg, family)
    if why:  # before reading the weights
        raise SunfishError(f"this {hf_cfg.model_type} model cannot be converted exactly: {why}; check its config.json "
                           "(convert takes the parent as its save_pretrained wrote it)")
    with quiet_transformers():
        try:
            model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, weights_only=True)
        except (pickle.UnpicklingError, OSError, EOFError) as e:  # a .bin weights file is a pickle
            weights = next(iter(sorted(Path(path).glob("*.bin"))), Path(path))
            raise load_error(weights, e) from None
    return model.eval(), family


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
    # lazy: transformers takes 2.6 s to import after this module; converting a Sunfish run never needs it
    from transformers import AutoTokenizer

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
                  overrides: Mapping[str, Any] | None = None, block_size: int = 4) -> Config:
    """config.json of the converted model: the parent's shape, the new objective, `train.init_from` = out_dir."""
    m = replace(parent.model, time_conditioning=True if time_conditioning else None)
    data = parent.data or DataConfig(tokenizer=str(out_dir), seq_len=min(256, m.max_seq_len))
    diffusion = DiffusionConfig(objective=objective, shift_logits=shift_logits, block_size=block_size)
    cfg = Config(model=m, diffusion=diffusion, data=data,
                 sample=SampleConfig(sampler=SAMPLER[objective], length=min(64, m.max_seq_len)),
                 preset=f"converted-{parent.kind}")
    return cfg.override({"train.init_from": str(out_dir)}).override(dict(overrides or {})).validate()


_PARENT_FAULTS = (ValueError, TypeError, RuntimeError, ArithmeticError, KeyError, IndexError, AttributeError)
_PARENT_FAULT_NAMES = ("StrictDataclass", "SafetensorError")  # huggingface_hub's config validation, safetensors
"""What transformers, huggingface_hub, safetensors and torch raise on a parent whose config.json and weights do
not make one consistent model (a wrong field type, heads that do not divide the width, a cut weights file, a
weight of the wrong shape); named, not imported, so this module stays free of huggingface_hub."""


@contextmanager
def parent_faults(source: str | Path):
    """A parent folder that does not describe a consistent model is a one-line SunfishError, not a traceback
    (found by the fuzz lane: tests/test_fuzz_files.py::test_convert_parents)."""
    try:
        yield
    except SunfishError:
        raise
    except Exception as e:
        if not isinstance(e, _PARENT_FAULTS) and not type(e).__name__.startswith(_PARENT_FAULT_NAMES):
            raise
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise SunfishError(f"--from {source}: its config.json and weights do not make a model that can be converted "
                           f"({type(e).__name__}: {reason}); pass an unmodified save_pretrained folder of a causal LM"
                           ) from None


def convert(source: str | Path, out_dir: str | Path, *, objective: str = "masked", shift_logits: bool | None = None,
            time_conditioning: bool = False, tokenizer: str | None = None, block_size: int = 4,
            overrides: Mapping[str, Any] | None = None, check: bool = False, check_seq_len: int = 32) -> Conversion:
    """Convert an AR parent (HF folder/cached hub name, or a Sunfish ar run) into an exported Sunfish folder.

    objective: masked (bidirectional attention), ar (kept causal: the parent repackaged, an
    AR baseline) or block (BD3-LM blocks of `block_size`, Fast-dLLM v2 / dllm A2D: the shift kept, so with
    block_size 1 it is the parent exactly); shift_logits: keep the AR shift (`diffusion.shift_logits`); None (default) keeps
    it for the masked objective, as RND1, Dream and dllm do: every parent is an AR model whose
    position i-1 names token i (before any masked training the ELBO is 6.32 nats with the
    shift vs 7.48 without, bench/convert_vs_scratch.py); time_conditioning:
    build the adaLN time pathway (a no-op at start); overrides: config keys for config.json
    (e.g. {"train.lr_mult_attn": 2.0}); check: compare logits with the parent (`check_logits`).
    """
    if objective not in OBJECTIVES:
        raise SunfishError(f"--objective {objective!r} is not allowed; choose masked, ar or block")
    if shift_logits is None:
        shift_logits = objective in ("masked", "block")
    out_dir = Path(out_dir).expanduser().resolve()
    with parent_faults(source):
        parent = _sunfish_parent(source) if _is_sunfish(source) else _hf_parent(source, tokenizer)
        cfg = export_config(parent, out_dir, objective=objective, shift_logits=shift_logits,
                            time_conditioning=time_conditioning, overrides=overrides, block_size=block_size)
        m = cfg.resolved_model
        sd = assemble_state_dict(m, parent.mapped, parent.n_keep, seed=cfg.seed)
        result = check_logits(parent.logits, sd, m, n_compare=parent.n_keep, vocab=parent.n_keep,
                              seq_len=check_seq_len) if check else None
        model = backbone_from(m, sd)
    export_model(model, cfg, out_dir, parent.tokenizer)
    conv = Conversion(out_dir, cfg, parent.kind, model.num_params(), parent.added or {}, parent.vocab, result,
                      str(model_identity(source if parent.kind == "sunfish-ar" else resolve_source(str(source)))))
    (out_dir / CONVERSION).write_text(json.dumps(conv.summary(), indent=2) + "\n")
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
