"""Polite interruptions: SIGINT, SIGTERM and SIGUSR1 save the step in progress and say how to resume;
one writer per run folder; no `-v1` checkpoint names; SLURM requeue; the notebook paths.

Signals are sent by the training process to itself at a seeded-random micro-batch (tests/fault_driver.py),
so the step they land in is known: with 2 micro-batches per optimizer step, micro-batch m is in step
m // 2 + 1, which finishes and is saved. SUNFISH_FAULT_SEED=N picks other micro-batches (default 0).
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch

from sunfish_lib.cli import main
from sunfish_lib.config import Config
from sunfish_lib.errors import Interrupted, SunfishError
from sunfish_lib.runs.registry import list_runs, process_identity
from sunfish_lib.runs.lock import LOCK_FILE, RunLock, check_unlocked
from sunfish_lib.train.callbacks import StopAtStep
from sunfish_lib.train.interrupt import slurm_job_id
from sunfish_lib.train.trainer import train
from tests.helpers import ROOT, write_notebook
from tests.train_helpers import SMALL_ARGS, export_of, small_config, trained_straight

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
ARGS = ["--preset", "smoke", "--objective", "masked", *SMALL_ARGS, "--set", "accumulate_grad_batches=2",
        "--set", "ckpt_every=2", "--set", "keep_best=0", "--set", "val_every=100", "--no-progress"]
STEPS = 8
CODES = {"SIGINT": 130, "SIGTERM": 143, "SIGUSR1": 138}
# a real SLURM job's variables (one task); Lightning's SLURMEnvironment detects the job from them
SLURM_ENV = {"SLURM_JOB_ID": "4242", "SLURM_JOBID": "4242", "SLURM_JOB_NAME": "sunfish", "SLURM_NTASKS": "1",
             "SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": "1", "SLURM_NODELIST": "node001",
             "SLURM_JOB_NODELIST": "node001", "SLURM_NODEID": "0", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
             "SLURM_CPUS_ON_NODE": "2", "SLURM_SUBMIT_DIR": str(ROOT), "SLURM_CLUSTER_NAME": "test"}


def _micro(index: int) -> int:
    """A seeded-random micro-batch, away from the ends (steps 2..STEPS-2)."""
    rng = random.Random(int(os.environ.get("SUNFISH_FAULT_SEED", "0")))
    return rng.sample(range(2, 2 * STEPS - 4), 3)[index]


def _driven(run_dir, fault: str, micro: int, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "tests.fault_driver", fault, str(micro), "--", *ARGS, *extra,
           "--max-steps", str(STEPS), "--run-dir", str(run_dir)]
    return subprocess.run(cmd, cwd=ROOT, env={**ENV, **(env or {})}, capture_output=True, text=True, timeout=600)


_export = export_of


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _ckpt_step(path) -> int:
    return torch.load(path, weights_only=True)["global_step"]


def _message_re(sig: str, step: int, run) -> str:
    return (rf"{sig}: training stopped after step {step}, saved in {run}/checkpoints/last\.ckpt; resume with: "
            rf"sunfish train --resume {run}")


def _status(run) -> dict:
    return json.loads((run / "status.json").read_text())


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The export of the same run trained without interruption (the config the CLI builds from ARGS)."""
    return trained_straight(ARGS, STEPS, tmp_path_factory.mktemp("straight"))


def _assert_one_line(stderr: str, pattern: str) -> None:
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert lines and re.fullmatch(pattern, lines[-1]), stderr[-3000:]
    assert "Traceback" not in stderr and "Received SIGTERM" not in stderr, stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("sig, index", [("SIGINT", 0), ("SIGTERM", 1), ("SIGUSR1", 2)])
