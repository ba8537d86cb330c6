"""Scale-out by construction: the global batch is fixed and the accumulation derived (issue #17)."""

from __future__ import annotations

import pytest

from sunfish_lib.config import ConfigError, get_config
from sunfish_lib.io.metrics import read_metrics
from tests.helpers import run_cli
from tests.train_helpers import SMALL_ARGS


def test_accumulation_derived_from_global_batch_on_any_world_size():
    for devices, nodes, micro, acc in ((1, 1, 4, 32), (8, 1, 4, 4), (8, 4, 4, 1), (2, 1, 16, 4)):
        cfg = get_config("125M", devices=devices, num_nodes=nodes, micro_batch_size=micro)
        assert cfg.accumulation == acc
        assert cfg.sequences_per_step == 128 and cfg.tokens_per_step == 128 * 1024
        assert cfg.resolve_batch().train.accumulate_grad_batches == acc
    # without a global batch the accumulation is as given, and the batch grows with devices
    legacy = get_config("tiny", devices=2, accumulate_grad_batches=3)
    assert (legacy.accumulation, legacy.sequences_per_step) == (3, legacy.data.micro_batch_size * 3 * 2)


@pytest.mark.slow
def test_non_dividing_global_batch_is_one_line_error():
    with pytest.raises(ConfigError, match=r"train.global_batch_size=256 does not divide into data.micro_batch_size=3 "
                                          r"x train.devices=8 x train.num_nodes=1 = 24"):
        get_config("1.4B", devices=8, micro_batch_size=3)
    with pytest.raises(ConfigError, match=r"accumulate_grad_batches=5 contradicts train.global_batch_size=128 "
                                          r"\(which derives 8\)"):
        get_config("125M", accumulate_grad_batches=5, micro_batch_size=16)
    r = run_cli("train", "--preset", "tiny", "--set", "global_batch_size=16", "--set", "micro_batch_size=3",
                "--devices", "2", "--fast-dev-run", timeout=120)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "micro_batch_size=3 x train.devices=2 x train.num_nodes=1 = 6" in lines[0]


def test_estimate_prints_tokens_per_step_independent_of_gpu_count():
    for extra, acc, gpus in (((), 64, 1), (("--set", "devices=8", "--strategy", "fsdp"), 8, 8)):
        r = run_cli("estimate", "--preset", "1.4B", *extra, timeout=120)
        assert r.returncode == 0, r.stderr
        assert (f"tokens per optimizer step: 524,288 = micro-batch 4 x seq 2048 x accumulate {acc} x {gpus} GPUs"
                in " ".join(r.stdout.split()))


@pytest.mark.slow
def test_one_process_and_two_ddp_processes_train_the_same_tokens_per_step(tmp_path):
    """1 process x micro 16 and 2 gloo DDP processes x micro 8: same global batch, same LR schedule."""
    common = ["--preset", "smoke", "--objective", "masked", *SMALL_ARGS, "--set", "global_batch_size=32",
              "--set", "warmup_steps=2", "--set", "log_every=1", "--max-steps", "4", "--no-progress"]
    for name, devices, micro, acc in (("one", 1, 16, 2), ("two", 2, 8, 2)):
        r = run_cli("train", *common, "--devices", str(devices), "--strategy", "ddp" if devices > 1 else "auto",
                    "--set", f"micro_batch_size={micro}", "--run-dir", str(tmp_path / name), timeout=400)
        assert r.returncode == 0, r.stderr[-3000:]
        log = (tmp_path / name / "train.log").read_text()
        assert (f"tokens per optimizer step: 1,024 = micro-batch {micro} x seq 32 x accumulate {acc} "
                f"x {devices} processes") in log
    rows = {n: read_metrics(tmp_path / n) for n in ("one", "two")}
    fed = {n: sorted({r["perf/tokens_per_step"] for r in rs if "perf/tokens_per_step" in r}) for n, rs in rows.items()}
    assert fed["one"] == fed["two"] == [1024.0]  # measured from the batches each optimizer step consumed
    lrs = {n: {r["step"]: r["lr-AdamW/embed"] for r in rs if "lr-AdamW/embed" in r} for n, rs in rows.items()}
    assert len(lrs["one"]) == 4 and len(set(lrs["one"].values())) == 3 and lrs["one"] == lrs["two"]


SMOKE_RUN = ["--preset", "smoke", "--objective", "masked", *SMALL_ARGS, "--set", "val_every=100", "--no-progress"]


