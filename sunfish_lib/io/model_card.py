"""The model card (README.md) of an export: Hub YAML metadata, what the model is, its numbers, how to load it.

Every figure comes from `facts`, which the caller reads from the run (`commands.export.run_facts`): steps and
tokens trained, the held-out likelihood (`evaluate.LikelihoodResult.to_dict()`: kind, nats/token, SE,
bits/byte), sample quality (a `sunfish sample` record's `quality`). A figure that is absent is written as
"not measured" with the command that measures it; none is ever filled in.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from sunfish_lib.config import Config
from sunfish_lib.data.sources import HUB_ALIASES

CARD_FILE = "README.md"
OBJECTIVES = {
    "masked": "masked (absorbing-state) diffusion: MDLM (Sahoo et al. 2024) / LLaDA (Nie et al. 2025)",
    "continuous": "continuous diffusion in the embedding space: Diffusion-LM (Li et al. 2022)",
    "ar": "autoregressive (next-token) baseline",
    "block": "block diffusion: BD3-LM (Arriola et al. 2025), blocks left to right, masked diffusion inside each",
}
PIPELINE_TAG = {"ar": "text-generation", "masked": "fill-mask", "continuous": "text-generation",
                "block": "fill-mask"}
NOT_MEASURED = "not measured"


def hub_datasets(source: str) -> list[str]:
    """Hub dataset ids of a data source (fineweb[:CONFIG] -> HuggingFaceFW/fineweb); none for local text."""
    name = source.split(":")[0]
    return [HUB_ALIASES[name]] if name in HUB_ALIASES else []


def _yaml(cfg: Config, license: str) -> str:
    obj = cfg.diffusion.objective
    tags = ["sunfish", obj, "causal-lm" if obj == "ar" else "diffusion-language-model"]
    meta = {"library_name": "transformers", "license": license, "tags": tags, "pipeline_tag": PIPELINE_TAG[obj],
            "datasets": hub_datasets(cfg.data.source)}
    lines = ["---"]
    for k, v in meta.items():  # JSON scalars and flow lists are valid YAML
        lines.append(f"{k}: {json.dumps(v)}")
    return "\n".join(lines + ["---"])


def _likelihood(res: Mapping[str, Any] | None) -> str:
    if not res:
        return (f"{NOT_MEASURED} (export with `sunfish export RUN --eval-batches 8` to measure it on the run's "
                "held-out split)")
    bpb = f"{res['bits_per_byte']:.4f}" if res.get("bits_per_byte") is not None else NOT_MEASURED
    ppl = f"{res['perplexity']:.2f}" if res.get("perplexity") is not None else "-"
    return "\n".join([
        "| kind | nats/token | ± SE | perplexity | bits/byte | tokens scored |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| {res['kind']} | {res['nats_per_token']:.4f} | {res['stderr']:.4f} | {ppl} | {bpb} | "
        f"{res['tokens']} ({res['sequences']} held-out sequences) |",
        "", "Bits per byte count the UTF-8 bytes of exactly the scored tokens.",
    ])


def _quality(q: Mapping[str, Any] | None) -> str:
    if not q:
        return f"{NOT_MEASURED} (`sunfish sample RUN` records entropy and judge perplexity beside held-out text's)"

    def fmt(key):
        v = q.get(key)
        return NOT_MEASURED if v is None else f"{v:.3f}"
    return "\n".join([
        "| | samples | held-out text |", "| --- | --- | --- |",
        f"| entropy (nats/token) | {fmt('entropy')} | {fmt('reference_entropy')} |",
        f"| distinct-2 | {fmt('distinct_2')} | {fmt('reference_distinct_2')} |",
        f"| judge perplexity | {fmt('judge_ppl')} | {fmt('reference_judge_ppl')} |",
        "", f"Judge: {q.get('judge') or q.get('judge_note') or NOT_MEASURED}. From {q.get('file', 'the run')}, "
        f"settings {json.dumps(q.get('settings') or {})}.",
    ])


def snippet(cfg: Config, model_id: str) -> str:
    """Python that loads the export with plain transformers and generates (the tests run it)."""
    obj = cfg.diffusion.objective
    head = ["import torch", "from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer", "",
            f"model_id = {model_id!r}", "tok = AutoTokenizer.from_pretrained(model_id)"]
    if obj == "ar":
        body = ["model = AutoModelForCausalLM.from_pretrained(model_id, trust_remote_code=True)",
                'ids = tok("ROMEO:", return_tensors="pt").input_ids',
                "out = model.generate(ids, max_new_tokens=20, do_sample=True, top_p=0.9)",
                "print(tok.decode(out[0]))"]
    else:
        body = ["model = AutoModelForMaskedLM.from_pretrained(model_id, trust_remote_code=True)",
                'ids = tok("ROMEO:", return_tensors="pt").input_ids',
                f"out = model.diffusion_generate(ids, max_new_tokens=20, steps=20, seed=0)  # {cfg.sample.sampler} "
                "unless sampler= says otherwise",
                "print(tok.decode(out[0]))"]
    return "\n".join(head + body)


def model_card(cfg: Config, facts: Mapping[str, Any], *, model_id: str, license: str = "other") -> str:
    """README.md text of an export (see the module docstring for `facts`)."""
    m, d, obj = cfg.resolved_model, cfg.data, cfg.diffusion.objective
    steps, tokens = facts.get("steps"), facts.get("tokens")
    params = facts.get("params")
    shape = (f"{m.n_layers} layers, d_model {m.d_model}, {m.n_heads} heads ({m.n_kv_heads} key/value), d_ff {m.d_ff}, "
             f"{m.pos_encoding} positions, {m.norm}, {m.mlp} MLP, context {m.max_seq_len}"
             + (f", {params:,} parameters" if params else "")
             + (", timestep-conditioned (adaLN)" if m.time_conditioning else ""))
    tok = f"{d.tokenizer} ({facts.get('tokenizer_size') or m.vocab_size} tokens; model vocabulary {m.vocab_size})"
    trained = (f"{steps} steps" if steps is not None else f"steps {NOT_MEASURED}") + ", " + (
        f"{tokens:,} tokens" if tokens is not None else f"tokens {NOT_MEASURED}")
    rows = [("objective", OBJECTIVES[obj]), ("shape", shape), ("tokenizer", tok),
            ("training data", d.source), ("trained", trained), ("default sampler", cfg.sample.sampler)]
    how = "`generate()` and `pipeline(\"text-generation\")`" if obj == "ar" else (
        "`diffusion_generate(input_ids, max_new_tokens, steps, sampler, temperature, top_k, top_p, block_length, ...)`"
        " (Sunfish's sampling settings; put the tokenizer's mask token in the prompt to infill)") + (
        f", block by block ({cfg.diffusion.block_size} tokens each, attending to the prompt and the blocks before it; "
        "`block_length` and `cfg_scale` do not apply), as `sunfish sample` does" if obj == "block" else "")
    return "\n".join([
        _yaml(cfg, license), "", f"# {model_id.rstrip('/').split('/')[-1]}", "",
        f"A {obj} language model trained with Sunfish. It loads in plain `transformers` "
        f"(`trust_remote_code=True`; the code is in this folder) and samples with {how}.", "",
        "| | |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in rows), "",
        "## Held-out likelihood", "", _likelihood(facts.get("likelihood")), "",
        "## Sample quality", "", _quality(facts.get("quality")), "",
        "## How to load", "", "```python", snippet(cfg, model_id), "```", "",
        "With Sunfish installed: `sunfish sample FOLDER` (the same settings give the same tokens for the same seed) "
        "and `sunfish eval-harness FOLDER --tasks TASK` (lm-evaluation-harness; ar: exact log-likelihoods, "
        "masked: LLaDA's Monte-Carlo bound).", "",
    ])


def write_model_card(out_dir: Path, cfg: Config, facts: Mapping[str, Any] | None = None, *,
                     model_id: str | None = None, license: str = "other") -> Path:
    """README.md in out_dir; `model_id` (the Hub repo, or the folder) is what the snippet loads."""
    path = Path(out_dir) / CARD_FILE
    path.write_text(model_card(cfg, facts or {}, model_id=model_id or str(Path(out_dir).resolve()), license=license))
    return path


def read_card_snippet(text: str) -> str:
    """The python block of a card (what the tests execute)."""
    return text.split("```python\n", 1)[1].split("```", 1)[0]
