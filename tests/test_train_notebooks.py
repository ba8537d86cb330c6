"""Notebooks 03 (overfit) and 04 (train) run headlessly with smoke parameters."""

import pytest
import json
import math


from sunfish_lib.config import Config
from sunfish_lib.eval.compare import best_and_ties, within_noise
from sunfish_lib.notebook.report import closing_text
from sunfish_lib.notebook.runner import run_notebooks
from sunfish_lib.io.metrics import read_metrics
from tests.conftest import NotebookOutputs
from tests.helpers import NOTEBOOKS

pytestmark = pytest.mark.slow  # runs notebooks through papermill: outside the fast lane (-m 'not slow')


def _text(nb_path) -> str:
    return NotebookOutputs.read(nb_path).streams


def test_overfit_notebook_fits_the_masked_model_below_its_batches_no_context_loss(tmp_path):
    nb = NOTEBOOKS / "03_overfit.ipynb"
    run_dir = run_notebooks([nb], {nb.name: {"smoke": True}}, runs_parent=tmp_path)
    folder = run_dir / "03_overfit"
    cfg = Config.load(folder / "config.json")
    assert cfg.diffusion.objective == "masked"  # the workbook's main model
    losses = [r["train/loss"] for r in read_metrics(folder) if "train/loss" in r]
    tail = losses[-round(len(losses) / 4):]  # the verdict's mean: the last quarter of the logged losses
    mean = sum(tail) / len(tail)
    se = math.sqrt(sum((x - mean) ** 2 for x in tail) / (len(tail) - 1) / len(tail))
    closing = closing_text(run_dir / nb.name)  # the "what this showed" cell, read back from the run's metrics
    assert closing.startswith(f"PASS: masked loss {losses[0]:.3f} -> {mean:.3f} ± {se:.3f} (mean of the last "
                              f"{len(tail)} logged) after {cfg.train.max_steps} steps"), closing
    assert losses[0] > 5 and mean + 2 * se < 4.7  # well under log(V) and under the batches' unigram entropy


def test_train_notebook_runs_and_resumes(tmp_path):
    nb = NOTEBOOKS / "04_train.ipynb"
    run_dir = run_notebooks([nb], {nb.name: {"smoke": True, "max_steps": 4, "poll_seconds": 0.5}},
                            runs_parent=tmp_path)
    assert "new run" in _text(run_dir / nb.name)
    folder = run_dir / "04_train"
    assert (folder / "export" / "model.safetensors").is_file()
    samples = (folder / "samples.txt").read_text()
    assert "--- unconditional 1 ---" in samples and "--- infill ---" in samples and "ROMEO:" in samples
    # the AR, continuous and block baselines trained at the same budget (same tokens), and one likelihood table
    main = Config.load(folder / "config.json")
    for objective in ("ar", "continuous", "block"):
        base = Config.load(run_dir / "04_baselines" / objective / "config.json")
        assert base.diffusion.objective == objective and base.train.max_steps == main.train.max_steps == 4
        assert base.data == main.data and base.tokens_per_step == main.tokens_per_step == 4 * 32
    table = {r["model"]: r for r in json.loads((folder / "likelihoods.json").read_text())}
    assert list(table) == ["masked", "ar", "continuous", "block", "unigram"]
    assert table["block"]["kind"] == "ELBO upper bound" and table["block"]["bits_per_byte"] > 0
    assert table["masked"]["kind"] == "ELBO upper bound" and table["ar"]["kind"] == "exact NLL"
    assert table["continuous"]["kind"] == "ELBO upper bound"  # the chain's variational bound (#26)
    assert table["masked"]["bits_per_byte"] > 0 and table["continuous"]["bits_per_byte"] > 0
    assert 0 < table["unigram"]["nats_per_token"] < math.log(main.model.vocab_size)
    shown = NotebookOutputs.read(run_dir / nb.name).data("text/markdown")
    assert any("| masked | ELBO upper bound |" in m and "masked/AR perplexity ratio" in m for m in shown)
    gap = (table["masked"]["nats_per_token"] - table["block"]["nats_per_token"]) / (
        table["masked"]["nats_per_token"] - table["ar"]["nats_per_token"])
    assert any(f"block 4 closes {gap:.2f} of the masked-AR gap" in m for m in shown)
    assert any("| continuous | ELBO upper bound |" in m and "continuous bound / unigram NLL" in m for m in shown)
    out = NotebookOutputs.read(run_dir / nb.name)
    assert out.count("image/png") == 1  # the 4-panel curves, drawn once (the live frames are cleared)
    closing = closing_text(run_dir / nb.name)  # the "what this showed" cell, read against likelihoods.json
    bounds = {k: r for k, r in table.items() if k != "unigram"}
    best, ties = best_and_ties(bounds)
    assert closing.startswith(f"- lowest held-out nats/token: {best} {bounds[best]['nats_per_token']:.3f} ± "
                              f"{bounds[best]['stderr']:.3f}"), closing
    gap = table["masked"]["nats_per_token"] - table["ar"]["nats_per_token"]
    tie = "within noise (a tie)" if within_noise(table["masked"], table["ar"]) else "more than 2 SE apart"
    assert f"- masked ELBO minus AR NLL: {gap:.3f} nats/token, {tie}" in closing
    assert f"unigram plateau ({table['unigram']['nats_per_token']:.3f} nats/token)" in closing
    # run it again on the same folder with more steps: it resumes
    from sunfish_lib.notebook.runner import execute_notebook

    execute_notebook(nb, run_dir, {"smoke": True, "max_steps": 8, "poll_seconds": 0.5, "run_dir": str(run_dir)})
    text = _text(run_dir / nb.name)
    assert "resuming" in text and "finished" in text
    log = (folder / "train.log").read_text()
    assert "start: step 4," in log and "end: step 8" in log
    steps = [r["step"] for r in read_metrics(folder) if "train/loss" in r]
    assert max(steps) == 7 and len(steps) == len(set(steps))
    # the baselines follow to the new budget (resumed, not retrained)
    for objective in ("ar", "continuous", "block"):
        assert Config.load(run_dir / "04_baselines" / objective / "config.json").train.max_steps == 8
        assert "end: step 8" in (run_dir / "04_baselines" / objective / "train.log").read_text()
