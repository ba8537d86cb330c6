"""A tiny checkpoint for the sampling notebooks when neither a `checkpoint` nor the workbook's model is there.

Notebooks 06 and 07 take a `checkpoint` parameter; under `sunfish workbook` they use the
workbook's model (`runs.discovery.workbook_checkpoint`). Otherwise `tiny_checkpoint` trains a
small model of the wanted objective into a folder (skipped when that folder already holds one),
in seconds with `smoke` shapes.
"""

from __future__ import annotations

from pathlib import Path

from sunfish_lib.notebook.workbook import recipe_config, train_or_reuse
from sunfish_lib.runs.discovery import workbook_model


def tiny_checkpoint(folder: str | Path, objective: str = "masked", max_steps: int = 200, *, smoke: bool = False,
                    sample: dict | None = None) -> Path:
    """Train the tiny recipe (smoke: the `smoke` preset) for max_steps into folder, or reuse it; returns it.

    `sample` sets the checkpoint's default sampling settings (e.g. steps, length).
    """
    cfg = recipe_config(objective, "tiny", max_steps, smoke=smoke,
                        overrides={"val_batches": 1, "tensorboard": False, "keep_best": 0, **(sample or {})})
    return train_or_reuse(cfg, folder, quiet=True)


def models_by_objective(checkpoints, run_dir: str | Path | None, folder: str | Path,
                        objectives=("masked", "continuous"), *, max_steps: int = 200, smoke: bool = False) -> dict:
    """{objective: loaded model} (`sampling.session.load_checkpoint`): the given checkpoints (None skipped) by their
    objective, then for each of `objectives` still missing the workbook's model of it
    (`runs.discovery.workbook_model`), else a tiny one trained into folder/tiny-<objective>."""
    from sunfish_lib.sampling.session import load_checkpoint  # lazy: torch (1.6 s), only when a notebook loads models

    models = {}
    for path in checkpoints:
        if path is not None:
            loaded = load_checkpoint(path)
            models[loaded.objective] = loaded
    for objective in objectives:
        if objective not in models:
            path = workbook_model(run_dir, objective) or tiny_checkpoint(
                Path(folder) / f"tiny-{objective}", objective, max_steps, smoke=smoke)
            models[objective] = load_checkpoint(path)
    return models
