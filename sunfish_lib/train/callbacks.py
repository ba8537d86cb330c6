"""Training monitors as Lightning callbacks: throughput/MFU, grad and update norms, memory,
a `tail -f`-able text log, and periodic samples written to the run folder."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytorch_lightning as pl
import torch

from sunfish_lib.config import Config
from sunfish_lib.sizing.counts import executed_flops_per_token
from sunfish_lib.train.optim import format_groups, param_groups

# Dense bf16 tensor-core peaks (FLOP/s) from vendor datasheets, without sparsity.
GPU_PEAK_BF16 = {
    "H200": 989e12, "H100 SXM": 989e12, "H100 PCIe": 756e12, "H100": 989e12, "A100": 312e12,
    "L40S": 362e12, "A6000": 155e12, "A5000": 111e12, "A4500": 94.6e12, "4090": 165e12, "3090": 71e12,
}
# Plain fp32 (CUDA-core, no tensor cores) peaks: what an fp32 matmul gets unless TF32 is enabled.
GPU_PEAK_FP32 = {
    "H200": 67e12, "H100 SXM": 67e12, "H100 PCIe": 51e12, "H100": 67e12, "A100": 19.5e12,
    "L40S": 91.6e12, "A6000": 38.7e12, "A5000": 27.8e12, "A4500": 23.7e12, "4090": 82.6e12, "3090": 35.6e12,
}


def measure_cpu_matmul_peak(n: int = 1024, repeats: int = 5) -> float:
    """fp32 GEMM FLOP/s on this CPU (best of `repeats`): the MFU denominator without a GPU."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def gpu_peak_flops(name: str, precision: str, fp32_matmul: str | None = None) -> tuple[float, str]:
    """(datasheet peak FLOP/s, label) of GPU `name` for a run at `precision`.

    16-bit precisions: the bf16 tensor-core peak. 32-bit: the TF32 peak (half the bf16 one on
    these parts) only when TF32 is on (`torch.get_float32_matmul_precision()` "high"/"medium";
    nothing in Sunfish turns it on), else the plain fp32 peak that the matmuls actually run at.
    """
    fp32_matmul = torch.get_float32_matmul_precision() if fp32_matmul is None else fp32_matmul
    for key in GPU_PEAK_BF16:
        if key in name:
            if "16" in precision:
                return GPU_PEAK_BF16[key], f"datasheet {key} bf16"
            if fp32_matmul in ("high", "medium"):
                return GPU_PEAK_BF16[key] * 0.5, f"datasheet {key} tf32 (float32_matmul_precision={fp32_matmul!r})"
            return GPU_PEAK_FP32[key], f"datasheet {key} fp32 (TF32 off)"
    return float("nan"), f"unknown GPU {name!r}"


def device_peak_flops(device: torch.device, precision: str) -> tuple[float, str]:
    """(peak FLOP/s, where it came from) for the training device (see `gpu_peak_flops`)."""
    if device.type == "cuda":
        return gpu_peak_flops(torch.cuda.get_device_name(device), precision)
    return measure_cpu_matmul_peak(), "measured fp32 matmul"


def logs_this_step(trainer: pl.Trainer | None) -> bool:
    """Whether the metrics of the training step now running reach the loggers: every `train.log_every`-th
    optimizer step (Lightning's `log_every_n_steps`), the last one (`max_steps`, so a run's final metrics are its
    last step's), and a requested stop. On the other steps Lightning writes nothing, so a `self.log` there (Python
    bookkeeping in Lightning's result collection, about a dozen calls a step) is only cost; Lightning's share of a
    step is bench/step_profile.py's `lightning` figure. No trainer (a module driven by hand): True."""
    if trainer is None or trainer.log_every_n_steps == 0:
        return trainer is None
    step = trainer.fit_loop.epoch_loop._batches_that_stepped + 1  # 1-based, during the step and its batch-end hooks
    return step % trainer.log_every_n_steps == 0 or 0 < trainer.max_steps <= step or trainer.should_stop