def test_signal_saves_the_step_in_progress_and_resumes_exactly(tmp_path, straight, sig, index):
    """One process: the signal at micro-batch m; step m // 2 + 1 finishes and is saved; the line, the exit code
    and status.json say so; `--resume` ends bitwise equal to the uninterrupted run. SIGUSR1 runs inside a
    SLURM job with train.requeue=true: the job is requeued with `scontrol requeue 4242` (a stub records it)."""
    run, micro = tmp_path / "run", _micro(index)
    step = micro // 2 + 1
    env, extra = None, ()
    if sig == "SIGUSR1":
        bin_dir, record = tmp_path / "bin", tmp_path / "scontrol.calls"
        bin_dir.mkdir()
        (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {record}\n')
        (bin_dir / "scontrol").chmod(0o755)
        env, extra = {**SLURM_ENV, "PATH": f"{bin_dir}:{os.environ['PATH']}"}, ("--set", "requeue=true")
    r = _driven(run, sig, micro, *extra, env=env)
    assert r.returncode == CODES[sig], r.stderr[-3000:]
    tail = r"; SLURM job 4242 requeued \(its script must pass --resume\)" if sig == "SIGUSR1" else ""
    _assert_one_line(r.stderr, _message_re(sig, step, run) + tail)
    if sig == "SIGUSR1":
        assert (tmp_path / "scontrol.calls").read_text() == "requeue 4242\n"
    assert _ckpt_step(run / "checkpoints" / "last.ckpt") == step
    status = _status(run)
    assert (status["state"], status["signal"], status["checkpoint_step"]) == ("interrupted", sig, step)
    assert not (run / "export").exists()
    [record] = list_runs([tmp_path], status=["interrupted"])
    assert (record.signal, record.checkpoint_step) == (sig, step)
    cfg = Config.load(run / "config.json")
    assert train(cfg, run, resume=True, progress=False)["global_step"] == STEPS
    assert f"start: step {step}," in (run / "train.log").read_text()
    assert _same(_export(run), straight)
    assert _status(run)["state"] == "finished"


@pytest.mark.slow
def test_third_signal_aborts_the_save_and_keeps_the_previous_checkpoint(tmp_path):
    """SIGINT in step 6's micro-batch, twice more as its checkpoint write begins: the second says
    "saving checkpoint, press again to abort", the third aborts; last.ckpt keeps step 4 (ckpt_every=2)."""
    run = tmp_path / "run"
    r = _driven(run, "SIGINTx3", 10)
    assert r.returncode == 130, r.stderr[-3000:]
    assert "saving checkpoint, press again to abort" in r.stderr
    _assert_one_line(r.stderr, rf"SIGINT three times: saving aborted; {run}/checkpoints/last\.ckpt keeps step 4; "
                               rf"resume with: sunfish train --resume {run}")
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last.ckpt"]  # no .tmp left
    assert _ckpt_step(run / "checkpoints" / "last.ckpt") == 4
    assert (_status(run)["state"], _status(run)["checkpoint_step"]) == ("interrupted", 4)


def test_requeue_decision_needs_slurm_and_the_setting(monkeypatch):
    """scontrol is called only inside a SLURM job (Lightning's detection); array jobs requeue JOB_TASK."""
    for k in SLURM_ENV:
        monkeypatch.delenv(k, raising=False)
    assert slurm_job_id() is None
    for k, v in SLURM_ENV.items():
        monkeypatch.setenv(k, v)
    assert slurm_job_id() == "4242"
    monkeypatch.setenv("SLURM_ARRAY_JOB_ID", "77")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    assert slurm_job_id() == "77_3"
    monkeypatch.setenv("SLURM_JOB_NAME", "bash")  # an interactive allocation: Lightning does not take it for a job
    assert slurm_job_id() is None


# -- one writer per run folder ------------------------------------------------------------------

@pytest.mark.slow
def test_second_writer_is_refused_before_the_first_checkpoint(tmp_path, straight, capsys):
    """Writer B starts while A sets up (no checkpoint yet): one line naming A, nothing of A's touched;
    A finishes as if alone, with no `-v1` files."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "sunfish_lib.cli", "train", *ARGS, "--max-steps", str(STEPS), "--run-dir", str(run)]
    a = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (run / LOCK_FILE).is_file():
        time.sleep(0.02)
    while time.time() < deadline and not (run / "config.json").is_file():
        time.sleep(0.02)
    before = {p: p.read_bytes() for p in (run / LOCK_FILE, run / "config.json")}
    code = main(["train", *ARGS, "--max-steps", str(STEPS), "--run-dir", str(run)])
    err = capsys.readouterr().err.strip()
    assert not (run / "checkpoints" / "last.ckpt").exists(), "A saved before B started: make A slower"
    assert code == 2 and "\n" not in err, err
    assert re.fullmatch(rf"error: run folder {run} is in use by sunfish train \(pid {a.pid} on \S+, since \S+\); "
                        r"one writer per run folder: wait for it to end, stop it \(`kill -INT \d+` saves a "
                        r"checkpoint first\), or pick another folder", err), err
    assert {p: p.read_bytes() for p in before} == before
    assert a.wait(timeout=600) == 0, a.stderr.read()[-3000:]
    assert sorted(p.name for p in (run / "logs").iterdir()) == ["00"]  # B never started an attempt
    assert _status(run)["pid"] == a.pid and _status(run)["state"] == "finished"
    assert not [p for p in run.rglob("*.ckpt") if re.search(r"-v\d+\.ckpt$", p.name)]
    assert _same(_export(run), straight)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_lock_is_taken_over_and_logged(tmp_path, caplog):
    """A lock record left by a killed run (dead pid on this host, never released) is taken over, logged."""
    host = process_identity()["hostname"]
    dead = {"pid": _dead_pid(), "pid_created": 1.0, "hostname": host, "what": "sunfish train",
            "started": "2026-01-01T00:00:00+00:00"}
    (tmp_path / LOCK_FILE).write_text(json.dumps(dead))
    with caplog.at_level("WARNING", logger="sunfish_lib.runs.lock"):
        train(small_config("masked", max_steps=2, val_every=100, keep_best=0), tmp_path, progress=False)
    assert f"took over the lock of sunfish train (pid {dead['pid']} on {host}, started 2026-01-01T00:00:00+00:00)" \
        in caplog.text
    record = json.loads((tmp_path / LOCK_FILE).read_text())
    assert record["pid"] == os.getpid() and record["released"]
    caplog.clear()
    with caplog.at_level("WARNING", logger="sunfish_lib.runs.lock"), RunLock(tmp_path):
        pass  # a released record is taken silently
    assert "took over" not in caplog.text


def test_live_holder_is_refused_even_without_its_flock(tmp_path):
    """Where the filesystem does not share locks, the record decides: its pid runs here, so refuse."""
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import psutil

        live = {"pid": holder.pid, "pid_created": psutil.Process(holder.pid).create_time(),
                "hostname": process_identity()["hostname"], "what": "sunfish run", "started": "x"}
        (tmp_path / LOCK_FILE).write_text(json.dumps(live))
        for attempt in (lambda: RunLock(tmp_path).acquire(), lambda: check_unlocked(tmp_path)):
            with pytest.raises(SunfishError, match=rf"in use by sunfish run \(pid {holder.pid} on "):
                attempt()
    finally:
        holder.kill()
        holder.wait()
    with RunLock(tmp_path):  # the holder is gone: taken over
        check_unlocked(tmp_path)  # our own process does not refuse itself


def test_workbook_resume_into_a_live_folder_is_refused_by_its_lock(tmp_path, capsys):
    """Two `sunfish workbook --resume` of one failed run: the second finds the first's lock and says who holds it."""
    nb = write_notebook(tmp_path / "a.ipynb", "smoke = False")
    run = tmp_path / "run"
    run.mkdir()
    info = {"status": "failed", "plan": [{"notebook": "a.ipynb", "path": str(nb)}], "attempt": 1,
            "notebooks": [{"notebook": "a.ipynb", "status": "failed", "attempts": [{"attempt": 1, "status": "failed"}]}]}
    (run / "run.json").write_text(json.dumps(info))
    (run / "params.json").write_text("{}")
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from sunfish_lib.runs.lock import RunLock; "
                               f"RunLock({str(run)!r}, 'sunfish workbook --resume').acquire(); print('held'); "
                               "sys.stdout.flush(); time.sleep(60)"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["workbook", "--resume", str(run)]) == 2
        err = capsys.readouterr().err.strip()
        assert re.fullmatch(rf"error: run folder {run} is in use by sunfish workbook --resume \(pid {holder.pid} on .*", err)
        assert json.loads((run / "run.json").read_text()) == info  # untouched
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
def test_no_checkpoint_name_gets_a_version_suffix(tmp_path):
    """Resuming from an older last.ckpt re-saves checkpoints whose files exist (a kill after `best-*` was written
    but before `last.ckpt`): they are overwritten in place, never written beside as `-v1`."""
    cfg = small_config("masked", keep_best=1, val_every=3, ckpt_every=3, max_steps=6)
    train(cfg, tmp_path, progress=False, callbacks=(StopAtStep(3),))
    older = (tmp_path / "checkpoints" / "last.ckpt").read_bytes()
    train(cfg, tmp_path, resume=True, progress=False)
    before = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert "best-step000006.ckpt" in before
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(older)  # back to step 3; best-step000006 stays
    train(cfg, tmp_path, resume=True, progress=False)  # saves best-step000006 again (val/loss improved)
    assert "step 6 val/loss" in (tmp_path / "train.log").read_text().split("start: step 3,")[-1]
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == before and not [n for n in names if re.search(r"-v\d+\.ckpt$", n)], names


