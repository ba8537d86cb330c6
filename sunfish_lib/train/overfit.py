"""The overfit check: a few fixed batches (`batches.fixed_batches`) driven to near-zero loss."""

from __future__ import annotations

from sunfish_lib.io.metrics import read_metrics, series
from sunfish_lib.train.trainer import train


def overfit_check(cfg, run_dir, *, n_batches: int = 2, threshold: float = 0.5, window: int = 5,
                  progress: bool | None = False) -> dict:
    """The overfit test: train on `n_batches` fixed batches; pass when the mean of the last
    `window` training losses falls below `threshold`. Returns the verdict and the curve."""
    summary = train(cfg, run_dir, overfit_batches=n_batches, progress=progress)
    steps, losses = series(read_metrics(run_dir), "train/loss")
    if not losses:
        raise RuntimeError(f"no training loss was logged in {run_dir}")
    final = sum(losses[-window:]) / len(losses[-window:])
    return {"passed": final < threshold, "final_loss": final, "initial_loss": losses[0], "threshold": threshold,
            "steps": summary["global_step"], "curve": (steps, losses)}
