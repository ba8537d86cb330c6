"""Several nodes on one machine: two torchrun "nodes", and a 2-task SLURM job through the sbatch template.

The command lines are docs/training-at-scale.md's (`scripts/sunfish.sbatch`, the torchrun lines of "How training
scales out") with small numbers: `test_readme_gives_the_commands_these_tests_run` checks that the
The page shows the same templates filled in for 1 node x 8 GPUs and 4 nodes x 8 GPUs.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest
import torch

from sunfish_lib.io import dcp
from sunfish_lib.io.metrics import read_metrics, series
from tests.helpers import ROOT
from tests.train_helpers import SMALL_ARGS

# What a node runs (docs/training-at-scale.md: "4 nodes x 8 GPUs"); the test fills in 2 nodes x 1 process on 127.0.0.1.
NODE_COMMAND = ("torchrun --nnodes {nodes} --node-rank {rank} --nproc-per-node {gpus} --master-addr {head} "
                "--master-port {port} -m sunfish_lib.cli train {train} --devices {gpus} --num-nodes {nodes} "
                "--strategy fsdp --run-dir {run}")
ONE_NODE_COMMAND = "torchrun --nproc-per-node {gpus} -m sunfish_lib.cli train {train} --devices {gpus} --strategy fsdp --run-dir {run}"
SBATCH_COMMAND = "sbatch --nodes={nodes} scripts/sunfish.sbatch {run} {train}"
TRAIN = ["--preset", "smoke", "--objective", "masked", *SMALL_ARGS, "--set", "ckpt_every=2", "--set", "val_every=100",
         "--set", "keep_best=0", "--set", "ema_decay=0.9", "--no-progress", "--max-steps", "300"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node(rank: int, port: int, run, extra=()) -> subprocess.Popen:
    argv = NODE_COMMAND.format(nodes=2, rank=rank, gpus=1, head="127.0.0.1", port=port, train="{train}",
                               run=run).split()
    i = argv.index("{train}")
    argv[i:i + 1] = [*TRAIN, *extra]
    argv[0:1] = [sys.executable, "-m", "torch.distributed.run"]  # = .venv/bin/torchrun
    # output to files, not pipes: a pipe nobody reads while the node runs can fill and stall it
    logs = run.parent / f"node{rank}-{time.monotonic_ns()}"
    with open(f"{logs}.out", "w") as out, open(f"{logs}.err", "w") as err:
        proc = subprocess.Popen(argv, cwd=ROOT, env=ENV, stdout=out, stderr=err, text=True)
    proc.logs = logs
    return proc


def _output(proc: subprocess.Popen, stream: str = "err") -> str:
    return open(f"{proc.logs}.{stream}").read()


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL torchrun and its workers (they run in sessions of their own), as a lost node would."""
    try:
        procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=30)


def _ended_report(ended: subprocess.Popen, nodes) -> str:
    """The stderr of the node that ended early, read without waiting on its peers (they would sit in the
    process group's rendezvous for its 30-minute timeout): the peers are killed first."""
    for n in nodes:
        if n is not ended:
            _kill_tree(n)
    return f"node {nodes.index(ended)} ended with {ended.returncode}: {_output(ended)[-3000:]}"


def _both(nodes, timeout=900):
    """Wait for every node; the first to fail is reported at once (its peers killed, not left in the rendezvous)."""
    deadline = time.time() + timeout
    while any(n.poll() is None for n in nodes):
        failed = [n for n in nodes if n.returncode not in (None, 0)]
        assert not failed, _ended_report(failed[0], nodes)
        if time.time() > deadline:
            for n in nodes:
                _kill_tree(n)
            raise AssertionError(f"the nodes ran past {timeout} s")
        time.sleep(0.2)
    for i, n in enumerate(nodes):
        assert n.returncode == 0, f"node {i} ended with {n.returncode}: {_output(n)[-3000:]}"
    return "".join(_output(n, "out") for n in nodes)


def _weights(run_dir) -> dict[str, torch.Tensor]:
    model, _ = dcp.load_sharded(run_dir / "checkpoints" / "last.ckpt", use_ema=False)
    return model.state_dict()


