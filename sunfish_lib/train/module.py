"""The LightningModule: backbone + objective, optimizer, EMA, FSDP2 sharding.

Randomness of the objective (timesteps, masks, noise) comes from a generator reseeded
at every micro-batch from (seed, rank, micro-batch index), so a resumed run draws
exactly what the uninterrupted run drew, with no RNG state in the checkpoint.
"""

from __future__ import annotations

import math
import os
from typing import Any

import pytorch_lightning as pl
import torch
from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method
from torch.distributed.tensor import distribute_tensor

from sunfish_lib.config import Config
from sunfish_lib.diffusion import build_objective
from sunfish_lib.errors import SunfishError
from sunfish_lib.model import Backbone
from sunfish_lib.train.callbacks import TextLog, logs_this_step
from sunfish_lib.train.dcp_strategy import uses_sharded_checkpoints
from sunfish_lib.train.interrupt import agreed_signal
from sunfish_lib.train.optim import build_optimizer, build_scheduler


FORWARD_METHODS = ("encode", "logits", "embed", "to_embedding_space", "embedding_weight")


class EMA:
    """Exponential moving average of parameters (Polyak averaging), swapped in for eval and sampling."""

    def __init__(self, params: list[torch.Tensor], decay: float):
        self.decay = decay
        self.shadow = [p.detach().clone() for p in params]

    @torch.no_grad()
    def update(self, params: list[torch.Tensor]) -> None:
        torch._foreach_lerp_(self.shadow, [p.detach() for p in params], 1.0 - self.decay)

    @torch.no_grad()
    def swap(self, params: list[torch.Tensor]) -> None:
        """Exchange live weights and EMA weights (call twice to undo)."""
        for s, p in zip(self.shadow, params):
            tmp = p.detach().clone()
            p.copy_(s)
            s.copy_(tmp)


def _full(t: torch.Tensor) -> torch.Tensor:
    """A DTensor shard gathered to the full tensor (collective); plain tensors as they are."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _like(full: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """`full` laid out like `ref` (re-sharded when ref is a DTensor)."""
    if hasattr(ref, "device_mesh"):
        return distribute_tensor(full.to(ref.device, ref.dtype), ref.device_mesh, ref.placements)
    return full.to(ref.device, ref.dtype)


def fsdp_mixed_precision(precision: str):
    """FSDP2's MixedPrecisionPolicy for the trainer's precision: bf16 (fp16) parameters for the
    all-gather and the compute, fp32 gradient reductions; None (fp32 throughout) otherwise."""
    low = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(str(precision))
    return None if low is None else MixedPrecisionPolicy(param_dtype=low, reduce_dtype=torch.float32)


CPU_COMPILE_BREAK_EVEN_STEPS = 14_000
"""train.compile=auto on CPU compiles runs longer than this many optimizer steps: the largest break-even (compile
time / per-step saving, masked objective, 1 thread, torch 2.13) that bench/compile_breakeven.py measured on the
2-core machine: toy shape 14,340 steps; tiny 1,248 and mid 111, but those two ran under a load that slowed steps
~30x and compiling ~3x, which shrinks the figure, so the constant keeps the toy's until a quiet rerun."""


def compile_enabled(setting: bool | None, device: torch.device, max_steps: int = 0) -> bool:
    """train.compile: an explicit True/False, or None (auto) = on with CUDA, and on CPU for runs of more than
    CPU_COMPILE_BREAK_EVEN_STEPS steps."""
    if setting is not None:
        return bool(setting)
    return torch.device(device).type == "cuda" or max_steps > CPU_COMPILE_BREAK_EVEN_STEPS


def compile_note(setting: bool | None, device: torch.device, max_steps: int) -> str:
    """The train.log line that says whether the blocks are compiled, and why."""
    on = compile_enabled(setting, device, max_steps)
    if setting is not None:
        why = f"train.compile={str(bool(setting)).lower()}"
    elif torch.device(device).type == "cuda":
        why = "train.compile=auto, CUDA"
    else:
        why = (f"train.compile=auto, CPU: max_steps {max_steps} {'>' if on else '<='} the measured break-even "
               f"{CPU_COMPILE_BREAK_EVEN_STEPS}")
    return f"compile: {'on' if on else 'off'} ({why})"


