"""Stopping a run on SIGINT, SIGTERM or SIGUSR1 without losing it.

One path for the three signals: Ctrl-C; `kill`, `docker stop`, Kubernetes and SLURM's time
limit (SIGTERM); and the warning SLURM sends ahead of the limit with `sbatch --signal=USR1@90`.

1. The handler only records the signal (`Interruption.signum`); it never raises while a step runs.
2. Every process agrees on the stop step: the record rides on the all-reduce that
   `SunfishModule.optimizer_step` already does for the NaN policy, so all ranks finish the
   optimizer step in progress and stop after it, whichever of them received the signal.
3. `FinalCheckpoint` writes last.ckpt at that step (weights, optimizer, LR schedule, EMA, data
   position), as a stop at `--stop-at-step` does; `fit` returns, nothing is exported, and
   `train()` raises `Interrupted`: status.json says interrupted (signal, step), the CLI prints
   one line with the resume command and exits 128 + the signal (130 SIGINT, 143 SIGTERM).
4. With `train.requeue` in a SLURM job (Lightning's SLURMEnvironment detects one), SIGUSR1 also
   requeues the job (`scontrol requeue`) once the checkpoint is written.

A second signal while this happens prints "saving checkpoint, press again to abort"; a third
aborts (`SaveAborted`, raised from the handler): a checkpoint write in progress goes to
last.ckpt.tmp, so last.ckpt keeps the previous checkpoint.

Lightning's own SIGTERM and SLURM handlers are switched off for the run (`disable_lightning_signals`):
they broadcast from inside the handler and stop at a different point on each rank.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from pathlib import Path

import torch
from lightning_fabric.plugins.environments import LightningEnvironment, SLURMEnvironment
from pytorch_lightning.trainer.connectors.signal_connector import _SignalConnector

from sunfish_lib.errors import Interrupted
from sunfish_lib.io.dcp import saved_step as folder_step

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)  # order = which one a mixed vote reports


class SaveAborted(BaseException):
    """The third signal: stop now, whatever is being written (a BaseException, like KeyboardInterrupt,
    so that no `except Exception` on the way swallows it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Interruption:
    """The signal bookkeeping of one process (signals belong to the process: one per run)."""

    def __init__(self, *, announce: bool = True):
        self.signum = 0  # the first signal received (0: none)
        self.count = 0
        self.announce = announce  # print the second signal's warning (rank 0 only)
        self._previous: dict[int, object] = {}

    def install(self) -> "Interruption":
        """Take over the three signals (only the main thread may; elsewhere nothing changes)."""
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def restore(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        self.count += 1
        if self.count == 1:
            self.signum = signum
        elif self.count == 2:
            if self.announce:  # os.write: print() could re-enter a stderr write the signal interrupted
                os.write(2, b"saving checkpoint, press again to abort (last.ckpt keeps the previous checkpoint)\n")
        else:
            raise SaveAborted(signum)

    def votes(self) -> list[float]:
        """One count per signal in SIGNALS: what this process adds to the stop all-reduce."""
        return [float(self.signum == s) for s in SIGNALS]


def agreed_signal(votes) -> int:
    """The signal every process stops for, from the summed votes (0: carry on)."""
    return next((int(s) for s, v in zip(SIGNALS, votes) if v > 0), 0)


def disable_lightning_signals(trainer) -> None:
    """Keep Lightning from installing its SIGTERM/SIGUSR1 handlers when `fit` starts (see module docstring)."""
    class _NoSignals(_SignalConnector):
        def register_signal_handlers(self) -> None:
            self.received_sigterm = False

        def teardown(self) -> None:
            pass

    trainer._signal_connector = _NoSignals(trainer)


def resume_command(run_dir: Path) -> str:
    """The command that continues the run in run_dir exactly (`--resume` reads its own config.json)."""
    return f"sunfish train --resume {Path(run_dir)}"


def slurm_job_id() -> str | None:
    """The job to requeue when Lightning's SLURM environment is detected (array jobs: JOB_TASK)."""
    if not SLURMEnvironment.detect():
        return None
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    return f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array else os.environ.get("SLURM_JOB_ID")


def requeue(job_id: str) -> str:
    """`scontrol requeue JOB`; returns what happened, for the one-line message."""
    try:
        r = subprocess.run(["scontrol", "requeue", job_id], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"requeueing SLURM job {job_id} failed ({e}); resubmit it"
    if r.returncode:
        why = " ".join((r.stderr or r.stdout).split())[:200]
        return f"requeueing SLURM job {job_id} failed ({why or f'exit {r.returncode}'}); resubmit it"
    return f"SLURM job {job_id} requeued (its script must pass --resume)"


def stopped(signum: int, step: int, run_dir: Path, *, requeue_enabled: bool, show: bool,
            exit_code: int | None = None) -> Interrupted:
    """The Interrupted a run raises once last.ckpt holds `step` (requeueing first when asked)."""
    run_dir = Path(run_dir)
    name = signal.Signals(signum).name
    text = (f"{name}: training stopped after step {step}, saved in {run_dir / 'checkpoints' / 'last.ckpt'}; "
            f"resume with: {resume_command(run_dir)}")
    job = slurm_job_id() if requeue_enabled and signum == signal.SIGUSR1 and show else None
    if job:
        text += f"; {requeue(job)}"
    return Interrupted(text, signum, step=step, exit_code=exit_code, show=show)


def aborted(signum: int, run_dir: Path, *, show: bool) -> Interrupted:
    """The Interrupted of a stop cut short by a third signal: what last.ckpt still holds."""
    run_dir = Path(run_dir)
    name = signal.Signals(signum).name
    last = run_dir / "checkpoints" / "last.ckpt"
    step = saved_step(last)
    kept = f"{last} keeps step {step}" if step is not None else "no checkpoint was written yet"
    return Interrupted(f"{name} three times: saving aborted; {kept}; resume with: {resume_command(run_dir)}",
                       signum, step=step, show=show)


def saved_step(path: Path) -> int | None:
    """global_step of a Lightning checkpoint, read without loading its tensors (mmap), or None."""
    if Path(path).is_dir():  # a sharded (DCP) checkpoint folder
        return folder_step(path)
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["global_step"])
    except Exception:  # missing or unreadable: the message says so
        return None


def quiet_exit_code(trainer) -> int | None:
    """0 for processes that Lightning's own launcher started (local rank > 0): their launcher kills
    the main process when one of them exits non-zero, before it can report; None = 128 + signal."""
    env = getattr(trainer.strategy, "cluster_environment", None)
    return 0 if isinstance(env, LightningEnvironment) and trainer.local_rank != 0 else None
