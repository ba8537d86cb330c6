"""Test-only: `sunfish train ARGS` with a fault: SIGKILL halfway through a file write, or a NaN loss.

    python -m tests.fault_driver ckpt N -- TRAIN_ARGS     # during the Nth checkpoint written to a file
    python -m tests.fault_driver export 1 -- TRAIN_ARGS   # during export/model.safetensors
    python -m tests.fault_driver none 0 -- TRAIN_ARGS     # no fault (killed from outside by the test)
    python -m tests.fault_driver nan N -- TRAIN_ARGS      # a NaN loss at micro-batch N on rank 1 only (DDP)
    python -m tests.fault_driver nan0 N -- TRAIN_ARGS     # the same on rank 0 only
    python -m tests.fault_driver SIGTERM N -- TRAIN_ARGS  # the process sends itself SIGTERM at micro-batch N
    python -m tests.fault_driver SIGINT@1 N -- TRAIN_ARGS # ... SIGINT, on rank 1 only (DDP: rank 0 never sees it)
    python -m tests.fault_driver SIGINTx3 N -- TRAIN_ARGS # SIGINT at micro-batch N, twice more inside the save

The first half of the file's bytes reach the disk (flushed, fsynced) before the kill, as when a
machine dies mid-write. The library has no fault hooks: this wraps `torch.save` (which
`atomic_torch_save` calls) and `safetensors.torch.save_file` (which `export_model` calls).
"""

from __future__ import annotations

import io
import os
import signal
import sys


def _write_half_and_die(data: bytes, f) -> None:
    f.write(data[: len(data) // 2])
    f.flush()
    os.fsync(f.fileno())
    os.kill(os.getpid(), signal.SIGKILL)


def kill_in_torch_save(n: int) -> None:
    """SIGKILL during the nth torch.save into a file (saves into memory buffers do not count)."""
    import torch

    real, seen = torch.save, 0

    def save(obj, f, *args, **kwargs):
        nonlocal seen
        if not isinstance(f, io.BytesIO):
            seen += 1
        if isinstance(f, io.BytesIO) or seen < n:
            return real(obj, f, *args, **kwargs)
        buf = io.BytesIO()
        real(obj, buf, *args, **kwargs)
        _write_half_and_die(buf.getvalue(), open(f, "wb") if isinstance(f, (str, os.PathLike)) else f)

    torch.save = save


def kill_in_save_file() -> None:
    """SIGKILL during the first safetensors save_file (the export)."""
    import safetensors.torch

    def save_file(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            _write_half_and_die(safetensors.torch.save(tensors, metadata=metadata), f)

    safetensors.torch.save_file = save_file


def nan_loss_on_rank(micro: int, rank: int) -> None:
    """`rank`'s loss at micro-batch `micro` becomes NaN (Lightning's DDP workers rerun this driver)."""
    from sunfish_lib.train.module import SunfishModule

    real = SunfishModule.training_step

    def training_step(self, batch, batch_idx):
        if self._micro != micro or self.global_rank != rank:
            return real(self, batch, batch_idx)
        loss_fn = self.objective.loss

        def nan_loss(*args, **kwargs):
            out = loss_fn(*args, **kwargs)
            return {**out, "loss": out["loss"] * float("nan")}

        self.objective.loss = nan_loss
        try:
            return real(self, batch, batch_idx)
        finally:
            self.objective.loss = loss_fn

    SunfishModule.training_step = training_step


def signal_at_micro(micro: int, signum: int, rank: int, again_in_save: int = 0) -> None:
    """`rank` sends itself `signum` when micro-batch `micro` starts (as a user or scheduler would, mid-step);
    with `again_in_save`, that many more when the next checkpoint write begins."""
    import torch

    from sunfish_lib.train.module import SunfishModule

    real, real_save = SunfishModule.training_step, torch.save
    armed = {"save": False}

    def training_step(self, batch, batch_idx):
        if self._micro == micro and self.global_rank == rank:
            os.kill(os.getpid(), signum)
            armed["save"] = bool(again_in_save)
        return real(self, batch, batch_idx)

    def save(obj, f, *args, **kwargs):
        if armed["save"] and not isinstance(f, io.BytesIO):
            armed["save"] = False
            for _ in range(again_in_save):
                os.kill(os.getpid(), signum)
        return real_save(obj, f, *args, **kwargs)

    SunfishModule.training_step = training_step
    torch.save = save


def main(argv: list[str]) -> int:
    kind, n, sep, *train_args = argv
    assert sep == "--" and (kind in ("ckpt", "export", "nan", "nan0", "none") or kind.startswith("SIG")), argv
    if kind.startswith("SIG"):
        name, _, rank = kind.partition("@")
        name, _, times = name.partition("x")
        signal_at_micro(int(n), signal.Signals[name], int(rank or 0), int(times or 1) - 1)
    if kind == "ckpt":
        kill_in_torch_save(int(n))
    elif kind == "export":
        kill_in_save_file()
    elif kind in ("nan", "nan0"):
        nan_loss_on_rank(int(n), 1 if kind == "nan" else 0)
    from sunfish_lib.cli import main as cli

    return cli(["train", *train_args])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
