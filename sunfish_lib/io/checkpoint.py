"""Checkpoints that survive kills and never execute code when loaded.

- `atomic_torch_save`: `torch.save` through `files.atomic_write` (`<name>.tmp`, fsync, rename), so a
  kill mid-write leaves the previous `last.ckpt` intact (Lightning's side: `train.checkpoint.AtomicCheckpointIO`).
- `safe_torch_load`: the archive's CRCs checked (`verify.py`), then `torch.load(weights_only=True)`.
- `load_lightning_checkpoint`: a Sunfish `.ckpt` -> (Backbone, Config), EMA weights when kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from sunfish_lib.config import Config
from sunfish_lib.errors import SunfishError
from sunfish_lib.io.files import atomic_write
from sunfish_lib.io.verify import load_error, tensor_mismatch, verify_container
from sunfish_lib.model import Backbone


def atomic_torch_save(obj: Any, path: Path) -> None:
    """torch.save to path.tmp, fsync, rename over path.

    A failed write (disk full) removes path.tmp and raises a one-line SunfishError; path is untouched.
    """
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: torch.save's writes go through it
            torch.save(obj, f)

    atomic_write(path, write)


def safe_torch_load(path: Path, map_location: Any = "cpu", mmap: bool = False) -> dict:
    """torch.load with weights_only=True after the archive's CRCs are checked (verify.py);
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


def load_state(model: torch.nn.Module, sd: dict, source: Path) -> None:
    """Load `sd` into `model` strictly, or raise a one-line SunfishError naming the first key that does not fit."""
    problem = tensor_mismatch(sd, model)
    if problem:
        raise SunfishError(f"{source} does not match its config.json ({problem}); "
                           "it is from another model or was tampered with")
    model.load_state_dict(sd, strict=True)


def load_lightning_checkpoint(path: Path, device: str | torch.device = "cpu", use_ema: bool = True):
    """(Backbone, Config) from a Lightning .ckpt written by Sunfish (full state dict)."""
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
    model = Backbone.from_config(cfg)
    load_state(model, sd, Path(path))
    if use_ema and ckpt.get("ema"):
        if [tuple(getattr(t, "shape", ())) for t in ckpt["ema"]] != [tuple(p.shape) for p in model.parameters()]:
            raise SunfishError(f"{path} has EMA weights that do not fit its model; it was tampered with")
        with torch.no_grad():
            for p, s in zip(model.parameters(), ckpt["ema"]):
                p.copy_(s)
    return model.to(device).eval(), cfg
