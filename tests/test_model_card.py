"""`sunfish export` writes a model card: Hub metadata, the run's own figures (or "not measured"), a snippet that runs."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest
from huggingface_hub import ModelCard

from sunfish_lib.commands import export as export_cmd
from sunfish_lib.eval.compare import tokens_after
from sunfish_lib.eval.evaluate import evaluate_run
from sunfish_lib.io.model_card import NOT_MEASURED, model_card, read_card_snippet
from tests.helpers import run_cli
from tests.sampling_helpers import make_run
from tests.test_hf_generate import BLOCKER
from tests.train_helpers import small_config


def _front_matter(text: str) -> dict:
    """The card's metadata as the Hub reads it (huggingface_hub's own parser)."""
    assert text.startswith("---\n")
    return ModelCard(text).data.to_dict()


def _run_snippet(card: str, tmp_path) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "hf_modules"),
           "TOKENIZERS_PARALLELISM": "false"}
    code = BLOCKER + read_card_snippet(card) + "\nprint('SUNFISH', sorted(m for m in sys.modules if 'sunfish_lib' in m))\n"
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().splitlines()[-1] == "SUNFISH []"
    return r.stdout


@pytest.mark.slow
def test_card_holds_the_runs_figures_and_its_snippet_runs(tmp_path):
    run = make_run(tmp_path / "run", "ar")
    (run / "status.json").write_text(json.dumps({"step": 10, "elapsed_s": 3.0}))
    quality = {"entropy": 3.21, "reference_entropy": 4.56, "distinct_2": 0.7, "judge_ppl": None,
               "judge": None, "judge_note": "no judge: test", "per_sample": [{"entropy": 3.2}]}
    (run / "samples").mkdir()
    (run / "samples" / "sample-20260101-000000.json").write_text(json.dumps({"quality": quality, "settings": {"steps": 6}}))
    out = tmp_path / "exp"
    r = run_cli("export", str(run), "--out", str(out), "--eval-batches", "1", "--license", "apache-2.0", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    card = (out / "README.md").read_text()
    meta = _front_matter(card)
    assert meta == {"library_name": "transformers", "license": "apache-2.0", "tags": ["sunfish", "ar", "causal-lm"],
                    "pipeline_tag": "text-generation", "datasets": []}
    cfg = json.loads((run / "config.json").read_text())
    assert "10 steps" in card and f"{tokens_after(cfg, 10):,} tokens" in card
    res = evaluate_run(run, val_batches=1)  # the same held-out batch, the same seed: the card's figures
    assert res.kind == "exact NLL" and res.bits_per_byte is not None
    assert f"| exact NLL | {res.nats_per_token:.4f} | {res.stderr:.4f} | {res.perplexity:.2f} | " \
           f"{res.bits_per_byte:.4f} | {res.tokens} " in card
    assert "| entropy (nats/token) | 3.210 | 4.560 |" in card and "no judge: test" in card
    assert json.loads(r.stdout)["card"]["steps"] == 10
    assert "SUNFISH" not in _run_snippet(card, tmp_path).splitlines()[0]  # the snippet's generated text


@pytest.mark.slow
def test_masked_card_without_figures_says_not_measured(tmp_path):
    run = make_run(tmp_path / "run", "masked")
    r = run_cli("export", str(run), "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    card = (run / "export" / "README.md").read_text()
    meta = _front_matter(card)
    assert meta["pipeline_tag"] == "fill-mask" and "diffusion-language-model" in meta["tags"]
    held_out = card.split("## Held-out likelihood")[1].split("##")[0]
    quality = card.split("## Sample quality")[1].split("##")[0]
    assert NOT_MEASURED in held_out and NOT_MEASURED in quality and "steps not measured" in card
    assert "diffusion_generate" in read_card_snippet(card)
    _run_snippet(card, tmp_path)


def test_export_cli_rejects_negative_eval_batches(tmp_path):
    r = run_cli("export", str(tmp_path), "--eval-batches", "-1")
    assert r.returncode == 2 and "--eval-batches -1" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_push_to_hub_uploads_the_card(tmp_path, monkeypatch):
    """The upload path, offline: HfApi is replaced by a recorder of what would be uploaded."""
    run = make_run(tmp_path / "run", "ar")
    uploaded = {}

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo, private=False, exist_ok=True):
            return f"https://huggingface.co/{repo}"

        def upload_folder(self, folder_path, repo_id, commit_message):
            uploaded.update({p: open(os.path.join(folder_path, p)).read() for p in os.listdir(folder_path)
                             if p.endswith((".md", ".json"))})

    monkeypatch.setattr(export_cmd, "_check_hub", lambda repo: None)
    monkeypatch.setattr("huggingface_hub.HfApi", FakeApi)
    args = argparse.Namespace(run=str(run), out=tmp_path / "exp", push_to_hub="alice/sunfish-tiny", private=False,
                              json=True, eval_batches=0, license="other")
    assert export_cmd.run(args) == 0
    assert "README.md" in uploaded and "model_id = 'alice/sunfish-tiny'" in uploaded["README.md"]
    assert _front_matter(uploaded["README.md"])["library_name"] == "transformers"


def test_block_card_says_diffusion_generate_samples_block_by_block():
    card = model_card(small_config("block", block_size=4), {}, model_id="runs/x/export")
    assert "block by block (4 tokens each, attending to the prompt and the blocks before it" in card
    assert "bidirectional" not in card and "diffusion_generate" in read_card_snippet(card)