@pytest.mark.slow
def test_resume_run_dir_alone_continues_and_max_steps_extends_explicitly(tmp_path):
    run = tmp_path / "run"
    r = run_cli("train", *SMOKE_RUN, "--max-steps", "4", "--stop-at-step", "2", "--run-dir", str(run), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    saved = (run / "config.json").read_text()
    r = run_cli("train", "--resume", str(run), "--no-progress", timeout=300)  # no preset, no flags: the saved run
    assert r.returncode == 0, r.stderr[-2000:]
    assert "trained to step 4" in r.stdout and "max_steps" not in r.stdout + r.stderr
    assert (run / "config.json").read_text() == saved
    assert "start: step 2," in (run / "train.log").read_text()
    r = run_cli("train", "--resume", str(run), "--max-steps", "6", "--no-progress", timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resume: train.max_steps 4 -> 6" in r.stdout and "trained to step 6" in r.stdout
    r = run_cli("train", "--resume", str(run), "--set", "n_layers=3", timeout=120)
    assert r.returncode == 2 and "model.n_layers: saved 2, requested 3" in r.stderr
    r = run_cli("train", "--resume", str(run), "--run-dir", str(tmp_path / "other"), timeout=120)
    assert r.returncode == 2 and "name different folders" in r.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_folders(parent):
    return sorted(p for p in parent.iterdir() if p.is_dir()) if parent.is_dir() else []


@pytest.mark.slow
def test_all_ranks_share_one_run_folder_under_lightning_launcher_and_torchrun(tmp_path):
    for launcher in ("lightning", "torchrun"):
        runs = tmp_path / launcher
        args = [*SMOKE_RUN, "--devices", "2", "--strategy", "ddp", "--max-steps", "2"]
        if launcher == "lightning":
            r = run_cli("train", *args, env={"SUNFISH_RUNS": str(runs)}, timeout=300)
        else:
            import os
            import subprocess
            import sys

            from tests.helpers import ROOT

            env = {**os.environ, "SUNFISH_RUNS": str(runs), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
            r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                                "--master-port", str(_free_port()), "-m", "sunfish_lib.cli", "train", *args], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
        folders = _run_folders(runs)
        assert len(folders) == 1, folders  # not one per rank
        assert r.stdout.count("trained to step 2") == 1
        assert "world size 2" in (folders[0] / "train.log").read_text()


@pytest.mark.slow
def test_several_tasks_without_run_dir_is_one_line_error(tmp_path):
    r = run_cli("train", *SMOKE_RUN, "--fast-dev-run", env={"SLURM_NTASKS": "2", "SUNFISH_RUNS": str(tmp_path)},
                timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "pass --run-dir runs/NAME" in r.stderr
    assert _run_folders(tmp_path) == []


def test_wandb_run_id_is_kept_in_the_run_folder_and_resumed(tmp_path, monkeypatch):
    """No network: a stand-in WandbLogger records what it was given."""
    import sys
    import types

    import pytorch_lightning.loggers as pl_loggers

    from sunfish_lib.train.trainer import _loggers

    seen = []
    monkeypatch.setitem(sys.modules, "wandb", types.ModuleType("wandb"))
    monkeypatch.setattr(pl_loggers, "WandbLogger", lambda **kw: seen.append(kw) or kw)
    cfg = get_config("tiny", wandb=True, tensorboard=False)
    _loggers(cfg, tmp_path)
    _loggers(cfg, tmp_path, resume_step=7)  # the resumed attempt
    assert len(seen) == 2 and seen[0]["id"] == seen[1]["id"] and seen[1]["resume"] == "allow"
    assert (tmp_path / "wandb_id").read_text().strip() == seen[0]["id"] and len(seen[0]["id"]) == 12
    other = tmp_path / "other"
    other.mkdir()
    _loggers(cfg, other)
    assert seen[2]["id"] != seen[0]["id"]  # another run folder, another W&B run


def _tb_scalars(run_dir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


@pytest.mark.slow
def test_tensorboard_purges_steps_trained_again_after_resume(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    run = tmp_path / "run"
    args = [*SMOKE_RUN, "--set", "tensorboard=true", "--max-steps", "5", "--run-dir", str(run)]
    r = run_cli("train", *args, "--stop-at-step", "2", timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    # what a run killed after step 4 would have left: events of steps 2-4 that the resume trains again
    writer = SummaryWriter(str(run / "tensorboard"))
    for step in (2, 3, 4):
        writer.add_scalar("train/loss", 1e6, step)
    writer.close()
    r = run_cli("train", "--resume", str(run), "--no-progress", timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    points = _tb_scalars(run, "train/loss")
    steps = [s for s, _ in points]
    assert len(steps) == len(set(steps)) and max(steps) == 4  # each step once
    assert all(v < 1e5 for _, v in points)  # the orphaned events are gone


@pytest.mark.slow
def test_compiled_and_eager_losses_and_grads_agree():
    import torch

    from sunfish_lib.train.module import SunfishModule, compile_enabled
    from tests.train_helpers import small_config

    assert compile_enabled(None, torch.device("cuda")) and not compile_enabled(None, torch.device("cpu"))
    assert compile_enabled(True, torch.device("cpu")) and not compile_enabled(False, torch.device("cuda"))
    cfg = small_config("masked", compile=True)
    V = cfg.model.vocab_size
    compiled = SunfishModule(cfg.to_dict(), mask_token_id=V - 1)
    eager = SunfishModule(cfg.override({"compile": False}).to_dict(), mask_token_id=V - 1)
    eager.load_state_dict(compiled.state_dict())
    compiled.configure_model()
    eager.configure_model()
    assert all(b._compiled_call_impl is not None for b in compiled.model.blocks)
    assert all(b._compiled_call_impl is None for b in eager.model.blocks)
    assert list(compiled.state_dict()) == list(eager.state_dict())  # checkpoints keep their names
    batch = {"input_ids": torch.randint(0, V - 1, (4, 32), generator=torch.Generator().manual_seed(0))}
    losses, grads = [], []
    for m in (compiled, eager):
        loss = m.objective.loss(m.model, batch, generator=torch.Generator().manual_seed(1))["loss"]
        loss.backward()
        losses.append(float(loss.detach()))
        grads.append(torch.cat([p.grad.flatten() for p in m.model.parameters() if p.grad is not None]))
    assert abs(losses[0] - losses[1]) < 1e-5 * max(1.0, abs(losses[1]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5, rtol=1e-4)
