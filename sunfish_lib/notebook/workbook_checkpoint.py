"""A tiny checkpoint for the sampling notebooks when neither a `checkpoint` nor the workbook's model is there.

Notebooks 06 and 07 take a `checkpoint` parameter; under `sunfish workbook` they use the
workbook's model (`runs.discovery.workbook_checkpoint`). Otherwise `tiny_checkpoint` trains a
small model of the wanted objective into a folder (skipped when that folder already holds one),
in seconds with `smoke` shapes.
"""

from __future__ import annotations

from pathlib import Path

from sunfish_lib.notebook.workbook import recipe_config, train_or_reuse


def tiny_checkpoint(folder: str | Path, objective: str = "masked", max_steps: int = 200, *, smoke: bool = False,
                    sample: dict | None = None) -> Path:
    """Train the tiny recipe (smoke: the `smoke` preset) for max_steps into folder, or reuse it; returns it.

    `sample` sets the checkpoint's default sampling settings (e.g. steps, length).
    """
    cfg = recipe_config(objective, "tiny", max_steps, smoke=smoke,
                        overrides={"val_batches": 1, "tensorboard": False, "keep_best": 0, **(sample or {})})
    return train_or_reuse(cfg, folder, quiet=True)
