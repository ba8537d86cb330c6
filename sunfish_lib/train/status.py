"""`status.json`: what a training run is doing, for `sunfish runs` and notebook 09.

train() keeps it in the run folder, written atomically (temp file + rename) by rank 0:

    state            running | finished | interrupted | failed
    pid, pid_created, hostname   the rank-0 training process (pid_created tells a reused pid apart)
    started          first attempt's start; attempt_started, attempts (resumes add one)
    updated          last refresh: at start, every train.log_every steps (and at least every
                     REFRESH_S seconds while steps run), at checkpoint saves and validations
    ended            when it finished or failed
    step, max_steps  last optimizer step seen; checkpoint_step: step of the last checkpoint save
    elapsed_s        training wall time summed over attempts (also logged as `time/elapsed_s`)
    metrics          latest scalar train/ and val/ metrics
    error            the one-line reason, on failure
    signal, message  interrupted: SIGINT, SIGTERM or SIGUSR1 and the line printed (with the resume command)

Times are UTC ISO 8601. A run recorded as running whose process is gone is *killed*:
`sunfish_lib.runs.registry.infer_state` decides that when the folder is read.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from sunfish_lib.errors import Interrupted
from sunfish_lib.io.files import read_json, write_json
from sunfish_lib.runs.registry import STATUS_FILE, process_identity
from sunfish_lib.train.callbacks import logs_this_step

log = logging.getLogger(__name__)

REFRESH_S = 30.0


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def error_line(exc: BaseException) -> str:
    """One line naming the failure: the exception type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


def is_rank_zero() -> bool:
    """Before the trainer exists: rank 0 of node 0 by the launchers' environment variables."""
    return getattr(rank_zero_only, "rank", 0) == 0 and os.environ.get("NODE_RANK", "0") == "0"


class RunStatus(pl.Callback):
    """Keeps status.json current: `begin` once the run folder holds the config, refreshes as
    training goes (a Lightning callback), `tracking()` records finished or failed.

    Also logs `time/elapsed_s` (wall time since the first attempt began, minus the gaps
    between attempts), carried across resumes in the checkpoint's callback state.
    """

    def __init__(self, run_dir: str | Path, *, enabled: bool = True):
        self.path = Path(run_dir) / STATUS_FILE
        self.enabled = enabled and is_rank_zero()
        self.info: dict[str, Any] = {}
        self.every = 1
        self._elapsed0 = 0.0  # elapsed_s at the checkpoint this attempt resumed from
        self._t0 = time.monotonic()
        self._written = 0.0
        self._exception: BaseException | None = None
        self._write_failed = False

    # -- outside Lightning ----------------------------------------------------------------
    def begin(self, cfg, resume: bool, overfit_batches: int = 0) -> None:
        """Record the attempt as running (a resumed run keeps its first start and counts attempts)."""
        prev = read_json(self.path) if resume else {}
        now = utc_now()
        self.every = cfg.train.log_every
        self._t0 = time.monotonic()
        self._elapsed0 = 0.0
        self.info = {**process_identity(), "state": "running", "started": prev.get("started", now),
                     "attempt_started": now, "attempts": int(prev.get("attempts", 0)) + 1, "ended": None,
                     "step": int(prev.get("checkpoint_step") or 0), "max_steps": cfg.train.max_steps,
                     "checkpoint_step": prev.get("checkpoint_step"), "objective": cfg.diffusion.objective,
                     "elapsed_s": 0.0, "metrics": prev.get("metrics", {}), "error": None,
                     "signal": None, "message": None,
                     "overfit_batches": overfit_batches}
        self.write()

    @contextmanager
    def tracking(self):
        """finished when the block returns, interrupted (signal, step, the one line) on `Interrupted`,
        failed (with the one-line reason) when it raises anything else."""
        try:
            yield self
        except Interrupted as e:
            if self.info:
                self.info.update(signal=signal.Signals(e.signum).name, message=str(e), checkpoint_step=e.step)
                self.end("interrupted")
            raise
        except BaseException as e:
            if self.info:
                self.end("failed", error_line(self._exception or e))
            raise
        if self.info:
            self.end("finished")

    def end(self, state: str, error: str | None = None) -> None:
        self.info.update(state=state, ended=utc_now(), error=error)
        self.write()

    def elapsed(self) -> float:
        return self._elapsed0 + time.monotonic() - self._t0

    def write(self) -> None:
        if not self.enabled or not self.info:
            return
        self.info.update(updated=utc_now(), elapsed_s=round(self.elapsed(), 3))
        try:
            write_json(self.path, self.info)
        except OSError as e:  # bookkeeping never stops a run, nor hides the error that is ending it
            if not self._write_failed:
                log.warning("could not write %s (%s); sunfish runs will show a stale status", self.path, e.strerror or e)
            self._write_failed = True
            return
        self._write_failed = False
        self._written = time.monotonic()

    # -- Lightning hooks ------------------------------------------------------------------
    def _observe(self, trainer) -> None:
        self.info["step"] = int(trainer.global_step)
        keep = ("train/", "val/", "perf/tokens_per_s")
        self.info["metrics"] = {**self.info.get("metrics", {}), **{
            k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(keep) and v.numel() == 1}}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module._micro % pl_module.cfg.train.accumulate_grad_batches:
            return
        if logs_this_step(trainer):
            pl_module.log("time/elapsed_s", self.elapsed(), batch_size=1)
        if trainer.is_global_zero and self.info and (
                trainer.global_step % self.every == 0 or time.monotonic() - self._written >= REFRESH_S):
            self._observe(trainer)
            self.write()

    def on_validation_end(self, trainer, pl_module):
        if trainer.is_global_zero and self.info and not trainer.sanity_checking:
            self._observe(trainer)
            self.write()

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        if trainer.is_global_zero and self.info:
            self._observe(trainer)
            self.info["checkpoint_step"] = int(trainer.global_step)
            self.write()

    def on_exception(self, trainer, pl_module, exception):
        self._exception = exception  # Lightning turns Ctrl-C into SystemExit(1); keep the real cause

    def state_dict(self) -> dict[str, float]:
        return {"elapsed_s": float(self.elapsed())}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resuming: wall time continues from the checkpoint's (the gap since a kill is not counted)."""
        self._elapsed0 = float(state_dict.get("elapsed_s", 0.0))
