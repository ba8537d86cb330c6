"""bench/step_profile.py at the toy shape: the parts cover the profiled step, the JSON has every part and the Lightning figures."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_step_profile_toy():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "step_profile.py"), "--shapes", "toy",
                          "--objectives", "masked,ar", "--steps", "2", "--lightning-shape", "toy",
                          "--lightning-steps", "10", "--rounds", "1"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    parts = ["data", "embed", "time", "adaLN+residual", "attn.qkv", "attn.sdpa", "attn.proj", "mlp", "norms",
             "encode.other", "head", "loss", "backward", "clip", "optimizer", "other"]
    assert result["parts"] == parts
    assert [(r["shape"], r["objective"]) for r in result["profiles"]] == [("toy", "masked"), ("toy", "ar")]
    for r in result["profiles"]:
        assert list(r["parts_ms"]) == parts and r["tokens"] == 4 * 32
        step = r["profiled_step_ms"]
        assert sum(r["parts_ms"].values()) == pytest.approx(step, rel=1e-6)  # the parts add up to the step
        assert abs(r["parts_ms"]["other"]) < 0.1 * step  # ... and the named ones cover >= 90% of it
        assert sum(r["parts_pct"].values()) == pytest.approx(100.0, rel=1e-6)
        for name in ("attn.qkv", "attn.proj", "mlp", "norms", "backward", "optimizer", "head"):
            assert r["parts_ms"][name] > 0, name
        assert r["step_ms"] > 0 and r["step_ms_spread"][0] <= r["step_ms"] <= r["step_ms_spread"][1]
    light = result["lightning"]
    assert light["shape"] == "toy" and light["rounds"] == 1 and light["log_every"] == 10
    assert light["lightning_step_ms"] > 0 and light["bare_step_ms"] > 0
    assert light["overhead_pct"] == pytest.approx(100 * (light["lightning_step_ms"] / light["bare_step_ms"] - 1))
