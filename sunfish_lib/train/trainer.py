"""Trainer factory and the training entry point (`sunfish train`, `python -m sunfish_lib.cli train`).

Strategies: `auto`/`single` (one device), `ddp`, and `fsdp` = FSDP2 (`fully_shard` per
block, in `SunfishModule.configure_model`) through Lightning's ModelParallelStrategy,
which, unlike Lightning's older `"fsdp"` strategy, also runs on CPUs over gloo.
Checkpoints are full state dicts written atomically (`last.ckpt` is one file), except for FSDP
on several processes, where `last.ckpt/` is a sharded DCP folder that each rank writes and reads
its own part of (io/dcp.py); `load_for_inference` and `sunfish export` consolidate it.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar, TQDMProgressBar
from pytorch_lightning.callbacks.progress import ProgressBar
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from pytorch_lightning.strategies import DDPStrategy, ModelParallelStrategy

from sunfish_lib.config import Config, with_max_steps
from sunfish_lib.data import SunfishDataModule, get_tokenizer, save_tokenizer
from sunfish_lib.errors import SunfishError
from sunfish_lib.io.export import load_weights
from sunfish_lib.runs.lock import RunLock
from sunfish_lib.runs.discovery import BEST_CHECKPOINT
from sunfish_lib.train.batches import fixed_batches
from sunfish_lib.train.callbacks import FinalCheckpoint, MemoryMonitor, NormMonitor, TextLog, ThroughputMonitor
from sunfish_lib.train.checkpoint import AtomicCheckpointIO
from sunfish_lib.io.dcp import recover_swap
from sunfish_lib.train.dcp_strategy import ShardedModelParallelStrategy, before_resume
from sunfish_lib.train.diskspace import check_free_space, remove_partial_writes
from sunfish_lib.train.export import export_final
from sunfish_lib.train.faults import DataFaultCheckpoint
from sunfish_lib.train.interrupt import (
    Interruption, SaveAborted, aborted, disable_lightning_signals, quiet_exit_code, stopped,
)
from sunfish_lib.train.module import SunfishModule
from sunfish_lib.train.samples import PeriodicSamples, SampleFn
from sunfish_lib.train.status import RunStatus, is_rank_zero


def resolve_precision(precision: str) -> str:
    """`auto`: bf16-mixed on GPUs that support bf16, fp32 elsewhere (bf16 is ~2x slower on CPUs)."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def build_strategy(cfg: Config):
    t = cfg.train
    world = t.devices * t.num_nodes
    kind = t.strategy
    if kind in ("auto", "single"):
        if world > 1 and kind == "auto":
            kind = "ddp"
        elif world > 1:
            raise SunfishError(f"train.strategy='single' runs on one device, but devices x nodes = {world}; use ddp or fsdp")
        else:
            return "auto"
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if kind == "ddp":
        return DDPStrategy(process_group_backend=backend, checkpoint_io=AtomicCheckpointIO())
    if world > 1:  # sharded checkpoints: each rank writes and reads its own shards (io/dcp.py)
        strategy = ShardedModelParallelStrategy(data_parallel_size=world, tensor_parallel_size=1,
                                                process_group_backend=backend)
    else:
        strategy = ModelParallelStrategy(data_parallel_size=world, tensor_parallel_size=1,
                                         save_distributed_checkpoint=False, process_group_backend=backend)
    strategy.checkpoint_io = AtomicCheckpointIO()
    return strategy


def _progress_bar(enable: bool | None):
    """Rich in terminals, tqdm in Jupyter, none when piped (train.log has the numbers)."""
    if enable is False:
        return None
    if "ipykernel" in sys.modules:
        return TQDMProgressBar(refresh_rate=1)
    if enable or sys.stdout.isatty():
        return RichProgressBar()
    return None


WANDB_ID_FILE = "wandb_id"


def wandb_run_id(run_dir: Path) -> str | None:
    """The W&B run id of this run folder: made on the first start, kept in run_dir/wandb_id, reused on resume."""
    path = run_dir / WANDB_ID_FILE
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip()
    if not is_rank_zero():  # only rank 0 logs to W&B (and writes the file)
        return None
    run_id = uuid.uuid4().hex[:12]
    path.write_text(run_id + "\n")
    return run_id