class ThroughputMonitor(pl.Callback):
    """Tokens/s and MFU = achieved FLOP/s / peak, per optimizer step.

    FLOPs/token are the executed ones (`counts.executed_flops_per_token`, the one convention).
    """

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.flops_per_token = executed_flops_per_token(cfg, cfg.data.seq_len)
        self.peak = None
        self._t0 = None
        self.tokens_per_s = float("nan")
        self.mfu = float("nan")

    def on_train_start(self, trainer, pl_module):
        self.peak = device_peak_flops(pl_module.device, str(trainer.precision))[0]
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module._micro % self.cfg.train.accumulate_grad_batches:
            return
        now = time.perf_counter()
        tokens = batch["input_ids"].numel() * self.cfg.train.accumulate_grad_batches * trainer.world_size
        dt, self._t0 = now - self._t0, now
        self.tokens_per_s = tokens / dt
        self.mfu = self.tokens_per_s * self.flops_per_token / trainer.world_size / self.peak
        if not logs_this_step(trainer):
            return
        pl_module.log("perf/tokens_per_step", float(tokens), batch_size=1)  # as fed: the global batch in tokens
        pl_module.log("perf/tokens_per_s", self.tokens_per_s, batch_size=1)
        pl_module.log("perf/mfu", self.mfu, batch_size=1)

    def _restart_clock(self, *args, **kw):
        """Validation and checkpoint writes are not training time."""
        self._t0 = time.perf_counter()

    on_validation_end = _restart_clock
    on_save_checkpoint = _restart_clock


class NormMonitor(pl.Callback):
    """Per parameter group: gradient norm every `every` steps; update/weight ratio ||dW|| / ||W||
    every `every * ratio_every` steps.

    The ratio needs a copy of the weights from before the optimizer step (one extra model's
    worth of memory for that step, the local shard under FSDP), so it is taken 10x more rarely.
    """

    def __init__(self, every: int, ratio_every: int = 10):
        self.every, self.ratio_every = every, ratio_every
        self._before: list[tuple[str, list[torch.Tensor], list[torch.Tensor]]] | None = None

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        if trainer.global_step % self.every:
            return
        copy = trainer.global_step % (self.every * self.ratio_every) == 0
        self._before = [] if copy else None
        for g in optimizer.param_groups:
            params = [p for p in g["params"] if p.grad is not None]
            if copy:
                self._before.append((g["group_name"], params, [p.detach().clone() for p in params]))
            pl_module.log(f"grad_norm/{g['group_name']}", _norm([p.grad for p in params]), batch_size=1)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._before is None or pl_module._micro % pl_module.cfg.train.accumulate_grad_batches:
            return
        for name, params, before in self._before:
            delta = _norm([p.detach() - b for p, b in zip(params, before)])
            pl_module.log(f"update_ratio/{name}", delta / max(_norm(before), 1e-12), batch_size=1)
        self._before = None


def _norm(tensors: list[torch.Tensor]) -> float:
    if not tensors:
        return 0.0
    sq = sum((t.float() ** 2).sum() for t in tensors)
    sq = sq.full_tensor() if hasattr(sq, "full_tensor") else sq
    return float(sq.sqrt())


class MemoryMonitor(pl.Callback):
    """GPU allocated/reserved (GiB) and process RSS (GiB) every `every` steps."""

    def __init__(self, every: int):
        self.every = every

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step % self.every:
            return
        pl_module.log("mem/rss_gib", psutil.Process().memory_info().rss / 2**30, batch_size=1)
        if pl_module.device.type == "cuda":
            pl_module.log("mem/gpu_allocated_gib", torch.cuda.memory_allocated() / 2**30, batch_size=1)
            pl_module.log("mem/gpu_reserved_gib", torch.cuda.memory_reserved() / 2**30, batch_size=1)
            pl_module.log("mem/gpu_peak_gib", torch.cuda.max_memory_allocated() / 2**30, batch_size=1)


