"""Checking a checkpoint to resume from before Lightning restores it.

The file itself is checked by `sunfish_lib.io.checkpoint.safe_torch_load` (an intact archive,
weights_only). `check_training_checkpoint` then checks that it has every part Lightning restores,
with the shapes of this run's model, so a tampered file fails with one line instead of a
traceback deep inside Lightning.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sunfish_lib.errors import SunfishError
from sunfish_lib.io.checkpoint import safe_torch_load
from sunfish_lib.io.verify import tensor_mismatch

TRAINING_KEYS = ("state_dict", "optimizer_states", "lr_schedulers", "loops", "global_step", "epoch",
                 "pytorch-lightning_version", "sunfish")


def check_training_checkpoint(ckpt: dict, path: Path, module) -> None:
    """Raise a one-line SunfishError unless `ckpt` holds what resuming `module` (a SunfishModule) restores."""
    missing = [k for k in TRAINING_KEYS if k not in ckpt]
    if missing:
        raise SunfishError(f"checkpoint {path} lacks {', '.join(missing)}: it is not a complete Sunfish training "
                           "checkpoint (tampered, or weights only); resume from another one or start a new run")
    problem = tensor_mismatch(ckpt["state_dict"], module)
    if problem:
        raise SunfishError(f"checkpoint {path} does not fit this run's model (state_dict: {problem}); "
                           "it was tampered with or comes from another run")
    shapes = [tuple(p.shape) for p in module.model.parameters()]
    if ckpt.get("ema") is not None:
        ema = ckpt["ema"]
        got = [tuple(t.shape) if isinstance(t, torch.Tensor) else None for t in ema] if isinstance(ema, list) else None
        if got != shapes:
            raise SunfishError(f"checkpoint {path} has EMA weights that do not fit this run's model; "
                               "it was tampered with or comes from another run")
    _check_optimizer(path, ckpt["optimizer_states"], shapes)
    if not isinstance(ckpt["loops"], dict) or "fit_loop" not in ckpt["loops"]:
        raise SunfishError(f"checkpoint {path} has no training-loop state (loops.fit_loop); it was tampered with")


def _check_optimizer(path: Path, states, shapes: list[tuple]) -> None:
    fail = f"checkpoint {path} has optimizer state that does not fit this run's model"
    if not isinstance(states, list) or len(states) != 1 or not isinstance(states[0], dict):
        raise SunfishError(f"{fail} (expected one optimizer); it was tampered with or comes from another run")
    opt = states[0]
    try:
        ids = [i for g in opt["param_groups"] for i in g["params"]]
        moments = {i: {k: tuple(v.shape) for k, v in s.items() if isinstance(v, torch.Tensor) and v.dim() > 0}
                   for i, s in opt["state"].items()}
    except (KeyError, TypeError, AttributeError):
        raise SunfishError(f"{fail} (no param_groups/state); it was tampered with") from None
    allowed = set(shapes)
    odd = next((i for i, m in moments.items() if any(s not in allowed for s in m.values())), None)
    if len(ids) != len(shapes) or set(moments) - set(ids) or odd is not None:
        detail = f"{len(ids)} parameters, the model {len(shapes)}" if len(ids) != len(shapes) else \
            f"state of parameter {odd} has shapes {sorted(moments[odd].values())}" if odd is not None else \
            "state for parameters it does not list"
        raise SunfishError(f"{fail} ({detail}); it was tampered with or comes from another run")


def check_resume_checkpoint(path: Path, module) -> int:
    """Check `path` (memory-mapped, tensors not read twice) before Lightning restores `module` from it;
    returns the optimizer step it holds."""
    ckpt = safe_torch_load(path, mmap=True)
    check_training_checkpoint(ckpt, Path(path), module)
    return int(ckpt.get("global_step", 0))
