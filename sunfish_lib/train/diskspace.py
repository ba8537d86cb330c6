"""Disk space for a run: a free-space check before training, the one-line error when a write
fails anyway (disk full mid-run), and the cleanup of writes a kill left half done.

What a run writes, at its peak (`run_bytes`): `checkpoints/last.ckpt` plus the `.tmp` copy it is
rewritten through (atomic rename), `train.keep_best` best checkpoints, and `export/` (weights
only). A checkpoint holds the weights, the two AdamW moments per parameter and the EMA copy when
kept (`estimate.checkpoint_bytes`); logs, the tokenizer and the config fit in the fixed margin.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

from sunfish_lib.config import Config
from sunfish_lib.errors import SunfishError

SLACK = 1.10  # checkpoint metadata, loop state and filesystem blocks on top of the tensor bytes
MARGIN_BYTES = 16 * 2**20  # logs, metrics, tokenizer, config, samples


def human_bytes(n: int) -> str:
    """'12.3 MB'."""
    value, unit = float(n), "B"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            break
        value /= 1000
    return f"{value:.1f} {unit}"


def fmt_bytes(n: int) -> str:
    """'12,345,678 bytes (12.3 MB)': exact for tests and scripts, readable for people."""
    return f"{n:,} bytes ({human_bytes(n)})"


def run_bytes(cfg: Config, precision: str) -> dict[str, int]:
    """Bytes the run folder must hold at its peak, by part, and their total (with slack and margin).

    `precision` is a resolved Lightning precision (not 'auto'): it sets the bytes per weight.
    """
    from sunfish_lib.estimate import checkpoint_bytes

    t, m = cfg.train, cfg.resolved_model
    ckpt = checkpoint_bytes(m, precision, ema=t.ema_decay > 0)["with_optimizer"]
    export = checkpoint_bytes(m, precision)["weights"]
    parts = {"last.ckpt and its .tmp": 2 * ckpt, f"keep_best={t.keep_best} checkpoints": t.keep_best * ckpt,
             "export": export}
    parts["total"] = int(sum(parts.values()) * SLACK) + MARGIN_BYTES
    return parts


def _held(run_dir: Path) -> int:
    """Bytes of checkpoints and export already in the folder (a resumed run overwrites them)."""
    files = list((run_dir / "checkpoints").glob("*.ckpt")) + [run_dir / "export" / "model.safetensors"]
    return sum(p.stat().st_size for p in files if p.is_file())


def check_free_space(cfg: Config, run_dir: Path, precision: str) -> None:
    """Raise SunfishError before training when the run folder's disk cannot hold the run."""
    parts = run_bytes(cfg, precision)
    need = max(0, parts.pop("total") - _held(run_dir))
    free = shutil.disk_usage(run_dir).free
    if free < need:
        what = ", ".join(f"{k} {human_bytes(v)}" for k, v in parts.items())
        raise SunfishError(f"run folder {run_dir} has {fmt_bytes(free)} free, but this run needs about "
                           f"{fmt_bytes(need)} ({what}); free space, lower train.keep_best, or pick another --run-dir")


def remove_partial_writes(run_dir: Path) -> list[Path]:
    """Delete `*.tmp` files a killed write left in checkpoints/ and export/ (never read; they only take space)."""
    stale = [p for sub in ("checkpoints", "export") for p in (run_dir / sub).glob("*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def os_error_of(exc: BaseException) -> OSError | None:
    """The OSError behind `exc` (torch.save reports a failed write as a RuntimeError raised from it)."""
    while exc is not None:
        if isinstance(exc, OSError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def write_failed(path: Path, tmp: Path, err: OSError) -> SunfishError:
    """Remove the partial `tmp`; the one-line error naming the file, the reason and the free space."""
    tmp.unlink(missing_ok=True)
    try:
        free = fmt_bytes(shutil.disk_usage(path.parent).free)
    except OSError:
        free = "unknown"
    reason = os.strerror(err.errno) if err.errno else str(err)
    hint = "free space, then resume with --resume" if err.errno in (errno.ENOSPC, errno.EDQUOT) \
        else "check the folder, then resume with --resume"
    kept = f"the previous {path.name} is intact" if path.exists() else f"no {path.name} was written"
    return SunfishError(f"could not write {path}: {reason} ({free} free in {path.parent}); {kept}; {hint}")
