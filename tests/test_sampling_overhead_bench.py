"""bench/sampling_overhead.py in smoke mode: every sampler and the LLaDA-style reference run, last line JSON."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_sampling_overhead_bench_smoke():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "sampling_overhead.py"), "--smoke"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    rows = result["results"]
    assert [r["sampler"] for r in rows] == ["ddpm", "ddim", "ancestral", "low_confidence", "random", "threshold", "ar"] * 2
    assert {r["vocab"] for r in rows} == {300, 600} and len(result["reference"]) == 2
    for r in rows + result["reference"]:
        assert 0 < r["model_s"] <= r["wall_s"] and r["forward_passes"] >= 1
        assert 0 < r["model_fraction"] <= 1
    assert result["speedup_vs_reference"] > 0 and result["speedup_vocab"] == 600
