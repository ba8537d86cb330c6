"""Tiny checkpoints for the sampling tests: random weights, written in seconds as a run folder."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.train_helpers import small_config


def make_run(folder: Path, objective: str = "masked", *, ckpt: bool = False, **sample) -> Path:
    """A run folder `folder` with export/ (safetensors + config + tokenizer) and config.json.

    ckpt=True also writes checkpoints/last.ckpt in the layout Sunfish's trainer uses.
    The model is untrained (seeded), which is all sampling tests need.
    """
    from sunfish_lib.data import get_tokenizer, save_tokenizer
    from sunfish_lib.model import Backbone
    from sunfish_lib.io.checkpoint import atomic_torch_save
    from sunfish_lib.io.export import export_model

    cfg = small_config(objective, **{"steps": 6, "length": 10, "num_samples": 2, "mask_length": 4, **sample})
    torch.manual_seed(0)
    model = Backbone.from_config(cfg)
    tok = get_tokenizer("bpe", cfg.data.bpe_vocab_size)
    folder.mkdir(parents=True, exist_ok=True)
    export_model(model, cfg, folder / "export", tok)
    cfg.save(folder / "config.json")
    if ckpt:
        save_tokenizer(tok, folder)
        state = {f"model.{k}": v for k, v in model.state_dict().items()}
        atomic_torch_save({"sunfish": {"config": cfg.to_dict()}, "state_dict": state}, folder / "checkpoints" / "last.ckpt")
    return folder
