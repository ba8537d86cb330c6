"""bench/gpu_check.py: its argument checks and, on a CPU, the self-check path (the GPU figures need a GPU)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.helpers import ROOT

SCRIPT = str(ROOT / "bench" / "gpu_check.py")


def _run(*args, timeout=120):
    return subprocess.run([sys.executable, SCRIPT, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PATH": "/usr/bin:/bin"})


@pytest.mark.slow
@pytest.mark.parametrize("args,message", [
    (["--presets", "125M,7B"], "error: --presets '7B' is not a preset; choose from tiny, 125M, 350M, 1.4B"),
    (["--device", "cuda"], "error: --device cuda: this torch build sees no CUDA GPU; use --device cpu"),
    (["--steps", "0", "--device", "cpu"], "error: --steps 0 must be >= 1"),
])
def test_bad_arguments_are_one_line_errors(args, message):
    import torch

    if args[:2] == ["--device", "cuda"] and torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    r = _run(*args)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith(message)


@pytest.mark.slow
def test_cpu_self_check_reports_every_section_as_json():
    r = _run("--device", "cpu", "--steps", "1", "--fsdp-steps", "2", "--sample-length", "16", timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["device"] == "cpu" and [s["preset"] for s in out["steps"]] == ["tiny"]
    assert out["steps"][0]["tokens_per_s"] > 0 and out["steps"][0]["compile"] is False
    assert out["flex"]["logits_max_diff"] < 1e-4 and out["flex"]["grads_max_diff"] is None
    assert out["fsdp"]["finite"] and len(out["fsdp"]["losses"]) == 2
    assert set(out["sampling"]["tokens_per_s"]) == {"none", "prefix", "dual"}
