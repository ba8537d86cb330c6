"""bench/sampling_cache.py on tiny untrained runs: three cache modes, the cache runs fewer positions, last line JSON."""

import json
import subprocess
import sys

from tests.helpers import ROOT
from tests.sampling_helpers import make_run


def test_sampling_cache_bench_smoke(tmp_path):
    masked, ar = make_run(tmp_path / "masked", "masked"), make_run(tmp_path / "ar", "ar")
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "sampling_cache.py"), "--masked-run", str(masked),
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