class TextLog(pl.Callback):
    """A plain-text log in the run folder, one line per logged step, flushed (follow with `tail -f`)."""

    def __init__(self, path: Path, every: int):
        self.path, self.every = Path(path), every
        self._f = None
        self._first_step_t0: float | None = None  # compiled blocks: when the first step began
        self._compile_reported = False

    def write(self, line: str) -> None:
        if self._f is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "a", buffering=1)
        self._f.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")

    def on_train_start(self, trainer, pl_module):
        if trainer.is_global_zero:
            cfg = pl_module.cfg
            self.write(f"start: step {trainer.global_step}, {pl_module.model.num_params():,} params, "
                       f"objective {cfg.diffusion.objective}, world size {trainer.world_size}{_launcher(trainer)}, "
                       f"precision {trainer.precision}")
            self.write(f"tokens per optimizer step: {cfg.tokens_per_step:,} = micro-batch {cfg.data.micro_batch_size} "
                       f"x seq {cfg.data.seq_len} x accumulate {cfg.accumulation} x {trainer.world_size} processes")
            if trainer.global_step == 0:
                _, info = param_groups(pl_module.model, cfg.train, cfg.model.n_layers)
                self.write("parameter groups (layer-wise learning rates):\n" + format_groups(info, cfg.train.lr))
            if getattr(pl_module, "compile_note", ""):
                self.write(pl_module.compile_note)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self._first_step_t0 is None and getattr(pl_module, "_compiled", False):
            self._first_step_t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self._first_step_t0 is not None and not self._compile_reported and trainer.is_global_zero:
            self._compile_reported = True  # the first step compiles the blocks' forward and backward graphs
            self.write(f"compile: the first step took {time.perf_counter() - self._first_step_t0:.1f} s "
                       "(compiling; later steps run the compiled blocks)")
        step = trainer.global_step
        if not trainer.is_global_zero or step % self.every or pl_module._micro % pl_module.cfg.train.accumulate_grad_batches:
            return
        m = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("train/", "perf/"))}
        opt = trainer.optimizers[0] if trainer.optimizers else None
        if opt is not None:
            m["lr"] = max(g["lr"] for g in opt.param_groups)
        parts = [f"step {step}"] + [f"{k}={v:.4g}" for k, v in sorted(m.items())]
        self.write(" ".join(parts))

    def on_validation_end(self, trainer, pl_module):
        if trainer.is_global_zero and "val/loss" in trainer.callback_metrics and not trainer.sanity_checking:
            self.write(f"step {trainer.global_step} val/loss={float(trainer.callback_metrics['val/loss']):.4g}")

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        trainer._sunfish_last_good = f"step {trainer.global_step} in {self.path.parent / 'checkpoints'}"

    def teardown(self, trainer, pl_module, stage):
        if self._f is not None:
            self.write(f"end: step {trainer.global_step}")
            self._f.close()
            self._f = None


class StopAtStep(pl.Callback):
    """Ends training after optimizer step `step` without changing the LR schedule (resume later)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            trainer.should_stop = True


def _launcher(trainer) -> str:
    """' (2 nodes, launched by SLURM)': who started the processes (Lightning's cluster environment), if several."""
    env = getattr(trainer.strategy, "cluster_environment", None)
    if env is None or trainer.world_size == 1:
        return ""
    return f" ({trainer.num_nodes} nodes, launched by {type(env).__name__.removesuffix('Environment')})"


class FinalCheckpoint(pl.Callback):
    """Writes `last.ckpt` at the step where training ends (max_steps or a requested stop).

    Saved from on_train_batch_end, like ModelCheckpoint's periodic saves, so Lightning's
    loop counters resume consistently (a save after `fit` returns is off by one step).
    Keep it last in the callback list so stops requested by earlier callbacks are seen.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self._saved_at = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module._micro % pl_module.cfg.train.accumulate_grad_batches:
            return
        done = trainer.global_step >= (trainer.max_steps or float("inf")) or trainer.should_stop
        if done and trainer.global_step != self._saved_at:
            trainer.save_checkpoint(str(self.path), weights_only=False)
            self._saved_at = trainer.global_step