# -- notebooks ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_interrupting_follow_stops_training_with_a_checkpoint_and_relaunch_resumes(tmp_path):
    """The notebook path without a kernel: Ctrl-C (SIGINT to this process) while `follow` waits stops the launched
    training through the same path (checkpoint, status, its line); launching again resumes from there."""
    from sunfish_lib.train.launch import follow, launch

    cfg = small_config("masked", max_steps=400, ckpt_every=1000, val_every=1000, keep_best=0, log_every=1)
    proc = launch(cfg, tmp_path)
    rows = follow(proc, tmp_path, every=3.0)  # a long sleep: the signal below lands in it even on a loaded machine
    deadline = time.time() + 300
    while time.time() < deadline and not any(r.get("step", -1) >= 2 for r in next(rows)):
        assert proc.poll() is None, (tmp_path / "stdout.log").read_text()[-2000:]
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()  # lands in follow's sleep
    with pytest.raises(Interrupted) as info:
        next(rows)
    assert proc.returncode == 130
    step = _ckpt_step(tmp_path / "checkpoints" / "last.ckpt")
    assert 3 <= step < 400 and info.value.step == step
    assert re.fullmatch(_message_re("SIGINT", step, tmp_path), str(info.value))
    proc = launch(small_config("masked", max_steps=step + 2, ckpt_every=1000, val_every=1000, keep_best=0,
                               log_every=1), tmp_path)
    for _ in follow(proc, tmp_path, every=0.5):
        pass
    log = (tmp_path / "train.log").read_text()
    assert f"start: step {step}," in log and f"end: step {step + 2}" in log


