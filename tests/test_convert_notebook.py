"""Notebook 08 (AR -> diffusion) runs headlessly with smoke parameters; its figure reads back."""

import pytest
import json


from sunfish_lib.eval.evaluate import evaluate_run
from sunfish_lib.notebook.plots import conversion_curves
from sunfish_lib.notebook.runner import run_notebooks
from tests.notebook_display import NotebookOutputs
from tests.helpers import NOTEBOOKS

pytestmark = pytest.mark.slow  # runs notebooks through papermill: outside the fast lane (-m 'not slow')


def test_ar_to_diffusion_notebook_smoke(tmp_path):
    nb = NOTEBOOKS / "08_ar_to_diffusion.ipynb"
    run_dir = run_notebooks([nb], {nb.name: {"smoke": True}}, runs_parent=tmp_path)
    folder = run_dir / "08_ar_to_diffusion"
    results = json.loads((folder / "results.json").read_text())
    assert [c["family"] for c in results["hf_checks"]] == ["gpt2", "llama"]
    assert all(c["max_abs_diff"] < 1e-5 and c["argmax_agreement"] == 1.0 for c in results["hf_checks"])
    assert results["hf_checks"][1]["kv_heads"] == 2 and results["hf_checks"][1]["layout"] == "rmsnorm/swiglu/rope"
    labels = ["converted, attn/mlp LR 1", "converted, attn/mlp LR 4", "from scratch"]
    assert list(results["elbo"]) == labels
    assert all(r["kind"] == "ELBO upper bound" and r["nats_per_token"] > 0 for r in results["elbo"].values())
    # like for like (issue 14.10): the AR parent scored by the same function on the same batches and tokens
    ar = results["ar_parent"]
    assert ar["kind"] == "exact NLL" and ar["nats_per_token"] > 0
    assert all((r["sequences"], r["tokens"], r["bytes"]) == (ar["sequences"], ar["tokens"], ar["bytes"])
               for r in results["elbo"].values())
    again = evaluate_run(folder / "ar-parent", val_batches=2, t_samples=2, seed=0)
    assert again.nats_per_token == ar["nats_per_token"]
    assert (folder / "conversion.png").stat().st_size > 10_000
    cfg = json.loads((folder / "converted-r4" / "config.json").read_text())
    assert cfg["train"]["lr_mult_attn"] == 2.0 and cfg["train"]["lr_mult_mlp"] == 0.5
    assert cfg["train"]["init_from"].endswith("08_ar_to_diffusion/converted")
    out = NotebookOutputs.read(run_dir / nb.name)
    text, kinds, html_out = out.streams, out.kinds, out.html
    assert "max |logit diff|" in text and "from scratch" in html_out and "unigram entropy (nats)" in html_out
    # an independent judge (issue 30): trained here with another seed, never the converted models' AR parent
    assert html_out.count("judge perplexity") == 2 and "ar-parent" not in html_out
    assert {s["judge"] for s in results["samples"].values()} == {str(folder / "ar-judge")}
    judge_cfg = json.loads((folder / "ar-judge" / "config.json").read_text())
    assert judge_cfg["seed"] == 1 and judge_cfg["diffusion"]["objective"] == "ar"
    assert kinds.count("image/png") == 1 and not any("widget" in k for k in kinds)  # no progress-bar widgets
    # several budgets (a quarter, half and all of the 4 smoke steps), each with its SE, against the unigram plateau
    assert all(sorted(int(b) for b in per) == [1, 2, 4] for per in results["budgets"].values())
    assert all(per["4"] == results["elbo"][label] for label, per in results["budgets"].items())
    assert [r["steps"] for r in results["comparison"]] == [1, 2, 4]
    final = results["comparison"][-1]
    scratch = final["runs"]["from scratch"]
    assert final["unigram"] == results["unigram"]["nats_per_token"] > 0
    assert final["baseline_left_plateau"] == (scratch["nats_per_token"] + 2 * scratch["stderr"] < final["unigram"])
    closing = out.data("text/markdown")[-1]  # the "what this showed" cell
    assert "4 steps: converted, attn/mlp LR" in closing and "unigram plateau" in closing and "independent judge (ar-judge)" in closing


def test_conversion_curves_reads_back():
    rows = [{"step": s, "train/loss": 8.0 - s} for s in range(4)] + [{"step": 3, "val/loss": 5.5}]
    fig = conversion_curves({"converted": rows, "from scratch": rows[:2]}, {"converted": 5.0, "from scratch": 7.0})
    ax, bx = fig.axes
    assert [line.get_label() for line in ax.lines] == ["converted", "converted (val)", "from scratch"]
    assert list(ax.lines[0].get_ydata()) == [8.0, 7.0, 6.0, 5.0]
    assert [round(p.get_width(), 3) for p in bx.patches] == [5.0, 7.0]
    assert len(conversion_curves({"a": rows}).axes) == 1
