"""Which checkpoint a sampling notebook uses: the one asked for, the workbook's, or a tiny one trained here.

Notebooks 06 and 07 take a `checkpoint` parameter; under `sunfish workbook` they receive
the run folder as `run_dir` and use `run_dir/04_train` when notebook 04 exported a model
there. Otherwise `tiny_checkpoint` trains a small model of the wanted objective into a
folder (skipped when that folder already holds one), in seconds with `smoke` shapes.
"""

from __future__ import annotations

from pathlib import Path

from sunfish_lib.notebook.workbook import MAIN_RUN, recipe_config, train_or_reuse


def workbook_checkpoint(checkpoint: str | Path | None, run_dir: str | Path | None) -> str | None:
    """`checkpoint` if given, else the workbook's `run_dir/04_train` when it holds an exported model."""
    if checkpoint:
        return str(checkpoint)
    if run_dir and (Path(run_dir) / MAIN_RUN / "export" / "model.safetensors").is_file():
        return str(Path(run_dir) / MAIN_RUN)
    return None


def tiny_checkpoint(folder: str | Path, objective: str = "masked", max_steps: int = 200, *, smoke: bool = False,
                    sample: dict | None = None) -> Path:
    """Train the tiny recipe (smoke: the `smoke` preset) for max_steps into folder, or reuse it; returns it.

    `sample` sets the checkpoint's default sampling settings (e.g. steps, length).
    """
    cfg = recipe_config(objective, "tiny", max_steps, smoke=smoke,
                        overrides={"val_batches": 1, "tensorboard": False, "keep_best": 0, **(sample or {})})
    return train_or_reuse(cfg, folder, quiet=True)
