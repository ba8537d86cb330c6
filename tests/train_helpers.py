"""Small, fast training configs and subprocess runners for the training tests."""

from __future__ import annotations

import pytorch_lightning as pl

from sunfish_lib.config import DEFAULT_SAMPLERS, get_config

SMALL = {"max_steps": 6, "warmup_steps": 2, "val_every": 3, "ckpt_every": 3, "log_every": 1, "keep_best": 1}
"""The training tests' run settings on the `smoke` preset (its shape, data and validation batches)."""

SMALL_ARGS = [a for k, v in SMALL.items() if k != "max_steps" for a in ("--set", f"{k}={v}")]
"""SMALL as `sunfish train --preset smoke` flags (max_steps left to each test's --max-steps)."""


def small_config(objective: str = "masked", **extra):
    sampler = DEFAULT_SAMPLERS[objective]
    return get_config("smoke", {**SMALL, "objective": objective, "sampler": sampler, **extra})


class BreakWeights(pl.Callback):
    """Sets one weight to NaN before optimizer step `step` (NaN-loss injection)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            with __import__("torch").no_grad():
                pl_module.model.ln_f.weight.fill_(float("nan"))


def export_of(run_dir) -> dict:
    """The tensors of a run folder's export/model.safetensors."""
    from safetensors.torch import load_file

    return load_file(str(run_dir / "export" / "model.safetensors"))


def trained_straight(args: list[str], max_steps: int, run_dir) -> dict:
    """The export of the run `sunfish train ARGS --max-steps N` describes, trained in-process without a stop."""
    from sunfish_lib.cli import build_parser
    from sunfish_lib.commands.train import config_from_args
    from sunfish_lib.train.trainer import train

    cfg = config_from_args(build_parser().parse_args(["train", *args, "--max-steps", str(max_steps)]))
    assert train(cfg, run_dir, progress=False)["global_step"] == max_steps
    return export_of(run_dir)
