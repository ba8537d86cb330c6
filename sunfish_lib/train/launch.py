"""Launching training from a notebook: a subprocess (FSDP/DDP processes never live in a kernel).

`launch(cfg, run_dir)` writes the run's config.json and starts `python -m
sunfish_lib.train --config ... --run-dir ...` (with `--resume` when the folder already
holds a checkpoint, so re-running a notebook continues the run). Multi-GPU runs on one
node use Lightning's own process launcher; pass `torchrun=True` for torchrun.
`follow(proc, run_dir)` yields the run's metrics as they are written.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

from sunfish_lib.config import Config
from sunfish_lib.errors import SunfishError
from sunfish_lib.train.metrics import read_metrics


def training_command(cfg: Config, run_dir: Path, *, resume: bool, torchrun: bool = False,
                     stop_at_step: int | None = None) -> list[str]:
    """The argv that trains `cfg` into run_dir."""
    config_path = Path(run_dir) / "config.request.json"
    cfg.save(config_path)
    args = ["-m", "sunfish_lib.train", "--config", str(config_path), "--run-dir", str(run_dir), "--no-progress"]
    if resume:
        args.append("--resume")
    if stop_at_step:
        args += ["--stop-at-step", str(stop_at_step)]
    if torchrun and cfg.train.devices > 1:
        return [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={cfg.train.devices}", *args]
    return [sys.executable, *args]


def launch(cfg: Config, run_dir: str | Path, *, resume: bool | None = None, torchrun: bool = False,
           stop_at_step: int | None = None) -> subprocess.Popen:
    """Start training in a subprocess; output goes to run_dir/stdout.log. Resumes when a checkpoint exists."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume is None:
        resume = (run_dir / "checkpoints" / "last.ckpt").is_file()
    cmd = training_command(cfg, run_dir, resume=resume, torchrun=torchrun, stop_at_step=stop_at_step)
    out = open(run_dir / "stdout.log", "ab")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=run_dir)


def follow(proc: subprocess.Popen, run_dir: str | Path, every: float = 2.0,
           timeout: float | None = None) -> Iterator[list[dict]]:
    """Yield the run's metric rows every `every` seconds until the process ends (then once more).

    Raises SunfishError with the tail of stdout.log if training failed.
    """
    run_dir = Path(run_dir)
    start = time.time()
    while proc.poll() is None:
        if timeout is not None and time.time() - start > timeout:
            proc.kill()
            raise SunfishError(f"training did not finish within {timeout:.0f} s; see {run_dir / 'stdout.log'}")
        time.sleep(every)
        yield read_metrics(run_dir)
    yield read_metrics(run_dir)
    if proc.returncode != 0:
        tail = (run_dir / "stdout.log").read_text(errors="replace").strip().splitlines()[-5:]
        raise SunfishError(f"training exited with code {proc.returncode}: {' | '.join(tail)[-600:]}")


def config_for_run(cfg: Config, run_dir: str | Path) -> tuple[Config, bool]:
    """(config to train, resuming?): a folder that already holds a run keeps its saved config,
    with only max_steps taken from `cfg` (so re-running a notebook continues the run)."""
    saved = Path(run_dir) / "config.json"
    if saved.is_file() and (Path(run_dir) / "checkpoints" / "last.ckpt").is_file():
        return Config.load(saved).override({"max_steps": cfg.train.max_steps}).validate(), True
    return cfg, False