@pytest.mark.slow
def test_papermill_run_killed_by_sigterm_is_interrupted_and_resumes(tmp_path):
    """`sunfish run notebooks/04_train.ipynb` gets SIGTERM while training: the kernel is interrupted, the training
    subprocess saves and stops, run.json says interrupted, exit 143; `sunfish workbook --resume` finishes it."""
    params = ["-p", "smoke", "True", "-p", "poll_seconds", "0.5", "-p", "overrides",
              "{'max_steps': 400, 'ckpt_every': 1000, 'val_every': 1000, 'log_every': 1}"]
    cmd = [sys.executable, "-m", "sunfish_lib.cli", "run", "notebooks/04_train.ipynb", *params,
           "--runs-dir", str(tmp_path)]
    driver = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 400
    log = None
    while time.time() < deadline:
        logs = list(tmp_path.glob("*/04_train/train.log"))
        if logs and re.search(r" step [3-9]\d* ", logs[0].read_text()):
            log = logs[0]
            break
        assert driver.poll() is None, driver.stderr.read()[-3000:]
        time.sleep(0.2)
    assert log is not None
    driver.send_signal(signal.SIGTERM)
    out, err = driver.communicate(timeout=300)
    run, folder = log.parent.parent, log.parent
    assert driver.returncode == 143, err[-3000:]
    assert err.strip().splitlines()[-1] == (f"SIGTERM: notebook run stopped in 04_train.ipynb (recorded as interrupted "
                                            f"in {run}/run.json); resume with: sunfish workbook --resume {run}")
    info = json.loads((run / "run.json").read_text())
    assert (info["status"], info["signal"], info["notebooks"][0]["status"]) == ("interrupted", "SIGTERM", "interrupted")
    status = _status(folder)
    step = status["checkpoint_step"]
    assert (status["state"], status["signal"]) == ("interrupted", "SIGINT")  # the kernel's interrupt, passed on
    assert _ckpt_step(folder / "checkpoints" / "last.ckpt") == step >= 3
    assert not psutil_alive(status["pid"])
    # resume with a shorter run so it ends soon: params.json keeps the rest
    params_file = run / "params.json"
    saved = json.loads(params_file.read_text())
    saved["04_train.ipynb"]["overrides"]["max_steps"] = step + 2
    params_file.write_text(json.dumps(saved))
    r = subprocess.run([sys.executable, "-m", "sunfish_lib.cli", "workbook", "--resume", str(run)], cwd=ROOT, env=ENV,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    text = (folder / "train.log").read_text()
    assert f"start: step {step}," in text and f"end: step {step + 2}" in text


def psutil_alive(pid: int) -> bool:
    import psutil

    return psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE


# -- two processes (DDP over gloo) ----------------------------------------------------------------

DDP = ("--devices", "2", "--strategy", "ddp")


@pytest.fixture(scope="module")
def straight_ddp(tmp_path_factory):
    run = tmp_path_factory.mktemp("straight_ddp") / "run"
    r = _driven(run, "none", 0, *DDP)
    assert r.returncode == 0, r.stderr[-3000:]
    return _export(run)


@pytest.mark.slow
@pytest.mark.parametrize("sig, rank, index", [("SIGTERM", 1, 0), ("SIGINT", 0, 1), ("SIGUSR1", 1, 2)])
def test_ddp_ranks_agree_on_the_stop_step_and_resume_exactly(tmp_path, straight_ddp, sig, rank, index):
    """2 processes; only `rank` gets the signal (as from `kill`), mid-step: both ranks finish that step and stop
    after it (the vote rides on the NaN all-reduce), one line from rank 0, its exit code; resuming on 2 processes
    ends bitwise equal to the uninterrupted run."""
    run, micro = tmp_path / "run", _micro(index)
    step = micro // 2 + 1
    r = _driven(run, f"{sig}@{rank}", micro, *DDP)
    assert r.returncode == CODES[sig], r.stderr[-3000:]
    _assert_one_line(r.stderr, _message_re(sig, step, run))
    assert sum(sig + ": training stopped" in ln for ln in r.stderr.splitlines()) == 1
    assert _ckpt_step(run / "checkpoints" / "last.ckpt") == step
    assert (_status(run)["state"], _status(run)["signal"], _status(run)["checkpoint_step"]) == ("interrupted", sig, step)
    r = subprocess.run([sys.executable, "-m", "sunfish_lib.cli", "train", "--config", str(run / "config.json"),
                        "--run-dir", str(run), "--resume", "--no-progress"], cwd=ROOT, env=ENV, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"start: step {step}," in (run / "train.log").read_text()
    assert _same(_export(run), straight_ddp)
