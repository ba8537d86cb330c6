"""Which checkpoint a sampling notebook uses: the one asked for, the workbook's, or a tiny one trained here.

Notebooks 06 and 07 take a `checkpoint` parameter; under `sunfish workbook` they receive
the run folder as `run_dir` and use `run_dir/04_train` when notebook 04 exported a model
there. Otherwise `tiny_checkpoint` trains a small model of the wanted objective into a
folder (skipped when that folder already holds one), in seconds with `smoke` shapes.
"""

from __future__ import annotations

from pathlib import Path

from sunfish_lib.config import DEFAULT_SAMPLERS

SMOKE_SHAPE = {"n_layers": 2, "d_model": 64, "n_heads": 2, "seq_len": 32, "micro_batch_size": 4}


def workbook_checkpoint(checkpoint: str | Path | None, run_dir: str | Path | None) -> str | None:
    """`checkpoint` if given, else the workbook's `run_dir/04_train` when it holds an exported model."""
    if checkpoint:
        return str(checkpoint)
    if run_dir and (Path(run_dir) / "04_train" / "export" / "model.safetensors").is_file():
        return str(Path(run_dir) / "04_train")
    return None


def tiny_checkpoint(folder: str | Path, objective: str = "masked", max_steps: int = 200, *, smoke: bool = False,
                    sample: dict | None = None) -> Path:
    """Train the tiny preset (smoke: 2 layers x 64 wide) for max_steps into folder; returns it.

    `sample` sets the checkpoint's default sampling settings (e.g. steps, length).
    """
    from sunfish_lib.config import get_config
    from sunfish_lib.train.trainer import train

    folder = Path(folder)
    if (folder / "export" / "model.safetensors").is_file():
        return folder
    settings = {"objective": objective, "sampler": DEFAULT_SAMPLERS[objective], "max_steps": max_steps,
                "val_every": max_steps, "ckpt_every": max_steps,
                "log_every": max(1, max_steps // 20), "val_batches": 1, "tensorboard": False, "keep_best": 0,
                **(SMOKE_SHAPE if smoke else {}), **(sample or {})}
    train(get_config("tiny", settings), folder, progress=False)
    return folder