def _loggers(cfg: Config, run_dir: Path, resume_step: int = 0) -> list:
    # One CSV per attempt (logs/00, logs/01 after a resume, ...): Lightning's CSV logger
    # truncates an existing metrics.csv; `read_metrics` stitches the attempts together.
    attempt = len(list((run_dir / "logs").glob("[0-9][0-9]"))) if (run_dir / "logs").is_dir() else 0
    loggers = [CSVLogger(save_dir=str(run_dir), name="logs", version=f"{attempt:02d}")]
    if cfg.train.tensorboard:  # purge_step: events past the checkpoint (steps trained again) are dropped
        loggers.append(TensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version="", default_hp_metric=False,
                                         **({"purge_step": resume_step} if resume_step else {})))
    if cfg.train.wandb:
        try:
            # lazy: wandb is optional (not a dependency) and Lightning's WandbLogger needs it
            from pytorch_lightning.loggers import WandbLogger
            import wandb  # noqa: F401
        except ImportError:
            raise SunfishError("train.wandb=True but wandb is not installed; `pip install wandb` "
                               "(set WANDB_MODE=offline to log without an account)") from None
        loggers.append(WandbLogger(project="sunfish", save_dir=str(run_dir), name=run_dir.name,
                                   id=wandb_run_id(run_dir), resume="allow"))  # a resume continues the same W&B run
    return loggers


def _callbacks(cfg: Config, run_dir: Path, progress: bool | None, fast_dev_run: bool = False,
               sample_fn: SampleFn | None = None) -> list:
    t = cfg.train
    ckpt_dir = run_dir / "checkpoints"
    cbs = [] if fast_dev_run else [  # fast_dev_run: no checkpoints, no loggers
        ModelCheckpoint(dirpath=ckpt_dir, save_last=True, save_top_k=0, every_n_train_steps=t.ckpt_every,
                        enable_version_counter=False),
        LearningRateMonitor(logging_interval="step"), DataFaultCheckpoint(ckpt_dir / "last.ckpt")]
    cbs += [
        ThroughputMonitor(cfg), NormMonitor(t.log_every), MemoryMonitor(t.log_every),
        TextLog(run_dir / "train.log", t.log_every),
    ]
    if t.keep_best and not fast_dev_run:
        cbs.append(ModelCheckpoint(dirpath=ckpt_dir, filename=BEST_CHECKPOINT, monitor="val/loss", mode="min",
                                   save_top_k=t.keep_best, auto_insert_metric_name=False,
                                   enable_version_counter=False))
    if t.sample_every:
        if sample_fn is None:
            raise SunfishError(f"train.sample_every={t.sample_every} needs a sample function; train with "
                               "`sunfish train` or pass train(..., sample_fn=sampling.session.training_samples)")
        cbs.append(PeriodicSamples(run_dir / "samples", t.sample_every, sample_fn))
    bar = _progress_bar(progress)
    return cbs + ([bar] if bar is not None else [])


def _quiet_lightning() -> None:
    """Keep Lightning's banners and tips out of logs and notebooks (train.log has what matters)."""
    logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    warnings.filterwarnings("ignore", message=r".*Checkpoint directory .* exists and is not empty.*")
    # the streaming loader splits its shards per worker itself (data/), so its __len__ holds with workers
    warnings.filterwarnings("ignore", message=r".*`IterableDataset` has `__len__` defined.*")
    # a fixed set of overfit batches (notebook 03) is shorter than the log interval; our own logger sets the cadence
    warnings.filterwarnings("ignore", message=r".*number of training batches \(\d+\) is smaller than the logging interval.*")


def build_trainer(cfg: Config, run_dir: Path, *, fast_dev_run: bool = False, progress: bool | None = None,
                  extra_callbacks: tuple = (), max_steps: int | None = None, resume_step: int = 0,
                  sample_fn: SampleFn | None = None):
    """A configured `pl.Trainer` writing into run_dir (resume_step: the step a resumed run restarts from)."""
    _quiet_lightning()
    t = cfg.train
    callbacks = _callbacks(cfg, run_dir, progress, fast_dev_run, sample_fn) + list(extra_callbacks) \
        + ([] if fast_dev_run else [FinalCheckpoint(run_dir / "checkpoints" / "last.ckpt")])
    strategy = build_strategy(cfg)
    return pl.Trainer(
        plugins=[AtomicCheckpointIO()] if isinstance(strategy, str) else None,  # ddp/fsdp strategies carry it
        accelerator="gpu" if torch.cuda.is_available() else "cpu",
        devices=t.devices, num_nodes=t.num_nodes,
        strategy=strategy,
        precision=resolve_precision(t.precision),
        max_steps=max_steps or t.max_steps,
        accumulate_grad_batches=t.accumulate_grad_batches,
        val_check_interval=t.val_every * t.accumulate_grad_batches,
        check_val_every_n_epoch=None,
        limit_val_batches=t.val_batches,
        num_sanity_val_steps=0,
        log_every_n_steps=t.log_every,
        logger=False if fast_dev_run else _loggers(cfg, run_dir, resume_step),
        callbacks=callbacks,
        enable_progress_bar=any(isinstance(c, ProgressBar) for c in callbacks),
        enable_checkpointing=not fast_dev_run,
        fast_dev_run=fast_dev_run,
        default_root_dir=str(run_dir),
        use_distributed_sampler=False,  # the data pipeline shards by rank itself
        enable_model_summary=False,
    )


