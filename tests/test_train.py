"""Training: exact resume, FSDP2/DDP on 2 CPU processes, SIGKILL recovery, guards."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sunfish_lib.diffusion.continuous import CDCD_RECIPE, PLAIN_RECIPE
from sunfish_lib.errors import SunfishError
from sunfish_lib.sampling import MaskedSampler, RowNoise
from sunfish_lib.io.export import load_for_inference
from sunfish_lib.io.metrics import read_metrics, series
from sunfish_lib.train.trainer import train
from tests.helpers import ROOT, run_cli
from sunfish_lib.train.callbacks import StopAtStep as StopAt
from tests.train_helpers import SMALL_ARGS, BreakWeights, small_config


def _max_diff(a: Path, b: Path) -> float:
    sa, sb = load_file(str(a / "export" / "model.safetensors")), load_file(str(b / "export" / "model.safetensors"))
    assert sa.keys() == sb.keys()
    return max((sa[k] - sb[k]).abs().max().item() for k in sa)


@pytest.mark.slow
def test_resume_gives_identical_weights(tmp_path):
    """6 steps straight == 3 steps, stop, resume, 3 more (accumulation and EMA on): bitwise on CPU."""
    cfg = small_config("masked", accumulate_grad_batches=2, ema_decay=0.9)
    straight = train(cfg, tmp_path / "a", progress=False)
    part = train(cfg, tmp_path / "b", progress=False, callbacks=(StopAt(3),))
    assert part["global_step"] == 3
    resumed = train(cfg, tmp_path / "b", progress=False, resume=True)
    assert straight["global_step"] == resumed["global_step"] == 6
    assert _max_diff(tmp_path / "a", tmp_path / "b") == 0.0
    steps, losses = series(read_metrics(tmp_path / "b"), "train/loss")
    steps_a, losses_a = series(read_metrics(tmp_path / "a"), "train/loss")
    assert steps == steps_a and losses == pytest.approx(losses_a, abs=0)
    log = (tmp_path / "b" / "train.log").read_text()
    assert "start: step 3" in log


def test_run_outputs_and_export_load(tmp_path):
    cfg = small_config("ar")
    out = train(cfg, tmp_path, progress=False)
    for name in ("config.json", "train.log", "tokenizer/tokenizer.json", "checkpoints/last.ckpt",
                 "export/model.safetensors", "export/config.json", "logs/00/metrics.csv"):
        assert (tmp_path / name).exists(), name
    assert any(p.name.startswith("best-step") for p in (tmp_path / "checkpoints").iterdir())
    model, cfg2, tok = load_for_inference(tmp_path)
    assert cfg2 == cfg and tok is not None and model.cfg.causal
    rows = read_metrics(tmp_path)
    assert {"train/loss", "perf/tokens_per_s", "perf/mfu", "train/grad_norm"} <= set().union(*rows)
    assert any("val/loss" in r for r in rows)
    assert out["metrics"]["train/loss"] > 0
    steps = json.loads((tmp_path / "status.json").read_text())["step"]  # the model card counts the run's steps
    assert steps > 0 and f"| trained | {steps} steps, tokens not measured |" in (tmp_path / "export" / "README.md").read_text()


def test_guards_nan_unwritable_and_config_mismatch(tmp_path):
    cfg = small_config("masked", ckpt_every=2)
    with pytest.raises(SunfishError, match=r"loss became nan at step 3: training stopped; last good checkpoint: step 3 in .*nan/checkpoints"):
        train(cfg, tmp_path / "nan", progress=False, callbacks=(BreakWeights(3),))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SunfishError, match="is not writable"):
        train(cfg, blocker / "run", progress=False)
    with pytest.raises(SunfishError, match="already holds a run; pass --resume"):
        train(cfg, tmp_path / "nan", progress=False)
    with pytest.raises(SunfishError, match=r"differs from the requested config \(model.n_layers: saved 2, requested 3\)"):
        train(small_config("masked", ckpt_every=2, n_layers=3), tmp_path / "nan", progress=False, resume=True)


def _train_cli(run_dir, *extra, devices=2, strategy="fsdp"):
    r = run_cli("train", "--preset", "smoke", "--objective", "masked", "--devices", str(devices),
                "--strategy", strategy, *SMALL_ARGS, "--max-steps", "6", "--set", "ema_decay=0.9", "--run-dir", str(run_dir),
                "--no-progress", *extra, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


@pytest.mark.slow
def test_fsdp2_and_ddp_two_cpu_processes_agree_and_resume(tmp_path):
    _train_cli(tmp_path / "ddp", strategy="ddp")
    _train_cli(tmp_path / "fsdp", "--stop-at-step", "3")
    r = _train_cli(tmp_path / "fsdp", "--resume")  # 3 more steps, sharded run resumed
    assert r.stdout.count("trained to step 6") == 1  # only rank 0 prints
    assert _max_diff(tmp_path / "ddp", tmp_path / "fsdp") < 1e-5
    # the gathered checkpoint loads into one process and samples
    model, cfg, tok = load_for_inference(tmp_path / "fsdp" / "checkpoints" / "last.ckpt")
    assert model.cfg.time_conditioning is False
    x = torch.full((2, 16), tok.mask_token_id)
    out = MaskedSampler(model, tok.mask_token_id, steps=4).generate(x, noise=RowNoise(0))
    assert (out != tok.mask_token_id).all()
    assert "world size 2" in (tmp_path / "fsdp" / "train.log").read_text()


@pytest.mark.slow
def test_sigkill_resumes_from_last_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "sunfish_lib.cli", "train", "--preset", "smoke", "--objective", "masked", *SMALL_ARGS,
            "--set", "ckpt_every=2", "--set", "val_every=100", "--max-steps", "400", "--run-dir", str(run_dir),
            "--no-progress"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = run_dir / "train.log"
    deadline = time.time() + 120
    while time.time() < deadline:
        if log.exists() and " step 7 " in log.read_text():
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    saved_step = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert saved_step >= 6 and saved_step % 2 == 0
    r = run_cli("train", "--preset", "smoke", "--objective", "masked", *SMALL_ARGS, "--set", "ckpt_every=2",
                "--set", "val_every=100", "--max-steps", str(saved_step + 2), "--run-dir", str(run_dir),
                "--resume", "--no-progress", timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"start: step {saved_step}," in log.read_text()
    assert f"trained to step {saved_step + 2}" in r.stdout


@pytest.mark.slow
@pytest.mark.parametrize("recipe", [PLAIN_RECIPE, CDCD_RECIPE], ids=["plain", "cdcd"])
def test_continuous_objective_fsdp2_matches_ddp(tmp_path, recipe):
    """Continuous diffusion reads the embedding table outside `forward`: FSDP2 must still gather it (and CDCD's
    normalised table must not keep the gathered weight for backward: it segfaulted)."""
    sets = [a for k, v in recipe.items() for a in ("--set", f"{k}={str(v).lower()}")]
    for strategy in ("ddp", "fsdp"):
        r = run_cli("train", "--preset", "smoke", "--objective", "continuous", "--devices", "2", "--strategy", strategy,
                    *SMALL_ARGS, *sets, "--max-steps", "4", "--run-dir", str(tmp_path / strategy), "--no-progress",
                    timeout=300)
        assert r.returncode == 0, r.stderr[-3000:]
    assert _max_diff(tmp_path / "ddp", tmp_path / "fsdp") < 1e-4


@pytest.mark.slow
def test_fast_dev_run_and_overfit_flags(tmp_path, capsys):
    from sunfish_lib.cli import main

    code = main(["train", "--preset", "smoke", "--objective", "ar", *SMALL_ARGS, "--fast-dev-run",
                 "--run-dir", str(tmp_path / "dev"), "--no-progress"])
    assert code == 0 and "trained to step 1" in capsys.readouterr().out
    assert not (tmp_path / "dev" / "checkpoints").exists()  # nothing written but config and tokenizer
    code = main(["train", "--preset", "smoke", "--objective", "ar", *SMALL_ARGS, "--overfit-batches", "1",
                 "--max-steps", "40", "--set", "lr=0.01", "--set", "decay=constant", "--run-dir",
                 str(tmp_path / "of"), "--no-progress", "--json"])
    assert code == 0
    import json

    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["global_step"] == 40 and summary["metrics"]["train/loss"] < 1.0
    assert main(["train", "--resume"]) == 2
    assert "--resume needs the run folder: --resume RUN_DIR" in capsys.readouterr().err
