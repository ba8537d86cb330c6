"""Denoising trajectories: what the sampler saw and decided at every step.

A `Trajectory` holds one record per reverse step, each a dict of tensors for the
whole batch: `tokens` (B, T) the current sequence (masked samplers: with [MASK];
continuous samplers: the rounded predicted x0), and optional per-position fields such
as `confidence` (B, T), `masked` (B, T) bool, `committed` (B, T) bool (newly fixed
this step) or `distance` (B, T) to the nearest embedding, and `entropy` (B, T) of the token
distribution the sampler drew from. `start` (B, T) is what the sampler was given
([MASK] where it generated). Recording is opt-in: the
samplers take `trajectory=None` and then record nothing, so it costs nothing.

Files are safetensors (no pickle: safe to load from anywhere) with the step metadata
(t, step index, sampler name) in the header; `start` is stored under the key `start`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sunfish_lib.errors import SunfishError
from sunfish_lib.io.files import atomic_write


@dataclass
class Trajectory:
    """Per-step records of a sampling run (see module docstring)."""

    sampler: str = ""
    meta: dict = field(default_factory=dict)
    steps: list[dict[str, torch.Tensor]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    start: torch.Tensor | None = None

    def record(self, t: float, **fields: torch.Tensor) -> None:
        """Append one step; tensors are detached and moved to CPU."""
        self.steps.append({k: v.detach().to("cpu", copy=True) for k, v in fields.items() if v is not None})
        self.times.append(float(t))

    def __len__(self) -> int:
        return len(self.steps)

    def stack(self, name: str) -> torch.Tensor:
        """One field over all steps: (steps, B, T)."""
        missing = [i for i, s in enumerate(self.steps) if name not in s]
        if missing:
            raise KeyError(f"trajectory field {name!r} missing at steps {missing[:5]}")
        return torch.stack([s[name] for s in self.steps])

    def fields(self) -> list[str]:
        return sorted({k for s in self.steps for k in s})

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        tensors = {f"{i:05d}.{k}": v.contiguous() for i, s in enumerate(self.steps) for k, v in s.items()}
        if self.start is not None:
            tensors["start"] = self.start.detach().to("cpu").contiguous()
        header = {"sampler": self.sampler, "times": json.dumps(self.times), "meta": json.dumps(self.meta),
                  "format": "sunfish-trajectory-1"}
        return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header), fsync=False,
                            disk_errors=False)

    @classmethod
    def load(cls, path: str | Path) -> "Trajectory":
        path = Path(path)
        if not path.is_file():
            raise SunfishError(f"trajectory file {path} does not exist")
        try:
            with safe_open(str(path), framework="pt") as f:
                header = f.metadata() or {}
                if header.get("format") != "sunfish-trajectory-1":
                    raise SunfishError(f"{path} is not a Sunfish trajectory file (no sunfish-trajectory-1 header)")
                times = json.loads(header["times"])
                steps: list[dict[str, torch.Tensor]] = [{} for _ in times]
                start = f.get_tensor("start") if "start" in f.keys() else None
                for key in f.keys():
                    if key == "start":
                        continue
                    i, name = key.split(".", 1)
                    steps[int(i)][name] = f.get_tensor(key)
        except SunfishError:
            raise
        except Exception as e:  # truncated or foreign file
            raise SunfishError(f"cannot read trajectory {path} ({type(e).__name__}); it is corrupt or not a trajectory") from None
        return cls(sampler=header.get("sampler", ""), meta=json.loads(header.get("meta", "{}")), steps=steps, times=times,
                   start=start)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of softmax(logits) over the last axis, (...); -inf logits (excluded tokens) add 0."""
    logp = logits.double().log_softmax(-1)
    p = logp.exp()
    return -(p * logp.masked_fill(p == 0, 0.0)).sum(-1).float()
