"""bench/sampling_cache.py: three cache modes, the cache runs fewer positions, last line JSON; without --run it
trains (once) the tiny masked run and an ar judge at its budget through workbook.train_or_reuse."""

import json
import subprocess
import sys

import pytest

from sunfish_lib.config import Config
from tests.helpers import ROOT
from tests.sampling_helpers import make_run


@pytest.mark.slow
def test_sampling_cache_bench_smoke(tmp_path):
    masked, ar = make_run(tmp_path / "masked", "masked"), make_run(tmp_path / "ar", "ar")
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "sampling_cache.py"), "--run", str(masked),
                          "--judge", str(ar), "--length", "16", "--block-length", "4", "--samples", "1",
                          "--device", "cpu"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    none, prefix, dual = result["modes"]
    assert [m["cache"] for m in result["modes"]] == ["none", "prefix", "dual"]
    assert none["forward_passes"] == prefix["forward_passes"] == dual["forward_passes"] == 16
    assert none["positions"] == 16 * 16 and dual["positions"] < prefix["positions"] < none["positions"]
    assert dual["flops_ratio"] > prefix["flops_ratio"] > 1 and none["judge_ppl"] > 0
    assert isinstance(result["target_met"], bool)


def _bench(*argv):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "sampling_cache.py"), "--length", "16",
                          "--block-length", "4", "--samples", "1", "--device", "cpu", *map(str, argv)],
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout, json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_sampling_cache_bench_trains_its_models_when_given_no_run(tmp_path):
    text, result = _bench("--smoke", "--out", tmp_path)
    masked, ar = tmp_path / "masked", tmp_path / "ar"
    assert result["model"] == str(masked) and result["judge"] == str(ar) and result["train_steps"] == 8
    assert Config.load(masked / "config.json").diffusion.objective == "masked"
    assert Config.load(ar / "config.json").diffusion.objective == "ar"  # the judge, at the masked run's budget
    assert Config.load(ar / "config.json").train.max_steps == 8
    none, prefix, dual = result["modes"]
    assert none["judge_ppl_change"] == 0 and none["entropy_change"] in (0, None)  # None: entropy 0 (8 steps)
    for m in (prefix, dual):  # the quality delta against no cache, as printed
        assert m["judge_ppl_change"] == m["judge_ppl"] / none["judge_ppl"] - 1
        assert m["entropy_change"] == (m["entropy"] / none["entropy"] - 1 if none["entropy"] else None)
        assert f"judge ppl {m['judge_ppl']:.2f} ({100 * m['judge_ppl_change']:+.1f}%)" in text
    mtime = (masked / "export" / "model.safetensors").stat().st_mtime_ns
    _, again = _bench("--smoke", "--out", tmp_path)  # reused, not retrained
    assert (masked / "export" / "model.safetensors").stat().st_mtime_ns == mtime
    assert [m["forward_passes"] for m in again["modes"]] == [m["forward_passes"] for m in result["modes"]]


@pytest.mark.slow
def test_sampling_cache_bench_block_objective_exact_cache(tmp_path):
    """--objective block: cached and uncached greedy samples identical; the cache runs fewer positions."""
    run = make_run(tmp_path / "block", "block", block_size=4)
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "sampling_cache.py"), "--objective", "block", "--run",
                          str(run), "--length", "16", "--samples", "1", "--batch", "2", "--device", "cpu"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    none, exact = result["modes"]
    assert (none["cache"], exact["cache"]) == ("none", "exact") and result["identical_greedy"] is True
    assert result["block_size"] == 4 and result["batch"] == 2
    # one token a step: 16 steps of the 4-token block + the 12 clean positions once, against 4 steps per block
    # over the whole prefix + block (4, 8, 12, 16 positions); 2 rows
    assert exact["positions"] == 2 * (4 * 16 + 12) and none["positions"] == 2 * 4 * (4 + 8 + 12 + 16)
    assert result["speedup"] > 0 and isinstance(result["target_met"], bool)
