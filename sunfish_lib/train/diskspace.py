"""Disk space for a run: a free-space check before training, the one-line error when a write
fails anyway (disk full mid-run: `sunfish_lib.io.files.write_failed`), and the cleanup of writes a kill left half done.

What a run writes, at its peak (`run_bytes`): `checkpoints/last.ckpt` plus the `.tmp` copy it is
rewritten through (atomic rename), `train.keep_best` best checkpoints, and `export/` (weights
only). A checkpoint holds the weights, the two AdamW moments per parameter and the EMA copy when
kept (`counts.checkpoint_bytes`); logs, the tokenizer and the config fit in the fixed margin.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from sunfish_lib.config import Config
from sunfish_lib.sizing.counts import checkpoint_bytes
from sunfish_lib.errors import SunfishError
from sunfish_lib.io.files import fmt_bytes, human_bytes

SLACK = 1.10  # checkpoint metadata, loop state and filesystem blocks on top of the tensor bytes
MARGIN_BYTES = 16 * 2**20  # logs, metrics, tokenizer, config, samples


def run_bytes(cfg: Config, precision: str) -> dict[str, int]:
    """Bytes the run folder must hold at its peak, by part, and their total (with slack and margin).

    `precision` is a resolved Lightning precision (not 'auto'): it sets the bytes per weight.
    """
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
