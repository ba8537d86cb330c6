"""Faults during training: NaN loss (stop or skip), a full or failing disk, SIGKILL at any point.

The kill tests run `tests/fault_driver.py`: `sunfish train` in a subprocess that kills itself with
SIGKILL halfway through its Nth checkpoint (or export) write, or is killed from outside after a
step. Every resumed run must end with the weights of an uninterrupted run, bitwise.
"""

from __future__ import annotations

import errno
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import pytorch_lightning as pl
import torch
from safetensors.torch import load_file

from sunfish_lib.cli import main
from sunfish_lib.config import Config
from sunfish_lib.errors import ConfigError, SunfishError
from sunfish_lib.io.files import fmt_bytes, human_bytes
from sunfish_lib.train import diskspace
from sunfish_lib.train.diskspace import SLACK
from sunfish_lib.train.trainer import resolve_precision, train
from tests.helpers import ROOT
from tests.train_helpers import SMALL_ARGS, export_of, small_config, trained_straight


# -- NaN loss ------------------------------------------------------------------------------

class NaNLossAt(pl.Callback):
    """Makes the training loss NaN at the given micro-batches (the weights stay finite)."""

    def __init__(self, micros: set[int]):
        self.micros = micros

    def on_fit_start(self, trainer, pl_module):
        loss_fn = pl_module.objective.loss

        def loss(model, batch, generator=None):
            out = loss_fn(model, batch, generator=generator)
            if pl_module.training and pl_module._micro in self.micros:
                out["loss"] = out["loss"] * float("nan")
            return out

        pl_module.objective.loss = loss