class SunfishModule(pl.LightningModule):
    """Trains `Backbone` with the objective named by `cfg.diffusion.objective`."""

    def __init__(self, config: dict[str, Any], mask_token_id: int | None = None, eos_token_id: int | None = None):
        super().__init__()
        self.save_hyperparameters()  # plain dicts and ints: loadable with weights_only=True
        self.cfg = Config.from_dict(config).validate()
        self.model = Backbone.from_config(self.cfg)
        self.objective = build_objective(self.cfg, mask_token_id, eos_token_id)  # eos: the AR baseline's BOS
        self.ema: EMA | None = None
        self._micro = 0  # micro-batches seen (restored from global_step on resume)
        self._gen: torch.Generator | None = None
        self._pending_ema: list[torch.Tensor] | None = None
        self.last_grad_norm: float | None = None  # as of the last logged step
        self._bad_loss: float | None = None  # non-finite loss seen in this optimizer step's micro-batches
        self.nan_skips = 0  # optimizer steps skipped for a non-finite loss (train.nan_policy='skip')
        self._skips_in_a_row = 0
        self.interruption = None  # train/interrupt.py Interruption of this process (set by train())
        self.stop_signal = 0  # the signal all ranks agreed to stop for (0: none)
        self._compiled = False  # blocks wrapped by torch.compile (configure_model runs once per fit)
        self.compile_note = ""  # configure_model's decision, for train.log
        self._sharded = False  # FSDP2 applied (then the optimizer is not fused and samples skip)

    # -- parallelism -------------------------------------------------------------------
    def configure_model(self) -> None:
        """FSDP2 sharding (when a mesh is given), then torch.compile per block (train.compile)."""
        self._shard()
        device = self._trainer.strategy.root_device if self._trainer is not None else self.device  # not moved yet
        max_steps = self._trainer.max_steps if self._trainer is not None else self.cfg.train.max_steps
        self.compile_note = compile_note(self.cfg.train.compile, device, max_steps)
        if compile_enabled(self.cfg.train.compile, device, max_steps) and not self._compiled:
            for block in self.model.blocks:  # in place: parameter names (checkpoints) stay as they are
                block.compile()
            self._compiled = True

    def _shard(self) -> None:
        """FSDP2: `fully_shard` each block, then the root (ModelParallelStrategy provides the mesh)."""
        mesh = getattr(self, "_device_mesh", None)
        if mesh is None or self._sharded:
            return
        dp_mesh = mesh["data_parallel"] if "data_parallel" in (mesh.mesh_dim_names or ()) else mesh
        kw = {"mesh": dp_mesh}
        policy = fsdp_mixed_precision(self.trainer.precision if self._trainer is not None else "32-true")
        if policy is not None:
            kw["mp_policy"] = policy
        if self.cfg.train.cpu_offload:
            kw["offload_policy"] = CPUOffloadPolicy()
        for block in self.model.blocks:
            fully_shard(block, **kw)
        fully_shard(self.model, **kw)
        # Objectives call these root methods directly (not only forward): each must gather
        # the root's parameters (embeddings, final norm, time MLP) like forward does.
        for method in FORWARD_METHODS:
            register_fsdp_forward_method(self.model, method)
        self._sharded = True

    # -- randomness --------------------------------------------------------------------
    def _generator(self, micro: int, stream: int = 0) -> torch.Generator:
        if self._gen is None or self._gen.device != self.device:
            self._gen = torch.Generator(device=self.device)
        rank = self.global_rank if self._trainer is not None else 0
        # distinct, reproducible streams per (seed, rank, micro-batch, train/val)
        self._gen.manual_seed((self.cfg.seed * 1_000_003 + rank * 7_919 + micro * 2 + stream) % (2**63 - 1))
        return self._gen

    # -- steps -------------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        out = self.objective.loss(self.model, batch, generator=self._generator(self._micro))
        self._micro += 1
        loss = out["loss"]
        if not torch.isfinite(loss.detach()).all():
            return self._nan_guard(loss)
        if not logs_this_step(self._trainer):
            return loss
        bs = batch["input_ids"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        for k, v in out.items():  # scalar metrics, incl. per-timestep-bucket losses (mse/t0.00-0.25, ...)
            if k != "loss" and torch.is_tensor(v) and v.dim() == 0:
                self.log(f"train/{k}", v, batch_size=bs)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        out = self.objective.loss(self.model, batch, generator=self._generator(batch_idx, stream=1))
        # weighted by scored tokens, as `evaluate` weights sequences: short (padded) batches count less;
        # the ELBO where the training loss is another estimator (diffusion.masked_loss=masked_mean)
        self.log("val/loss", out.get("elbo", out["loss"]), prog_bar=True, sync_dist=True,
                 batch_size=int(self.objective.scored(batch).sum()))

    def _nan_guard(self, loss: torch.Tensor) -> torch.Tensor:
        """A non-finite loss: stop (train.nan_policy='stop'), or mark this optimizer step to be skipped.

        'skip' returns a zero loss that still backpropagates through every parameter (so DDP/FSDP
        ranks stay in step); `optimizer_step` then drops the gradients of the whole step. With
        several processes 'stop' goes the same way and every rank stops together in
        `optimizer_step`: one rank raising alone would leave the others waiting in a collective.
        """
        if self.cfg.train.nan_policy == "stop" and self.trainer.world_size == 1:
            raise self._nan_error(loss.item(), self.global_step, "training stopped")
        self._bad_loss = loss.item()
        return torch.nan_to_num(loss, 0.0, 0.0, 0.0) * 0.0

    def _nan_error(self, value: float, step: int, what: str) -> SunfishError:
        ckpt = getattr(self.trainer, "_sunfish_last_good", None) if self._trainer is not None else None
        where = f"; last good checkpoint: {ckpt}" if ckpt else "; no checkpoint was written yet"
        return SunfishError(f"loss became {value} at step {step}: {what}{where}. "
                            "Lower train.lr, check the data, or resume from that checkpoint")

    # -- optimizer ---------------------------------------------------------------------
    def configure_optimizers(self):
        opt = build_optimizer(self.model, self.cfg.train, self.cfg.model.n_layers,
                              fused=None if not self._sharded else False)
        sched = build_scheduler(opt, self.cfg.train)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Clip the global norm (works for DTensor shards too) and keep it for the monitors."""
        max_norm = self.cfg.train.grad_clip or math.inf
        norm = torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.grad is not None], max_norm)
        if logs_this_step(self._trainer):  # float(): a host sync, only where the value is written
            self.last_grad_norm = float(_full(norm) if hasattr(norm, "full_tensor") else norm)
            self.log("train/grad_norm", self.last_grad_norm, batch_size=1)

    def _ensure_ema(self) -> None:
        """Create the EMA (after sharding) and apply EMA weights restored from a checkpoint.

        Called lazily because strategies differ in whether the checkpoint is restored
        before or after `on_fit_start` (FSDP restores after setup).
        """
        if self.cfg.train.ema_decay <= 0:
            return
        if self.ema is None:
            self.ema = EMA(list(self.model.parameters()), self.cfg.train.ema_decay)
        if self._pending_ema is not None:
            with torch.no_grad():
                for s, full in zip(self.ema.shadow, self._pending_ema):
                    s.copy_(_like(full, s))
            self._pending_ema = None

    def on_fit_start(self) -> None:
        self._ensure_ema()
        if self.device.type == "cpu" and self.trainer.world_size > 1 and "OMP_NUM_THREADS" not in os.environ:
            # several CPU processes on one node: split the cores instead of oversubscribing them
            # (an explicit OMP_NUM_THREADS wins: torchrun sets it, and equal thread counts give equal sums)
            local = max(1, self.trainer.world_size // max(1, self.trainer.num_nodes))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        """The optimizer step, then the EMA update (before any callback can checkpoint).

        train.nan_policy='skip': when any micro-batch of this step (on any rank) had a non-finite
        loss, the gradients are dropped after the closure ran, so AdamW leaves every weight and
        moment as it was (like AMP's GradScaler, the step still counts, and the LR schedule moves on).
        A signal (train/interrupt.py) rides on the same all-reduce: every rank finishes this step
        and stops after it, so all of them checkpoint the same step.
        """
        step, skipped = self.global_step, False
        skip_policy = self.cfg.train.nan_policy == "skip"

        def closure():
            nonlocal skipped
            result = optimizer_closure()
            skipped, self.stop_signal = self._agree(self._bad_loss is not None)
            if skipped and not skip_policy:  # 'stop' with several processes: all ranks stop here, together
                value = self._bad_loss if self._bad_loss is not None else float("nan")  # nan: another rank's
                raise self._nan_error(value, step, "training stopped")
            if skipped:
                optimizer.zero_grad(set_to_none=True)  # AdamW skips parameters without a gradient
            return result

        super().optimizer_step(epoch, batch_idx, optimizer, closure)
        if self.stop_signal:  # FinalCheckpoint saves this step; train() reports the signal
            self.trainer.should_stop = True
            self.trainer.limit_val_batches = 0  # Lightning validates on a requested stop: not on the way out
        if skipped:
            self._record_skip(step)
            return
        self._skips_in_a_row = 0
        self._ensure_ema()
        if self.ema is not None:
            self.ema.update(list(self.model.parameters()))

    def _agree(self, bad: bool) -> tuple[bool, int]:
        """(any rank had a non-finite loss, the signal all ranks stop for or 0): one all-reduce with
        several processes; from this process's own values (no device sync) with one."""
        votes = self.interruption.votes() if self.interruption is not None else [0.0, 0.0, 0.0]
        if self.trainer.world_size > 1:
            flags = torch.tensor([float(bad), *votes], device=self.device)
            flags = self.trainer.strategy.reduce(flags, reduce_op="sum").tolist()
            bad, votes = flags[0] > 0, flags[1:]
        return bad, agreed_signal(votes)

    def _record_skip(self, step: int) -> None:
        """Count a skipped step, note it in train.log; stop after more than train.max_nan_skips in a row."""
        value = self._bad_loss if self._bad_loss is not None else float("nan")  # nan: another rank's
        self._bad_loss = None
        self.nan_skips += 1
        self._skips_in_a_row += 1
        self.log("train/nan_skips", float(self.nan_skips), batch_size=1)
        limit = self.cfg.train.max_nan_skips
        if self._skips_in_a_row > limit:
            raise self._nan_error(value, step, f"training stopped after {self._skips_in_a_row} skipped steps "
                                               f"in a row (train.max_nan_skips={limit})")

        for cb in self.trainer.callbacks if self.trainer.is_global_zero else ():
            if isinstance(cb, TextLog):
                cb.write(f"step {step}: loss was {value}; optimizer step skipped (train.nan_policy=skip; "
                         f"{self._skips_in_a_row} in a row, {self.nan_skips} in all)")

    def on_validation_start(self) -> None:
        self._ensure_ema()
        if self.ema is not None:
            self.ema.swap(list(self.model.parameters()))

    def on_validation_end(self) -> None:
        if self.ema is not None:
            self.ema.swap(list(self.model.parameters()))

    # -- checkpoint --------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["sunfish"] = {"config": self.cfg.to_dict(), "format": 1}
        self._ensure_ema()
        if self.ema is not None:  # DCP folders keep each rank's shards; one-file checkpoints the full tensors
            sharded = self._trainer is not None and uses_sharded_checkpoints(self.trainer.strategy)
            checkpoint["ema"] = [s.detach() if sharded else _full(s).cpu() for s in self.ema.shadow]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._micro = int(checkpoint.get("global_step", 0)) * self.cfg.train.accumulate_grad_batches
        self._pending_ema = checkpoint.get("ema")