def check_run_dir_writable(run_dir: Path) -> None:
    """Fail before training, not after the first hour: the run folder must take a write."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        # a probe of this process's own: every rank of every node probes the same (shared) folder at once, and
        # one fixed name let a node unlink the other's probe, fail "not writable" and leave its peers waiting
        fd, probe = tempfile.mkstemp(dir=run_dir, prefix=".write-probe-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(b"\0" * 65536)
                f.flush()
                os.fsync(f.fileno())
        finally:
            os.unlink(probe)
    except OSError as e:
        raise SunfishError(f"run folder {run_dir} is not writable ({e.strerror}); pick another --run-dir or free space") from None


def prepare_run(cfg: Config, run_dir: Path, resume: bool) -> Config:
    """Write (or, when resuming, read back) the run's config.json; returns the config to train with."""
    path = run_dir / "config.json"
    if resume and path.is_file():
        saved = with_max_steps(Config.load(path), cfg.train.max_steps)  # warmup capped if it no longer fits
        diff = _differs(saved, cfg)
        if diff:
            raise SunfishError(f"{path} differs from the requested config ({diff}); resume with the saved "
                               "config (only train.max_steps may change) or start a new --run-dir")
        cfg = saved
    elif not resume and (run_dir / "checkpoints" / "last.ckpt").exists():
        raise SunfishError(f"{run_dir} already holds a run; pass --resume to continue it or pick a new --run-dir")
    if is_rank_zero():  # one writer: every rank reads the same config
        cfg.save(path)
    return cfg


def saved_max_steps(run_dir: Path) -> int | None:
    """train.max_steps of the run folder's config.json (None: no config yet)."""
    path = run_dir / "config.json"
    return Config.load(path).train.max_steps if path.is_file() else None


def announce_new_length(before: int | None, cfg: Config) -> None:
    """A resume that changes max_steps says so (rank 0, once the checkpoint has been accepted)."""
    if before is not None and before != cfg.train.max_steps and is_rank_zero():
        print(f"resume: train.max_steps {before} -> {cfg.train.max_steps} (--max-steps changes the run's length; "
              f"the LR {cfg.train.decay} decay now ends at step {cfg.train.max_steps})")


def _differs(a: Config, b: Config) -> str:
    da, db = a.to_dict(), b.to_dict()
    for sec in da:
        if isinstance(da[sec], dict):
            for k in da[sec]:
                if k != "max_steps" and da[sec][k] != db[sec][k]:
                    return f"{sec}.{k}: saved {da[sec][k]!r}, requested {db[sec][k]!r}"
        elif sec != "preset" and da[sec] != db[sec]:
            return f"{sec}: saved {da[sec]!r}, requested {db[sec]!r}"
    return ""


def train(cfg: Config, run_dir: str | Path, *, resume: bool = False, fast_dev_run: bool = False,
          overfit_batches: int = 0, progress: bool | None = None, tokenizer=None,
          callbacks: tuple = (), sample_fn: SampleFn | None = None) -> dict[str, Any]:
    """Train `cfg` into run_dir (resuming from checkpoints/last.ckpt when asked); returns a summary.

    run_dir/status.json records the run for `sunfish runs`: running, then finished, interrupted
    (a signal: train/interrupt.py) or failed with the one-line reason (sunfish_lib/train/status.py).
    Rank 0 holds the folder's writer lock (sunfish_lib/runs/lock.py) from before its first write to the end.
    sample_fn: what writes `train.sample_every`'s periodic samples (`train.samples.SampleFn`; the callers above
    training and sampling pass `sampling.session.training_samples`).
    """
    run_dir = Path(run_dir)
    lock = RunLock(run_dir, "sunfish train").acquire() if is_rank_zero() else None
    interruption = Interruption(announce=is_rank_zero()).install()
    try:
        status = RunStatus(run_dir, enabled=not fast_dev_run)
        with status.tracking():
            try:
                return _train(cfg, run_dir, resume=resume, fast_dev_run=fast_dev_run, overfit_batches=overfit_batches,
                              progress=progress, tokenizer=tokenizer, callbacks=callbacks, status=status,
                              interruption=interruption, sample_fn=sample_fn)
            except SaveAborted as e:
                raise aborted(e.signum, run_dir, show=is_rank_zero()) from None
    finally:
        interruption.restore()
        if lock is not None:
            lock.release()


