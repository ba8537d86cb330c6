"""FSDP2 with sharded checkpoints (io/dcp.py's format) through Lightning, and the rank-0 resume check.

- `ShardedModelParallelStrategy`: Lightning's ModelParallelStrategy whose checkpoints are DCP
  folders: every rank writes its own shards (weights, AdamW moments, EMA) into `<name>.tmp/`,
  rank 0 adds meta.pt and crc32.json and swaps the folder in. Resume loads each rank's shards
  into its DTensors in place: nothing is gathered. A one-file full-state `.ckpt` (a run trained
  before) still resumes through Lightning's own path.
- `RankZeroResumeCheck`: with several processes, rank 0 alone reads the checkpoint to check its
  CRCs, parts and shapes (the full-state archive or the DCP folder); the verdict is broadcast and
  every rank stops with the same one line, or the others skip their own CRC pass.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl
import torch.distributed as dist
import torch.distributed.checkpoint as dist_cp
from pytorch_lightning.strategies import ModelParallelStrategy
from torch.distributed.checkpoint import FileSystemWriter
from torch.distributed.checkpoint.state_dict import (
    get_model_state_dict, get_optimizer_state_dict, set_model_state_dict, set_optimizer_state_dict,
)

from sunfish_lib.errors import SunfishError
from sunfish_lib.io import dcp
from sunfish_lib.io.verify import mark_verified
from sunfish_lib.train.ckpt_verify import check_resume_checkpoint
from sunfish_lib.train.interrupt import saved_step


class ShardedModelParallelStrategy(ModelParallelStrategy):
    """FSDP2 (ModelParallelStrategy) whose checkpoints are sharded DCP folders (see module docstring)."""

    sharded_checkpoints = True  # SunfishModule.on_save_checkpoint keeps the EMA sharded for it

    def __init__(self, **kwargs):
        super().__init__(save_distributed_checkpoint=True, **kwargs)

    def save_checkpoint(self, checkpoint: dict, filepath, storage_options=None) -> None:
        path = Path(self.broadcast(str(filepath)))
        tmp = dcp.tmp_of(path)
        if self.global_rank == 0:
            dcp.remove_path(tmp)
        self.barrier("sunfish_dcp_begin")
        state = {"state_dict": checkpoint.pop("state_dict")}
        for i, opt_state in enumerate(checkpoint.pop("optimizer_states", [])):
            state[f"optimizer_{i}"] = opt_state
        ema = checkpoint.pop("ema", None)
        if ema is not None:
            state["ema"] = {str(i): t for i, t in enumerate(ema)}
        dist_cp.save(state, storage_writer=FileSystemWriter(str(tmp), sync_files=True))  # each rank its shards
        crcs = _gather_to_zero(dcp.rank_crcs(tmp, self.global_rank), self.world_size)
        if self.global_rank == 0:
            dcp.save_meta(tmp, checkpoint)
            dcp.write_manifest(tmp, {k: v for part in crcs for k, v in part.items()})
            dcp.swap_in(tmp, path)
        self.barrier("sunfish_dcp_end")

    def load_checkpoint(self, checkpoint_path, weights_only=None) -> dict:
        path = Path(self.broadcast(str(checkpoint_path)))
        if not dcp.is_sharded(path):  # a one-file full-state checkpoint: Lightning's path
            return super().load_checkpoint(path, weights_only=weights_only)
        module = self.lightning_module
        model_state = {"state_dict": get_model_state_dict(module)}
        dcp.load_into(model_state, path)  # each rank reads the slices of its own shards
        set_model_state_dict(module, model_state["state_dict"])
        for i, opt in enumerate(self.optimizers):
            opt_state = {f"optimizer_{i}": get_optimizer_state_dict(module, opt)}
            dcp.load_into(opt_state, path)
            set_optimizer_state_dict(module, opt, opt_state[f"optimizer_{i}"])
        module._ensure_ema()
        if module.ema is not None:
            dcp.load_into({"ema": {str(i): s for i, s in enumerate(module.ema.shadow)}}, path)
        return dcp.read_meta(path)


def _gather_to_zero(obj, world: int) -> list:
    out = [None] * world if dist.get_rank() == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out or []


class RankZeroResumeCheck(pl.Callback):
    """Rank 0 checks the checkpoint a multi-process run resumes from; every rank gets its verdict."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def setup(self, trainer, pl_module, stage: str) -> None:  # after the process group, before the restore
        error = ""
        if trainer.global_rank == 0:
            try:
                check_resume(self.path, pl_module)
            except SunfishError as e:
                error = str(e)
        error = trainer.strategy.broadcast(error, src=0)
        if error:
            raise SunfishError(error)
        if not dcp.is_sharded(self.path):
            mark_verified(self.path)  # rank 0 read its CRCs: the others' safe_torch_load skips that pass


def check_resume(path: Path, module) -> int:
    """The full check of a checkpoint to resume `module` from (a DCP folder or a one-file .ckpt); its step."""
    if dcp.is_sharded(path):
        return dcp.check_folder_fits(path, module)
    return check_resume_checkpoint(path, module)


def resume_step(path: Path) -> int:
    """The step a checkpoint holds, read without checking it (the check runs on rank 0 in the process group)."""
    return saved_step(path) or 0


def before_resume(path: Path, module, world_size: int) -> tuple[int, tuple]:
    """(the step to resume from, callbacks to add): one process checks now; several check on rank 0 in setup."""
    dcp.recover_swap(path)
    if world_size == 1:
        return check_resume(path, module), ()
    return resume_step(path), (RankZeroResumeCheck(path),)


def uses_sharded_checkpoints(strategy) -> bool:
    """Whether a strategy writes DCP folders (SunfishModule then keeps the EMA sharded in checkpoints)."""
    return bool(getattr(strategy, "sharded_checkpoints", False))
