"""Notebook 10 and bench/where_diffusion_wins.py at smoke size; `sunfish evaluate --task` and `sunfish train` on
SFT pairs through the CLI (training, evaluation over completion tokens, bad rows exit 2)."""

import json
import subprocess
import sys

import pytest

from sunfish_lib.notebook.runner import run_notebooks
from sunfish_lib.notebook.task_lab import JOBS, run_lab, summary, table_rows, takeaways
from tests.helpers import NOTEBOOKS, ROOT
from tests.notebook_display import NotebookOutputs

pytestmark = pytest.mark.slow  # trains models and runs a notebook through papermill

KEYS = {"reversal_backward_masked", "reversal_backward_ar", "path_star_masked", "path_star_ar", "minutes"}


def test_notebook_10_smoke_shows_table_heatmap_and_takeaways(tmp_path):
    nb = NOTEBOOKS / "10_where_diffusion_wins.ipynb"
    run_dir = run_notebooks([nb], {nb.name: {"smoke": True}}, runs_parent=tmp_path)
    out = NotebookOutputs.read(run_dir / nb.name)
    assert "image/png" in out.kinds  # the decode-order heatmap rendered, not a <Figure ...> repr
    assert "<table" in out.html and "Kitouni" in out.html  # accuracy table and the published one
    results = json.loads(next(run_dir.rglob("results.json")).read_text())
    assert {(r["task"], r["label"]) for r in results} == {(t, j[0]) for t in ("reversal", "path_star") for j in JOBS[t]}
    for line in takeaways(results):  # the closing cell says what the run measured
        assert line.split(":")[0] in out.markdown


def test_lab_rows_are_equal_budget_and_bench_prints_its_json(tmp_path):
    results = run_lab(tmp_path / "lab", "smoke", parallel=1)
    s = summary(results)
    assert s["reversal"]["masked"]["n"]["backward"] == 4  # 20 facts, 20% held out
    assert {r["tokens"] for r in table_rows(results) if r["task"] == "path_star"} == {2 * 26 * 32}
    assert set(s["path_star"]["masked"]["orders"]) == {"random", "low_confidence", "margin"}
    bench = subprocess.run([sys.executable, str(ROOT / "bench" / "where_diffusion_wins.py"), "--scale", "smoke",
                            "--parallel", "1", "--out", str(tmp_path / "bench")], cwd=ROOT, capture_output=True,
                           text=True, timeout=900)
    assert bench.returncode == 0, bench.stderr[-2000:]
    last = json.loads(bench.stdout.strip().splitlines()[-1])
    assert KEYS <= set(last) and all(0 <= last[k] <= 1 for k in KEYS - {"minutes"})


def test_cli_trains_on_user_pairs_and_evaluates_completion_tokens(tmp_path):
    rows = [{"prompt": f"say {w}", "completion": f"{w} {w} ok"} for w in ("red", "blue", "green", "cat", "dog")] * 8
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    words = tmp_path / "tok"
    from sunfish_lib.tasks import task_tokenizer

    task_tokenizer("say red blue green cat dog ok".split()).save(words)
    sunfish = [sys.executable, "-m", "sunfish_lib.cli"]
    common = ["--preset", "smoke", "--objective", "masked", "--set", f"data.tokenizer={words}", "--set", "seq_len=8",
              "--set", "length=8", "--set", "val_fraction=0.2", "--max-steps", "2", "--no-progress"]
    ok = subprocess.run(sunfish + ["train", "--data", str(data), "--run-dir", str(tmp_path / "run")] + common,
                        capture_output=True, text=True, timeout=600)
    assert ok.returncode == 0, ok.stderr[-2000:]
    ev = subprocess.run(sunfish + ["evaluate", str(tmp_path / "run"), "--batches", "2", "--t-samples", "2", "--json"],
                        capture_output=True, text=True, timeout=600)
    res = json.loads(ev.stdout.strip().splitlines()[-1])
    # scored: completion + EOS padding of the held-out rows (prompt "say w" = 2 tokens of 8): 6 per row
    assert res["tokens"] == 6 * res["sequences"] and res["kind"] == "ELBO upper bound"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(rows[0]) + "\n" + json.dumps({"prompt": "say red"}) + "\n")
    fail = subprocess.run(sunfish + ["train", "--data", str(bad), "--run-dir", str(tmp_path / "bad")] + common,
                          capture_output=True, text=True, timeout=600)
    assert fail.returncode == 2 and "bad.jsonl line 2: missing field 'completion'" in fail.stderr
