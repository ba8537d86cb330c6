"""Checkpoints that survive kills and never execute code when loaded.

- `AtomicCheckpointIO`: Lightning checkpoints written to `<name>.tmp`, fsynced, then
  renamed over `<name>` (POSIX rename is atomic), so a kill mid-write leaves the
  previous `last.ckpt` intact. Loading uses `torch.load(weights_only=True)`.
- `export_model` / `load_exported`: the final model as a Hugging Face folder
  (`model.safetensors`, `config.json`, remote code, tokenizer; see `sunfish_lib.hf_folder`):
  what sampling loads, without Lightning or pickle; older exports (tokenizer/) still load.
- `load_weights`: an exported folder's weights into a freshly built model (`train.init_from`:
  continue pretraining from `sunfish convert` output or another run's export).
- `load_for_inference`: a run folder, an exported folder or a `.ckpt` file -> (Backbone,
  Config), with one-line errors for missing, truncated or foreign files.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import torch

from sunfish_lib.config import Config
from sunfish_lib.errors import SunfishError
from sunfish_lib.hf_folder import tokenizer_dir, write_hf_files
from sunfish_lib.train.dcp import is_sharded, load_sharded
from sunfish_lib.train.ckpt_verify import (
    check_crc32, load_error, safetensors_error, tensor_mismatch, tensors_crc32, verify_container,
)

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save to path.tmp, fsync, rename over path.

    A failed write (disk full) removes path.tmp and raises a one-line SunfishError; path is untouched.
    """
    from sunfish_lib.train.diskspace import os_error_of, write_failed

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
    except (OSError, RuntimeError) as e:  # torch.save turns a failed file write into a RuntimeError
        err = os_error_of(e)
        if err is None:
            tmp.unlink(missing_ok=True)
            raise
        raise write_failed(path, tmp, err) from None
    except BaseException:  # an aborting signal (train/interrupt.py): path keeps the previous checkpoint
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def safe_torch_load(path: Path, map_location: Any = "cpu", mmap: bool = False) -> dict:
    """torch.load with weights_only=True after the archive's CRCs are checked (ckpt_verify.py);
    truncated, tampered, foreign or code-carrying files become one-line SunfishErrors."""
    path = Path(path)
    if not path.is_file():
        raise SunfishError(f"checkpoint {path} does not exist; pass a run folder, an exported folder or a .ckpt")
    verify_container(path)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:
        raise load_error(path, e) from None
    if not isinstance(obj, dict):
        raise SunfishError(f"checkpoint {path} holds a {type(obj).__name__}, not a checkpoint dict")
    return obj


def _checkpoint_io_class():
    from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
        """Atomic writes, weights_only reads (see module docstring)."""

        def save_checkpoint(self, checkpoint, path, storage_options=None):
            atomic_torch_save(checkpoint, Path(path))

        def load_checkpoint(self, path, map_location=None, weights_only=None):
            return safe_torch_load(Path(path), map_location or "cpu")

    return AtomicCheckpointIO


def AtomicCheckpointIO():  # noqa: N802 (factory: keeps Lightning out of import time)
    return _checkpoint_io_class()()


def export_model(model: torch.nn.Module, cfg: Config, out_dir: Path, tokenizer=None,
                 state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """Write a Hugging Face folder (model.safetensors, config.json, remote code, tokenizer) into out_dir; returns it."""
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sd = state_dict if state_dict is not None else model.state_dict()
    sd = {k: v.detach().to("cpu").contiguous() for k, v in sd.items()}
    if cfg.model.tie_embeddings:  # safetensors refuses shared storage; lm weights are the embedding
        sd = {k: v.clone() for k, v in sd.items()}
    tmp = out_dir / (MODEL_FILE + ".tmp")
    try:
        save_file(sd, str(tmp), metadata={"format": "pt", "sunfish": "1", "crc32": tensors_crc32(sd)})
    except Exception as e:  # safetensors reports I/O errors as SafetensorError (from Rust) or OSError
        from sunfish_lib.train.diskspace import os_error_of, write_failed

        err = os_error_of(e) or (OSError(errno.ENOSPC, str(e)) if "No space left" in str(e) else None)
        if err is None:
            raise
        raise write_failed(out_dir / MODEL_FILE, tmp, err) from None
    os.replace(tmp, out_dir / MODEL_FILE)
    write_hf_files(out_dir, cfg, tokenizer)  # config.json, remote code, tokenizer at the root (sunfish_lib/hf_folder.py)
    return out_dir


def load_exported(folder: Path, device: str | torch.device = "cpu"):
    """(Backbone, Config, tokenizer or None) from an exported folder."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from sunfish_lib.model import Backbone

    folder = Path(folder)
    cfg = Config.load(folder / CONFIG_FILE)
    try:
        sd = load_file(str(folder / MODEL_FILE))  # on the CPU: the CRC reads the bytes there
    except (SafetensorError, OSError, ValueError) as e:
        raise safetensors_error(folder / MODEL_FILE, e, "re-export the model") from None
    check_crc32(folder / MODEL_FILE, sd, "re-export the model")
    model = Backbone(cfg.resolved_model)
    _load_state(model, sd, folder / MODEL_FILE)
    return model.to(device).eval(), cfg, _maybe_tokenizer(tokenizer_dir(folder))


def load_weights(model: torch.nn.Module, folder: str | Path) -> Path:
    """Copy the weights of an exported folder (or a run folder's export/) into `model`; returns the file read.

    The model must have the same architecture (the run's config.json model section as the folder's).
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

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


def _load_state(model: torch.nn.Module, sd: dict, source: Path) -> None:
    problem = tensor_mismatch(sd, model)
    if problem:
        raise SunfishError(f"{source} does not match its config.json ({problem}); "
                           "it is from another model or was tampered with")
    model.load_state_dict(sd, strict=True)


def _maybe_tokenizer(folder: Path):
    if not folder.is_dir():
        return None
    from sunfish_lib.data.tokenizer import load_tokenizer

    return load_tokenizer(folder)


def load_lightning_checkpoint(path: Path, device: str | torch.device = "cpu", use_ema: bool = True):
    """(Backbone, Config) from a Lightning .ckpt written by Sunfish (full state dict)."""
    from sunfish_lib.model import Backbone

    ckpt = safe_torch_load(Path(path))
    meta = ckpt.get("sunfish")
    if not isinstance(meta, dict) or "config" not in meta:
        raise SunfishError(f"{path} is not a Sunfish checkpoint (no 'sunfish' section); train with `sunfish train`")
    try:
        cfg = Config.from_dict(meta["config"])
    except (TypeError, ValueError, KeyError, AttributeError) as e:  # ConfigError (a SunfishError) passes as is
        if isinstance(e, SunfishError):
            raise
        raise SunfishError(f"{path} has a malformed 'sunfish' config section ({type(e).__name__}); "
                           "it was tampered with") from None
    state = ckpt.get("state_dict")
    if not isinstance(state, dict):
        raise SunfishError(f"{path} has no state_dict of tensors; it is not a complete Sunfish checkpoint")
    sd = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    model = Backbone(cfg.resolved_model)
    _load_state(model, sd, Path(path))
    if use_ema and ckpt.get("ema"):
        if [tuple(getattr(t, "shape", ())) for t in ckpt["ema"]] != [tuple(p.shape) for p in model.parameters()]:
            raise SunfishError(f"{path} has EMA weights that do not fit its model; it was tampered with")
        with torch.no_grad():
            for p, s in zip(model.parameters(), ckpt["ema"]):
                p.copy_(s)
    return model.to(device).eval(), cfg


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


