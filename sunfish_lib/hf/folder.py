"""An export as a Hugging Face folder: what `transformers` loads with trust_remote_code.

Layout written by `export_model` (format 2):

    model.safetensors            the backbone's weights (the same names in Sunfish and in transformers)
    config.json                  Sunfish's run config + model_type "sunfish", auto_map, resolved_model
    configuration_sunfish.py     remote code (torch + transformers only), copied from sunfish_lib/hf/remote
    modeling_sunfish.py
    sampling_sunfish.py          the masked-diffusion samplers behind `diffusion_generate`
    continuous_sunfish.py        its continuous (DDIM) sampler
    tokenizer.json, tokenizer_config.json, ...   at the root, for AutoTokenizer

Older exports (format 1: Sunfish's config.json only, the tokenizer in tokenizer/) still load.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

from sunfish_lib.config import Config

REMOTE_CODE = Path(__file__).parent / "remote"
REMOTE_FILES = ("configuration_sunfish.py", "modeling_sunfish.py", "sampling_sunfish.py", "continuous_sunfish.py")
AUTO_CLASS = {"masked": "AutoModelForMaskedLM", "continuous": "AutoModelForMaskedLM", "ar": "AutoModelForCausalLM",
              "block": "AutoModelForMaskedLM"}  # block: diffusion_generate samples block by block
ARCHITECTURE = {"AutoModelForMaskedLM": "SunfishForMaskedLM", "AutoModelForCausalLM": "SunfishForCausalLM"}


def resolved_fields(cfg: Config) -> dict:
    """The backbone's fields as built: every None filled (`Config.resolved_model`), so the remote code derives nothing."""
    return asdict(cfg.resolved_model)


def hf_config(cfg: Config, tokenizer=None) -> dict:
    """config.json: Sunfish's config (what `Config.load` reads back) plus what transformers needs.

    With the tokenizer: its special ids and size, which `generate` / `diffusion_generate` read to never emit
    [MASK], [PAD], EOS (unless `sample.allow_eos`) or ids past the tokenizer, as Sunfish's samplers do.
    """
    auto = AUTO_CLASS[cfg.diffusion.objective]
    arch = ARCHITECTURE[auto]
    out = {**cfg.to_dict(), "model_type": "sunfish", "architectures": [arch], "resolved_model": resolved_fields(cfg),
           "auto_map": {"AutoConfig": "configuration_sunfish.SunfishConfig", auto: f"modeling_sunfish.{arch}"}}
    if tokenizer is not None:  # an ar model starts an empty prompt from EOS (`ARSampler`): EOS is its BOS
        out.update(mask_token_id=tokenizer.mask_token_id, pad_token_id=tokenizer.pad_token_id,
                   eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.eos_token_id,
                   tokenizer_size=len(tokenizer))
    return out


def write_hf_files(out_dir: Path, cfg: Config, tokenizer=None) -> None:
    """config.json, the remote code and (when given) the tokenizer at the root of out_dir."""
    (out_dir / "config.json").write_text(json.dumps(hf_config(cfg, tokenizer), indent=2, sort_keys=True) + "\n")
    for name in REMOTE_FILES:
        shutil.copyfile(REMOTE_CODE / name, out_dir / name)
    if tokenizer is not None:
        tokenizer.save(out_dir)


def tokenizer_dir(folder: Path) -> Path:
    """Where an export's tokenizer lives: the root (format 2) or tokenizer/ (format 1)."""
    return folder if (folder / "tokenizer.json").is_file() else folder / "tokenizer"