class Snapshots(pl.Callback):
    """Weights, EMA and AdamW state at the start of every optimizer step, and at the end."""

    def __init__(self):
        self.at: dict[int, list[torch.Tensor]] = {}

    def _take(self, trainer, pl_module):
        opt = trainer.optimizers[0]
        state = [t.clone() for s in opt.state.values() for t in s.values() if torch.is_tensor(t)]
        ema = [s.clone() for s in pl_module.ema.shadow] if pl_module.ema is not None else []
        self.at[trainer.global_step] = [p.detach().clone() for p in pl_module.parameters()] + ema + state

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if pl_module._micro % pl_module.cfg.train.accumulate_grad_batches == 0:
            self._take(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        self._take(trainer, pl_module)


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("micro", [6, 7], ids=["first-micro-batch", "last-micro-batch"])
def test_nan_skip_leaves_weights_ema_and_optimizer_exactly_unchanged(tmp_path, micro):
    """Step 3 = micro-batches 6 and 7 (accumulation 2, clipping on, EMA on): a NaN in either skips the step."""
    cfg = small_config("masked", accumulate_grad_batches=2, ema_decay=0.9, grad_clip=0.5, nan_policy="skip",
                       max_steps=5, val_every=100, keep_best=0)
    snaps = Snapshots()
    out = train(cfg, tmp_path, progress=False, callbacks=(NaNLossAt({micro}), snaps))
    assert out["global_step"] == 5 and out["metrics"]["train/nan_skips"] == 1.0
    assert _same(snaps.at[3], snaps.at[4])  # the skipped step changed nothing, bit for bit
    for before, after in ((2, 3), (4, 5)):  # the steps around it trained
        assert not _same(snaps.at[before], snaps.at[after])
    assert all(torch.isfinite(t).all() for t in snaps.at[5])
    log = (tmp_path / "train.log").read_text()
    assert "step 3: loss was nan; optimizer step skipped (train.nan_policy=skip; 1 in a row, 1 in all)" in log
    assert log.count("optimizer step skipped") == 1


def test_nan_skip_stops_after_max_skips_in_a_row(tmp_path):
    cfg = small_config("masked", ckpt_every=2, nan_policy="skip", max_nan_skips=1)
    with pytest.raises(SunfishError, match=r"loss became nan at step 4: training stopped after 2 skipped steps in a "
                                           r"row \(train.max_nan_skips=1\); last good checkpoint: step 4 in .*"):
        train(cfg, tmp_path, progress=False, callbacks=(NaNLossAt(set(range(3, 6))),))
    assert "step 3: loss was nan; optimizer step skipped" in (tmp_path / "train.log").read_text()


@pytest.mark.parametrize("override, message", [
    ({"nan_policy": "ignore"}, "train.nan_policy='ignore' is not allowed; choose one of stop, skip"),
    ({"max_nan_skips": -1}, "train.max_nan_skips=-1 must be >= 0"),
    ({"nan_policy": "skip", "precision": "16-mixed"}, "train.nan_policy='skip' does not combine with precision"),
])
def test_nan_policy_fields_are_validated(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        small_config("masked", **override)


# -- a full or failing disk ----------------------------------------------------------------

def _disk_with_free(free: int):
    return lambda path: shutil._ntuple_diskusage(10**12, 10**12 - free, free)


def test_free_space_preflight_refuses_before_training(tmp_path, monkeypatch, capsys):
    cfg = small_config("masked", ema_decay=0.9, keep_best=2)
    parts = diskspace.run_bytes(cfg, "32-true")
    need = parts["total"]
    assert parts["keep_best=2 checkpoints"] == parts["last.ckpt and its .tmp"]  # each is two whole checkpoints
    assert 0 < parts["export"] < parts["last.ckpt and its .tmp"] / 4  # fp32 weights vs 2 x (weights, EMA, AdamW)
    mb = human_bytes
    monkeypatch.setattr(shutil, "disk_usage", _disk_with_free(need))
    diskspace.check_free_space(cfg, tmp_path, "32-true")  # exactly enough: no error
    monkeypatch.setattr(shutil, "disk_usage", _disk_with_free(need - 1))
    code = main(["train", "--preset", "smoke", "--objective", "masked", *SMALL_ARGS, "--set", "ema_decay=0.9",
                 "--set", "keep_best=2", "--max-steps", "2", "--run-dir", str(tmp_path / "run"), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "Traceback" not in err
    assert err.endswith(f"run folder {tmp_path / 'run'} has {fmt_bytes(need - 1)} free, but this run needs "
                        f"about {fmt_bytes(need)} (last.ckpt and its .tmp {mb(parts['last.ckpt and its .tmp'])}, "
                        f"keep_best=2 checkpoints {mb(parts['keep_best=2 checkpoints'])}, export {mb(parts['export'])}); "
                        "free space, lower train.keep_best, or pick another --run-dir")
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "train.log").exists()


def test_free_space_preflight_counts_files_a_resumed_run_overwrites(tmp_path, monkeypatch):
    cfg = small_config("masked")
    need = diskspace.run_bytes(cfg, "32-true")["total"]
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"\0" * 300_000)
    monkeypatch.setattr(shutil, "disk_usage", _disk_with_free(need - 300_000))
    diskspace.check_free_space(cfg, tmp_path, "32-true")
    monkeypatch.setattr(shutil, "disk_usage", _disk_with_free(need - 300_001))
    with pytest.raises(SunfishError, match=re.escape(f"needs about {fmt_bytes(need - 300_000)} (")):
        diskspace.check_free_space(cfg, tmp_path, "32-true")


class FailingFile:
    """A file whose writes fail with ENOSPC after `room` bytes, like a disk filling up."""

    def __init__(self, f, room: int):
        self.f, self.room = f, room

    def write(self, b) -> int:
        if self.room < len(b):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.room -= len(b)
        return self.f.write(b)


def test_disk_full_mid_training_keeps_last_checkpoint_and_exits_2(tmp_path, monkeypatch, capsys):
    """The second checkpoint write (step 4) hits a full disk after 100 kB: one line, exit 2, resumable."""
    real_save, saves = torch.save, []

    def save(obj, f, *args, **kwargs):
        saves.append(getattr(f, "name", f))
        return real_save(obj, FailingFile(f, 100_000) if len(saves) == 2 else f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    run = tmp_path / "run"
    args = ["train", "--preset", "smoke", "--objective", "masked", *SMALL_ARGS, "--set", "ckpt_every=2",
            "--set", "keep_best=0", "--set", "val_every=100", "--max-steps", "6", "--run-dir", str(run),
            "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert saves == [str(run / "checkpoints" / "last.ckpt.tmp")] * 2
    assert re.fullmatch(rf"error: could not write {run}/checkpoints/last.ckpt: No space left on device \([\d,]+ bytes "
                        rf"\(.*\) free in {run}/checkpoints\); the previous last.ckpt is intact; free space, then "
                        r"resume with --resume", err), err
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]  # the .tmp is gone
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    monkeypatch.setattr(torch, "save", real_save)  # space freed: the run resumes from step 2
    assert main(args + ["--resume"]) == 0
    assert "start: step 2," in (run / "train.log").read_text()


def test_disk_full_during_export_keeps_previous_export(tmp_path, monkeypatch):
    import safetensors

    from sunfish_lib.io import export as export_module
    from sunfish_lib.io.export import MODEL_FILE, export_model
    from sunfish_lib.model import Backbone

    cfg = small_config("masked")
    model = Backbone.from_config(cfg)
    export_model(model, cfg, tmp_path)
    before = load_file(str(tmp_path / MODEL_FILE))

    def full_disk(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"\0" * 1000)
        raise safetensors.SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                                          'message: "No space left on device" })')

    monkeypatch.setattr(export_module, "save_file", full_disk)  # the name io/export.py writes with
    with torch.no_grad():
        model.ln_f.weight.add_(1.0)
    with pytest.raises(SunfishError, match=rf"could not write {tmp_path}/{MODEL_FILE}: No space left on device "
                                           rf"\(.* free in {tmp_path}\); the previous {MODEL_FILE} is intact"):
        export_model(model, cfg, tmp_path)
    assert not (tmp_path / (MODEL_FILE + ".tmp")).exists()
    after = load_file(str(tmp_path / MODEL_FILE))
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_checkpoint_size_estimate_covers_real_files(tmp_path):
    """run_bytes' per-checkpoint and export sizes against the files a run writes (EMA on)."""
    cfg = small_config("masked", ema_decay=0.9, max_steps=2, keep_best=0, val_every=100)
    train(cfg, tmp_path, progress=False)
    parts = diskspace.run_bytes(cfg, resolve_precision(cfg.train.precision))
    ckpt = (tmp_path / "checkpoints" / "last.ckpt").stat().st_size
    export = (tmp_path / "export" / "model.safetensors").stat().st_size
    assert 0.97 * ckpt < parts["last.ckpt and its .tmp"] / 2 <= ckpt < parts["last.ckpt and its .tmp"] / 2 * SLACK
    assert 0.97 * export < parts["export"] <= export < parts["export"] * SLACK


# -- SIGKILL at any point --------------------------------------------------------------------

KILL_ARGS = ["--preset", "smoke", "--objective", "masked", *SMALL_ARGS, "--set", "ckpt_every=2", "--set", "keep_best=0",
             "--set", "val_every=100", "--no-progress"]
KILL_STEPS = 20  # long enough that a kill a few steps in lands before the end (a step takes ~50 ms)


def _killed_run(run_dir, fault: str = "none", n: int = 0, max_steps: int = KILL_STEPS) -> subprocess.Popen:
    """`sunfish train` under tests/fault_driver.py (which may SIGKILL itself mid-write), as a subprocess."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "tests.fault_driver", fault, str(n), "--", *KILL_ARGS, "--max-steps", str(max_steps),
           "--run-dir", str(run_dir)]
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _saved_step(path) -> int:
    return torch.load(path, weights_only=True)["global_step"]


class PartialFilesAtStart(pl.Callback):
    """Records the `*.tmp` files in the run folder when training starts (before any new write)."""

    def __init__(self, run_dir):
        self.run_dir, self.found = run_dir, None

    def on_fit_start(self, trainer, pl_module):
        self.found = sorted(p.name for p in self.run_dir.rglob("*.tmp"))


def _resume_in_process(run_dir, max_steps: int = KILL_STEPS) -> dict:
    """Resume with the run's own config.json, as `sunfish train --run-dir RUN --resume` does;
    checks that the partial files a kill left were cleared before training started."""
    cfg = Config.load(run_dir / "config.json").override({"max_steps": max_steps})
    partial = PartialFilesAtStart(run_dir)
    out = train(cfg, run_dir, resume=True, progress=False, callbacks=(partial,))
    assert partial.found == []
    return out


_export = export_of


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The export of the same run trained straight through (the config the CLI builds from KILL_ARGS)."""
    return trained_straight(KILL_ARGS, KILL_STEPS, tmp_path_factory.mktemp("uninterrupted"))


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_sigkill_mid_checkpoint_write_keeps_last_and_resumes_exactly(tmp_path, uninterrupted):
    """Killed halfway through writing the step-6 checkpoint (the 3rd save): last.ckpt still holds step 4."""
    run = tmp_path / "run"
    proc = _killed_run(run, "ckpt", 3)
    assert proc.wait(timeout=300) == -signal.SIGKILL, proc.stderr.read()[-2000:]
    last, partial = run / "checkpoints" / "last.ckpt", run / "checkpoints" / "last.ckpt.tmp"
    assert _saved_step(last) == 4  # loads with weights_only: whole
    assert partial.stat().st_size > 0
    with pytest.raises(Exception):
        torch.load(partial, weights_only=True)  # the kill really was mid-write
    out = _resume_in_process(run)
    assert out["global_step"] == KILL_STEPS
    assert "start: step 4," in (run / "train.log").read_text()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]  # the partial .tmp removed
    _assert_same_weights(_export(run), uninterrupted)


@pytest.mark.slow
@pytest.mark.parametrize("point", [0, 1])
def test_sigkill_at_random_points_loses_only_steps_after_last_checkpoint(tmp_path, uninterrupted, point):
    """Kill from outside at a seeded-random point (after a random step, a random delay), then resume.

    The two cases kill at two different steps; SUNFISH_FAULT_SEED=N picks other points (default 0).
    """
    seed = int(os.environ.get("SUNFISH_FAULT_SEED", "0"))
    rng = random.Random(seed)
    step = sorted(rng.sample(range(3, KILL_STEPS - 6), 2))[point]
    run, log = tmp_path / "run", tmp_path / "run" / "train.log"
    proc, deadline = _killed_run(run), time.time() + 240
    while time.time() < deadline and not (log.exists() and f" step {step} " in log.read_text()):
        assert proc.poll() is None, proc.stderr.read()[-2000:]
        time.sleep(0.05)
    time.sleep(rng.uniform(0.0, 0.1))  # anywhere in the next steps, checkpoint writes included
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL, f"run ended before the kill (seed {seed})"
    saved = _saved_step(run / "checkpoints" / "last.ckpt")
    assert saved % 2 == 0 and step - 1 <= saved <= KILL_STEPS, (seed, step, saved)
    assert _resume_in_process(run)["global_step"] == KILL_STEPS
    assert saved == KILL_STEPS or f"start: step {saved}," in log.read_text()
    _assert_same_weights(_export(run), uninterrupted)


@pytest.mark.slow
def test_sigkill_mid_export_write_resumes_to_a_whole_export(tmp_path):
    """Killed halfway through export/model.safetensors: the resumed run (already at max_steps) exports again."""
    run = tmp_path / "run"
    proc = _killed_run(run, "export", 1, max_steps=4)
    assert proc.wait(timeout=300) == -signal.SIGKILL, proc.stderr.read()[-2000:]
    assert not (run / "export" / "model.safetensors").exists()
    assert (run / "export" / "model.safetensors.tmp").stat().st_size > 0
    assert _saved_step(run / "checkpoints" / "last.ckpt") == 4
    assert _resume_in_process(run, max_steps=4)["global_step"] == 4
    assert not (run / "export" / "model.safetensors.tmp").exists()
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    _assert_same_weights(_export(run), {k.removeprefix("model."): v for k, v in state.items()})


@pytest.mark.slow
def test_nan_on_one_ddp_rank_skips_the_step_on_every_rank(tmp_path):
    """DDP on 2 CPU processes, a NaN loss on rank 1 only in step 3 of 4: the run ends with the weights of
    the same run stopped after step 2 (`--stop-at-step 3`), so both ranks dropped step 3 alike."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    common = [*KILL_ARGS, "--devices", "2", "--strategy", "ddp", "--set", "nan_policy=skip", "--max-steps", "4"]
    for fault, name, extra in (("none", "stopped", ["--stop-at-step", "3"]), ("nan", "skipped", [])):
        cmd = [sys.executable, "-m", "tests.fault_driver", fault, "3", "--", *common, *extra, "--run-dir",
               str(tmp_path / name)]
        r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
    _assert_same_weights(_export(tmp_path / "skipped"), _export(tmp_path / "stopped"))
    log = (tmp_path / "skipped" / "train.log").read_text()
    assert "step 3: loss was nan; optimizer step skipped (train.nan_policy=skip; 1 in a row, 1 in all)" in log


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["nan0", "nan"])
def test_nan_stop_on_one_ddp_rank_stops_every_rank_with_one_line(tmp_path, fault):
    """train.nan_policy=stop with a NaN on rank 0 (or rank 1) only: both ranks stop at that step with the
    same one-line error (exit 2), not one rank raising while its peer dies in a collective with a traceback."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "tests.fault_driver", fault, "3", "--", *KILL_ARGS, "--devices", "2",
           "--strategy", "ddp", "--max-steps", "6", "--run-dir", str(tmp_path / "run")]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stderr and "Connection closed by peer" not in r.stderr, r.stderr[-3000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert errors and all(e.startswith("error: loss became nan at step 3: training stopped; last good checkpoint: "
                                       "step 2 in ") for e in errors), r.stderr[-3000:]