def _train(cfg: Config, run_dir: str | Path, *, resume: bool, fast_dev_run: bool, overfit_batches: int,
           progress: bool | None, tokenizer, callbacks: tuple, status, interruption,
           sample_fn: SampleFn | None = None) -> dict[str, Any]:
    run_dir = Path(run_dir)
    check_run_dir_writable(run_dir)
    before = saved_max_steps(run_dir) if resume else None
    cfg = prepare_run(cfg.validate(), run_dir, resume).resolve_batch()  # config.json keeps the global batch
    status.begin(cfg, resume, overfit_batches)
    if not fast_dev_run:
        remove_partial_writes(run_dir)  # *.tmp left by a write that was killed: never read, only in the way
        check_free_space(cfg, run_dir, resolve_precision(cfg.train.precision))
    tok = tokenizer or get_tokenizer(cfg.data.tokenizer, cfg.data.bpe_vocab_size)
    if not (run_dir / "tokenizer").is_dir() and is_rank_zero():
        save_tokenizer(tok, run_dir)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    module = SunfishModule(cfg.to_dict(), mask_token_id=tok.mask_token_id, eos_token_id=tok.eos_token_id)
    module.interruption = interruption
    last = run_dir / "checkpoints" / "last.ckpt"  # a file, or a sharded (DCP) folder for multi-process FSDP
    recover_swap(last)
    ckpt_path = str(last) if resume and last.exists() else None
    resume_step = 0
    if ckpt_path is not None:  # a truncated, tampered or foreign last.ckpt: one line, before Lightning reads it
        resume_step, checks = before_resume(last, module, cfg.train.devices * cfg.train.num_nodes)
        callbacks = (*callbacks, *checks)  # several processes: rank 0 checks once the process group is up
        announce_new_length(before, cfg)
    if cfg.train.init_from and ckpt_path is None:  # a resumed run's checkpoint already holds the weights
        load_weights(module.model, cfg.train.init_from)
    dm = SunfishDataModule.from_config(cfg, tokenizer=tok)
    trainer = build_trainer(cfg, run_dir, fast_dev_run=fast_dev_run, progress=progress,
                            extra_callbacks=(*callbacks, status), resume_step=resume_step, sample_fn=sample_fn)
    _fit(trainer, module, dm, ckpt_path, overfit_batches)
    if module.stop_signal and trainer.global_step < trainer.max_steps:  # last.ckpt holds this step: no export
        raise stopped(module.stop_signal, trainer.global_step, run_dir, requeue_enabled=cfg.train.requeue,
                      show=trainer.is_global_zero, exit_code=quiet_exit_code(trainer))
    if not fast_dev_run:
        export_final(module, cfg, run_dir / "export", tok, trainer)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    return {"run_dir": str(run_dir), "global_step": trainer.global_step, "metrics": metrics,
            "is_global_zero": trainer.is_global_zero}


def _fit(trainer, module, dm, ckpt_path: str | None, overfit_batches: int) -> None:
    """trainer.fit under this run's signal handling (train/interrupt.py): Lightning's own handlers off;
    a save aborted by a third signal also ends the processes Lightning's launcher started."""

    disable_lightning_signals(trainer)
    try:
        if overfit_batches:

            loader = fixed_batches(dm, overfit_batches)
            trainer.fit(module, train_dataloaders=loader, val_dataloaders=loader, ckpt_path=ckpt_path,
                        weights_only=True)
        else:
            trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
    except SaveAborted:
        launcher = trainer.strategy.launcher
        if launcher is not None and getattr(launcher, "procs", None):
            launcher.kill(signal.SIGKILL)  # they may wait for rank 0 in a collective that never comes
        raise