@pytest.mark.slow
def test_two_torchrun_nodes_killed_and_resumed_finish_equal_to_one_node(tmp_path):
    run, port = tmp_path / "two-nodes", _free_port()
    nodes = [_node(r, port, run) for r in (0, 1)]
    last = run / "checkpoints" / "last.ckpt"
    try:
        deadline = time.time() + 600
        while time.time() < deadline and (dcp.saved_step(last) or 0) < 2:
            ended = [n for n in nodes if n.poll() is not None]
            assert not ended, _ended_report(ended[0], nodes)
            time.sleep(0.2)
    finally:
        for n in nodes:
            _kill_tree(n)  # both nodes lost at once, mid-run
    dcp.recover_swap(last)
    saved = dcp.saved_step(last)
    assert saved is not None and saved >= 2 and saved % 2 == 0
    stop = saved + 2
    port = _free_port()
    out = _both([_node(r, port, run, ("--resume", "--stop-at-step", str(stop))) for r in (0, 1)])
    assert out.count(f"trained to step {stop}") == 1
    log = (run / "train.log").read_text()
    assert f"start: step {saved}," in log and "world size 2 (2 nodes, launched by TorchElastic)" in log
    # the same run on one node with 2 processes (the one-node line of docs/training-at-scale.md), never interrupted
    ref = tmp_path / "one-node"
    argv = ONE_NODE_COMMAND.format(gpus=2, train="{train}", run=ref).split()
    i = argv.index("{train}")
    argv[i:i + 1] = [*TRAIN, "--stop-at-step", str(stop)]
    argv[0:1] = [sys.executable, "-m", "torch.distributed.run", "--master-port", str(_free_port())]
    r = subprocess.run(argv, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = _weights(ref), _weights(run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bitwise (same thread count)
    steps, losses = series(read_metrics(run), "train/loss")
    ref_steps, ref_losses = series(read_metrics(ref), "train/loss")
    assert ref_steps == list(range(stop)) and set(range(saved, stop)) <= set(steps)
    assert all(losses[steps.index(s)] == ref_losses[int(s)] for s in steps)  # the loss curve, exactly


def _job(argv, env, timeout=900) -> subprocess.CompletedProcess:
    """Run the job script in a process group of its own; on a timeout the whole group (every task) is killed."""
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"the job ran past {timeout} s: {err[-2000:]}") from None
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


def _fake_srun(folder) -> None:
    """`srun` for one node: start $SLURM_NTASKS copies of the command with the per-task variables SLURM sets."""
    script = folder / "srun"
    script.write_text("#!/bin/bash\n"
                      "while [[ $1 == -* ]]; do shift; done\n"  # srun's own options
                      "pids=()\n"
                      "for ((i = 0; i < SLURM_NTASKS; i++)); do\n"
                      "  SLURM_PROCID=$i SLURM_LOCALID=$i SLURM_NODEID=0 \"$@\" &\n"
                      "  pids+=($!)\n"
                      "done\n"
                      "rc=0; for p in \"${pids[@]}\"; do wait $p || rc=$?; done; exit $rc\n")
    script.chmod(0o755)


@pytest.mark.slow
def test_sbatch_template_trains_through_lightnings_slurm_environment(tmp_path):
    """The job-level variables of `sbatch --nodes=1 --ntasks-per-node=2`, the template run by bash, a local srun."""
    _fake_srun(tmp_path)
    run = tmp_path / "slurm-run"
    job = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NAME": "sunfish", "SLURM_NNODES": "1", "SLURM_NTASKS": "2",
           "SLURM_NTASKS_PER_NODE": "2", "SLURM_NODELIST": "localhost", "SLURM_CPUS_PER_TASK": "1",
           "MASTER_PORT": str(_free_port()), "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    argv = SBATCH_COMMAND.format(nodes=1, run=run, train="{train}").split()
    i = argv.index("{train}")
    argv[i:i + 1] = [*TRAIN, "--strategy", "fsdp", "--stop-at-step", "2"]
    argv[0:2] = ["bash"]  # sbatch runs the script with the job's environment
    r = _job(argv, {**ENV, **job})
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("trained to step 2") == 1  # rank 0 alone reports
    log = (run / "train.log").read_text()
    assert "world size 2 (1 nodes, launched by SLURM)" in log
    assert dcp.saved_step(run / "checkpoints" / "last.ckpt") == 2
    # the requeued job runs the same script: it resumes from the checkpoint (the template passes --resume)
    job["MASTER_PORT"] = str(_free_port())
    argv[-1] = "4"
    r = _job(argv, {**ENV, **job})
    assert r.returncode == 0, r.stderr[-3000:]
    assert "start: step 2," in (run / "train.log").read_text() and "trained to step 4" in r.stdout


def test_readme_gives_the_commands_these_tests_run():
    readme = " ".join((ROOT / "docs" / "training-at-scale.md").read_text().split())
    big = NODE_COMMAND.format(nodes=4, rank="$NODE_RANK", gpus=8, head="$HEAD", port=29500,
                              train="--preset 1.4B", run="runs/big")
    one = ONE_NODE_COMMAND.format(gpus=8, train="--preset 350M", run="runs/350m")
    sbatch = SBATCH_COMMAND.format(nodes=4, run="runs/big", train="--preset 1.4B --strategy fsdp")
    for command in (big, one, sbatch):
        assert f".venv/bin/{command}" in readme or command in readme, command
    template = (ROOT / "scripts" / "sunfish.sbatch").read_text()
    assert "--ntasks-per-node=8" in template and "--gpus-per-node=8" in template and "--resume" in template


def test_every_rank_probes_the_shared_run_folder_at_once(tmp_path):
    """Each node's ranks check the one shared run folder together (the CI failure of stop 34: a fixed probe name let
    one node unlink the other's probe, call the folder unwritable and leave its peer in the rendezvous)."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    from sunfish_lib.train.trainer import check_run_dir_writable

    gate = Barrier(8)

    def probe(_):
        gate.wait()
        for _ in range(40):
            check_run_dir_writable(tmp_path)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(probe, range(8)))
    assert list(tmp_path.iterdir()) == []  # every probe removed
