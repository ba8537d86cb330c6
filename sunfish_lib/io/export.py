"""The exported model, and loading a model for inference from whatever a run left.

- `export_model` / `load_exported`: the final model as a Hugging Face folder
  (`model.safetensors`, `config.json`, remote code, tokenizer; see `sunfish_lib.hf.folder`):
  what sampling loads, without Lightning or pickle; older exports (tokenizer/) still load.
- `load_weights`: an exported folder's weights into a freshly built model (`train.init_from`:
  continue pretraining from `sunfish convert` output or another run's export).
- `load_for_inference`: a run folder, an exported folder or a `.ckpt` file -> (Backbone,
  Config, tokenizer or None), with one-line errors for missing, truncated or foreign files.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from sunfish_lib.config import Config
from sunfish_lib.data.tokenizer import load_tokenizer
from sunfish_lib.errors import SunfishError
from sunfish_lib.hf.folder import tokenizer_dir, write_hf_files
from sunfish_lib.io.checkpoint import load_lightning_checkpoint, load_state
from sunfish_lib.io.dcp import is_sharded, load_sharded
from sunfish_lib.io.files import atomic_write
from sunfish_lib.io.model_card import write_model_card
from sunfish_lib.io.verify import check_crc32, safetensors_error, tensor_mismatch, tensors_crc32
from sunfish_lib.model import Backbone

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def export_model(model: torch.nn.Module, cfg: Config, out_dir: Path, tokenizer=None,
                 state_dict: dict[str, torch.Tensor] | None = None, *, card: dict | None = None,
                 model_id: str | None = None, license: str = "other") -> Path:
    """Write a Hugging Face folder (model.safetensors, config.json, remote code, tokenizer, README.md model card)
    into out_dir; returns it. `card`: the run's figures (`io.model_card`); what it lacks reads "not measured"."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sd = state_dict if state_dict is not None else model.state_dict()
    sd = {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}
    if cfg.model.tie_embeddings:  # safetensors refuses shared storage; lm weights are the embedding
        sd = {k: v.clone() for k, v in sd.items()}
    meta = {"format": "pt", "sunfish": "1", "crc32": tensors_crc32(sd)}
    atomic_write(out_dir / MODEL_FILE, lambda tmp: save_file(sd, str(tmp), metadata=meta), fsync=False)
    write_hf_files(out_dir, cfg, tokenizer)  # config.json, remote code, tokenizer at the root (sunfish_lib/hf/folder.py)
    facts = {"params": sum(p.numel() for p in model.parameters()), **({} if tokenizer is None else
                                                               {"tokenizer_size": len(tokenizer)}), **(card or {})}
    write_model_card(out_dir, cfg, facts, model_id=model_id, license=license)
    return out_dir


def load_exported(folder: Path, device: str | torch.device = "cpu"):
    """(Backbone, Config, tokenizer or None) from an exported folder."""
    folder = Path(folder)
    cfg = Config.load(folder / CONFIG_FILE)
    try:
        sd = load_file(str(folder / MODEL_FILE))  # on the CPU: the CRC reads the bytes there
    except (SafetensorError, OSError, ValueError) as e:
        raise safetensors_error(folder / MODEL_FILE, e, "re-export the model") from None
    check_crc32(folder / MODEL_FILE, sd, "re-export the model")
    model = Backbone.from_config(cfg)
    load_state(model, sd, folder / MODEL_FILE)
    return model.to(device).eval(), cfg, _maybe_tokenizer(tokenizer_dir(folder))


def load_weights(model: torch.nn.Module, folder: str | Path) -> Path:
    """Copy the weights of an exported folder (or a run folder's export/) into `model`; returns the file read.

    The model must have the same architecture (the run's config.json model section as the folder's).
    """
    folder = Path(folder).expanduser()
    path = next((p for p in (folder / MODEL_FILE, folder / "export" / MODEL_FILE, folder) if p.is_file()), None)
    if path is None:
        raise SunfishError(f"train.init_from={str(folder)!r} holds no {MODEL_FILE}; "
                           "pass a `sunfish convert --out` folder or a run folder with export/")
    try:
        sd = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise safetensors_error(path, e, "re-export or re-convert it", prefix="train.init_from: ") from None
    check_crc32(path, sd, "re-export or re-convert it", prefix="train.init_from: ")
    problem = tensor_mismatch(sd, model)
    if problem:
        raise SunfishError(f"train.init_from: {path} does not fit this run's model ({problem}); "
                           f"start from the config.json next to it")
    model.load_state_dict(sd, strict=True)
    return path


def _maybe_tokenizer(folder: Path):
    return load_tokenizer(folder) if folder.is_dir() else None


def load_for_inference(path: str | Path, device: str | torch.device = "cpu"):
    """(Backbone, Config, tokenizer or None) from a run folder, an exported folder or a .ckpt."""
    p = Path(path)
    if not p.exists():
        raise SunfishError(f"{p} does not exist; pass a run folder, an exported model folder or a .ckpt file")
    if p.is_dir() and (p / MODEL_FILE).is_file():
        return load_exported(p, device)
    if p.is_dir() and (p / "export" / MODEL_FILE).is_file():
        return load_exported(p / "export", device)
    if is_sharded(p / "checkpoints" / "last.ckpt") or is_sharded(p):  # an FSDP run's DCP folder: consolidated here
        model, cfg = load_sharded(p / "checkpoints" / "last.ckpt" if (p / "checkpoints").is_dir() else p)
        return model.to(device), cfg, _maybe_tokenizer((p if (p / "checkpoints").is_dir() else p.parent.parent) / "tokenizer")
    if p.is_dir() and (p / "checkpoints" / "last.ckpt").is_file():
        model, cfg = load_lightning_checkpoint(p / "checkpoints" / "last.ckpt", device)
        return model, cfg, _maybe_tokenizer(p / "tokenizer")
    if p.is_file():
        model, cfg = load_lightning_checkpoint(p, device)
        return model, cfg, _maybe_tokenizer(p.parent.parent / "tokenizer")
    raise SunfishError(f"{p} is not a Sunfish run or model folder (no {MODEL_FILE}, export/ or checkpoints/last.ckpt)")
