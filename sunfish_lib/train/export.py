"""Export the trained model for sampling: full (gathered) weights, EMA when kept."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from sunfish_lib.io.export import export_model


def full_state_dict(module) -> dict[str, torch.Tensor]:
    """The backbone's full state dict on CPU (FSDP2 shards gathered; EMA weights if EMA is on).

    Collective under FSDP: call it on every rank.
    """
    model = module.model
    module._ensure_ema()
    if module.ema is not None:
        module.ema.swap(list(model.parameters()))
    try:
        if getattr(module, "_sharded", False):
            sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        else:
            sd = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    finally:
        if module.ema is not None:
            module.ema.swap(list(model.parameters()))
    return sd


def export_final(module, cfg, out_dir: Path, tokenizer, trainer) -> Path | None:
    """Write out_dir (model.safetensors, config.json, tokenizer, remote code, model card) on rank 0."""
    sd = full_state_dict(module)
    if trainer.is_global_zero:
        return export_model(module.model, cfg, out_dir, tokenizer, state_dict=sd,
                            card={"steps": int(trainer.global_step)})  # `sunfish export RUN` adds tokens, eval
    return None
