"""Launching training from a notebook: a subprocess (FSDP/DDP processes never live in a kernel).

`launch(cfg, run_dir)` writes the run's config.json and starts `python -m
sunfish_lib.cli train --config ... --run-dir ...` (with `--resume` when the folder already
holds a checkpoint, so re-running a notebook continues the run). Multi-GPU runs on one
node use Lightning's own process launcher; pass `torchrun=True` for torchrun.
`follow(proc, run_dir)` yields the run's metrics as they are written.

Interrupting the kernel while `follow` runs stops the training the way Ctrl-C stops `sunfish
train` (train/interrupt.py): one SIGINT, the step in progress finishes, last.ckpt is written, and
`follow` raises `Interrupted` with the training's own line; re-running the cell resumes. The
process has its own session, so Jupyter's interrupt (SIGINT to the kernel's process group) reaches
it only through `follow`: one press, one signal (a second warns, a third aborts the save). When the
kernel exits, training processes still running get the same SIGINT and save before they end.
"""

from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import time
import weakref
from pathlib import Path
from typing import Iterator

from sunfish_lib.config import Config, with_max_steps
from sunfish_lib.errors import Interrupted, SunfishError
from sunfish_lib.io.files import read_json
from sunfish_lib.runs.registry import STATUS_FILE
from sunfish_lib.runs.lock import check_unlocked
from sunfish_lib.io.metrics import read_metrics

_LAUNCHED: "weakref.WeakSet[subprocess.Popen]" = weakref.WeakSet()


def training_command(cfg: Config, run_dir: Path, *, resume: bool, torchrun: bool = False,
                     stop_at_step: int | None = None) -> list[str]:
    """The argv that trains `cfg` into run_dir."""
    config_path = Path(run_dir) / "config.request.json"
    cfg.save(config_path)
    args = ["-m", "sunfish_lib.cli", "train", "--config", str(config_path), "--run-dir", str(run_dir), "--no-progress"]
    if resume:  # a resume keeps the saved max_steps unless told: pass the requested one
        args += ["--resume", "--max-steps", str(cfg.train.max_steps)]
    if stop_at_step:
        args += ["--stop-at-step", str(stop_at_step)]
    if torchrun and cfg.train.devices > 1:
        return [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={cfg.train.devices}", *args]
    return [sys.executable, *args]


def launch(cfg: Config, run_dir: str | Path, *, resume: bool | None = None, torchrun: bool = False,
           stop_at_step: int | None = None, threads: int | None = None) -> subprocess.Popen:
    """Start training in a subprocess; output goes to run_dir/stdout.log. Resumes when a checkpoint exists.

    threads: CPU threads the process may use (OMP_NUM_THREADS), for runs that share the cores; None: torch's default.
    """
    run_dir = Path(run_dir)
    check_unlocked(run_dir)  # one writer per run folder: refuse before writing config.request.json
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume is None:
        resume = (run_dir / "checkpoints" / "last.ckpt").exists()  # a file, or a sharded folder
    cmd = training_command(cfg, run_dir, resume=resume, torchrun=torchrun, stop_at_step=stop_at_step)
    out = open(run_dir / "stdout.log", "ab")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(max(1, int(threads)))
    proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=run_dir, start_new_session=True)
    _LAUNCHED.add(proc)
    return proc


def follow(proc: subprocess.Popen, run_dir: str | Path, every: float = 2.0,
           timeout: float | None = None) -> Iterator[list[dict]]:
    """Yield the run's metric rows every `every` seconds until the process ends (then once more).

    Raises SunfishError with the tail of stdout.log if training failed, and `Interrupted` (the
    training's one line) when it was stopped: by a signal, or by interrupting this loop.
    """
    run_dir = Path(run_dir)
    start = time.time()
    try:
        while proc.poll() is None:
            if timeout is not None and time.time() - start > timeout:
                proc.kill()
                raise SunfishError(f"training did not finish within {timeout:.0f} s; see {run_dir / 'stdout.log'}")
            time.sleep(every)
            yield read_metrics(run_dir)
    except KeyboardInterrupt:
        stop(proc)
        check_ended(proc, run_dir)
        raise
    except GeneratorExit:  # the cell was interrupted outside this generator (e.g. while plotting)
        if proc.poll() is None:
            stop(proc)
            print(ended_line(proc, run_dir), file=sys.stderr)
        raise
    yield read_metrics(run_dir)
    check_ended(proc, run_dir)


def stop(proc: subprocess.Popen) -> int:
    """SIGINT to a launched training process and wait for it (it saves first); returns its exit code.

    Interrupted again while waiting, it passes the SIGINT on: the second warns, the third aborts the save.
    """
    proc.send_signal(signal.SIGINT)
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:
            proc.send_signal(signal.SIGINT)


def ended_line(proc: subprocess.Popen, run_dir: Path) -> str:
    """How a training process ended, in one line: its interruption line, or the tail of stdout.log."""
    status = read_json(Path(run_dir) / STATUS_FILE)
    if status.get("state") == "interrupted" and status.get("message"):
        return status["message"]
    tail = (Path(run_dir) / "stdout.log").read_text(errors="replace").strip().splitlines()[-5:]
    return f"training exited with code {proc.returncode}: {' | '.join(tail)[-600:]}"


def check_ended(proc: subprocess.Popen, run_dir: Path) -> None:
    """Raise for a training process that did not finish: Interrupted (its line) or SunfishError."""
    if proc.returncode == 0:
        return
    status = read_json(Path(run_dir) / STATUS_FILE)
    if status.get("state") == "interrupted" and status.get("signal") in signal.Signals.__members__:
        raise Interrupted(ended_line(proc, run_dir), signal.Signals[status["signal"]], step=status.get("checkpoint_step"))
    raise SunfishError(ended_line(proc, run_dir))


@atexit.register
def _stop_on_exit() -> None:
    """The kernel is ending: training it launched saves and stops (without waiting for it)."""
    for proc in list(_LAUNCHED):
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)


def config_for_run(cfg: Config, run_dir: str | Path) -> tuple[Config, bool]:
    """(config to train, resuming?): a folder that already holds a run keeps its saved config,
    with only max_steps taken from `cfg` (so re-running a notebook continues the run)."""
    saved = Path(run_dir) / "config.json"
    if saved.is_file() and (Path(run_dir) / "checkpoints" / "last.ckpt").exists():
        return with_max_steps(Config.load(saved), cfg.train.max_steps), True
    return cfg, False
