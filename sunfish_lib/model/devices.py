"""`--device` / `--dtype` for inference (sample, evaluate, the sampling panel): names -> torch objects.

The default device is the best available: CUDA, then Apple's MPS, then the CPU. The default
dtype is float32; bfloat16/float16 halve the weights' memory (sampling math stays float32/64).
"""

from __future__ import annotations

import torch

from sunfish_lib.config import DEVICE_HELP, DTYPE_NAMES
from sunfish_lib.errors import SunfishError

DTYPES = dict(zip(DTYPE_NAMES, (torch.float32, torch.bfloat16, torch.float16)))


def best_device() -> str:
    """cuda when a CUDA GPU is visible, else mps when Apple's Metal backend is, else cpu."""
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else "cpu"


def resolve_device(name: str | torch.device | None) -> torch.device:
    """A device name (None or 'auto': `best_device`) checked to exist here; one-line error otherwise."""
    if name is None or str(name).strip() in ("", "auto"):
        return torch.device(best_device())
    try:
        dev = torch.device(str(name).strip())
    except (RuntimeError, ValueError):
        raise SunfishError(f"device={name!r} is not a device name; use {DEVICE_HELP}") from None
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise SunfishError(f"device={name!r}: no such CUDA device here ({torch.cuda.device_count()} visible); "
                           f"use cpu or {best_device()}")
    if dev.type == "mps" and best_device() != "mps":
        raise SunfishError(f"device={name!r}: MPS is not available here; use {best_device()}")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise SunfishError(f"device={name!r} is not supported; use {DEVICE_HELP}")
    return dev


def resolve_dtype(name: str | torch.dtype | None) -> torch.dtype:
    """float32 (default), bfloat16 or float16; one-line error otherwise."""
    if isinstance(name, torch.dtype):
        return name
    key = "float32" if name is None else str(name).strip()
    if key not in DTYPES:
        raise SunfishError(f"dtype={name!r} is not allowed; choose one of {', '.join(DTYPES)}")
    return DTYPES[key]
