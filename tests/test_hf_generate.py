"""Exports generate from plain `transformers` (sunfish_lib unimportable) with Sunfish's tokens.

AR: `generate()` (greedy, sampling, top-k/top-p, the KV cache) and `pipeline("text-generation")`; greedy equals
`sunfish sample --sampler ar --temperature 0`. Masked: `diffusion_generate` gives Sunfish's tokens at temperature 0
(low_confidence, semi-AR blocks), the same tokens for the same seed at temperature > 0, and infills [MASK] spans.
Block (BD3-LM): the same, block by block under the block-causal mask, with the EOS stop rule.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import AutoModelForMaskedLM

from sunfish_lib.diffusion.continuous import CDCD_RECIPE, PLAIN_RECIPE
from sunfish_lib.data import get_tokenizer
from sunfish_lib.io.export import export_model
from sunfish_lib.sampling.session import load_checkpoint, sample
from tests.helpers import run_cli
from tests.test_hf_export import _random_model
from tests.train_helpers import small_config

PROMPT = "ROMEO:"
NEW = 12

BLOCKER = textwrap.dedent('''
    import sys
    class _NoSunfish:
        """Any import of sunfish_lib fails: the export must stand on torch + transformers alone."""
        def find_spec(self, name, path=None, target=None):
            if name == "sunfish_lib" or name.startswith("sunfish_lib."):
                raise ImportError(f"{name} is blocked in this test")
            return None
    sys.meta_path.insert(0, _NoSunfish())
''')

AR_CHILD = BLOCKER + textwrap.dedent('''
    import json, torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, pipeline
    folder, out_path, new = sys.argv[1], sys.argv[2], int(sys.argv[3])
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32).eval()
    ids = tok("ROMEO:", return_tensors="pt").input_ids
    out = {"can_generate": type(model).can_generate(), "prompt": ids[0].tolist()}
    greedy = model.generate(ids, max_new_tokens=new, do_sample=False)
    no_cache = model.generate(ids, max_new_tokens=new, do_sample=False, use_cache=False)
    out["greedy"], out["greedy_no_cache"] = greedy[0].tolist(), no_cache[0].tolist()
    draws = {}
    for name, kw in {"sample": {}, "top_k": {"top_k": 5}, "top_p": {"top_p": 0.5, "top_k": 0}}.items():
        rows = []
        for seed in (0, 0, 1):
            torch.manual_seed(seed)
            rows.append(model.generate(ids, max_new_tokens=new, do_sample=True, temperature=1.0, **kw)[0].tolist())
        draws[name] = rows
    out["draws"] = draws
    # top-k = 1 is greedy whatever the temperature: the filter reached the draw
    out["top_k1"] = model.generate(ids, max_new_tokens=new, do_sample=True, top_k=1, temperature=2.0)[0].tolist()
    with torch.no_grad():  # the cached step's logits equal the full forward's at the last position
        full = model(greedy).logits[0, -1]
        from transformers import DynamicCache
        cache = DynamicCache()
        model(greedy[:, :-1], cache=cache, use_cache=True)
        step = model(greedy[:, -1:], cache=cache, use_cache=True).logits[0, -1]
    out["cache_diff"] = (full - step).abs().max().item()
    # left padding in a batch: each row as it would be alone
    tok.padding_side = "left"
    batch = tok(["ROMEO:", "To be, or not to be"], return_tensors="pt", padding=True)
    padded = model.generate(**batch, max_new_tokens=new, do_sample=False)
    alone = model.generate(tok("To be, or not to be", return_tensors="pt").input_ids, max_new_tokens=new, do_sample=False)
    out["padded_row0"], out["padded_row1"], out["alone1"] = padded[0].tolist(), padded[1].tolist(), alone[0].tolist()
    pipe = pipeline("text-generation", model=model, tokenizer=tok)
    res = pipe("ROMEO:", max_new_tokens=new, do_sample=False)
    out["pipeline_text"] = res[0]["generated_text"]
    out["greedy_text"] = tok.decode(greedy[0])
    out["sunfish_imported"] = sorted(m for m in sys.modules if m.startswith("sunfish_lib"))
    open(out_path, "w").write(json.dumps(out))
''')

MASKED_CHILD = BLOCKER + textwrap.dedent('''
    import json, torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer
    folder, out_path, new, cases = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForMaskedLM.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32).eval()
    ids = tok("ROMEO:", return_tensors="pt").input_ids
    out = {}
    for name, kw in cases.items():
        seed = kw.pop("seed", 0)
        out[name] = model.diffusion_generate(ids, max_new_tokens=new, seed=seed, **kw).tolist()
    # infill through the same method: the [MASK] ids of Sunfish's infill template, filled in place
    x = torch.tensor(json.loads(sys.argv[5]))
    out["infill"] = model.diffusion_generate(x, steps=7, sampler="low_confidence", temperature=0.0).tolist()
    out["sunfish_imported"] = sorted(m for m in sys.modules if m.startswith("sunfish_lib"))
    open(out_path, "w").write(json.dumps(out))
''')


def _child(script: str, tmp_path, *args: str) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "hf_modules"),
           "TOKENIZERS_PARALLELISM": "false"}
    out = tmp_path / "child.json"
    r = subprocess.run([sys.executable, "-c", script, *args[:1], str(out), *args[1:]], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res.pop("sunfish_imported") == []
    return res


def _export(tmp_path, objective: str, seed: int, **overrides):
    tok = get_tokenizer("bpe", 4096)
    cfg = small_config(objective, **overrides, vocab_size=len(tok) + 3)
    folder = tmp_path / objective
    export_model(_random_model(cfg, seed), cfg, folder, tok)
    return folder


@pytest.mark.slow
def test_ar_export_generates_like_sunfish(tmp_path):
    folder = _export(tmp_path, "ar", 5, pos_encoding="rope", norm="rmsnorm", mlp="swiglu", n_heads=4, n_kv_heads=2)
    res = _child(AR_CHILD, tmp_path, str(folder), str(NEW))
    assert res["can_generate"] is True
    loaded = load_checkpoint(folder)
    ref = sample(loaded, mode="uncond", prompt=PROMPT, seed=0, sampler="ar", temperature=0.0, length=NEW)
    assert res["prompt"] == loaded.tokenizer.encode(PROMPT)
    assert res["greedy"] == ref.ids[0].tolist()  # Sunfish's own greedy tokens, through GenerationMixin
    assert len(res["greedy"]) == len(res["prompt"]) + NEW and res["greedy_no_cache"] == res["greedy"]
    assert res["cache_diff"] < 1e-4
    never = {loaded.tokenizer.mask_token_id, loaded.tokenizer.pad_token_id, loaded.tokenizer.eos_token_id}
    never |= set(range(len(loaded.tokenizer), loaded.cfg.model.vocab_size))
    for name, (a, b, c) in res["draws"].items():
        assert a == b, name  # same torch seed, same tokens
        assert a != c, name  # another seed, other tokens (12 draws from a random model's spread-out logits)
        assert not never & set(a[len(res["prompt"]):]), name
    assert res["top_k1"] == res["greedy"]
    assert res["padded_row1"][-len(res["alone1"]):] == res["alone1"]
    assert res["padded_row0"][-NEW:] == res["greedy"][-NEW:]
    assert res["pipeline_text"] == res["greedy_text"]
    # `sunfish sample` itself on the same export
    r = run_cli("sample", str(folder), "--sampler", "ar", "--temperature", "0", "--length", str(NEW), "--prompt",
                PROMPT, "--json", "--no-save", "--no-quality")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["ids"][0] == res["greedy"]


MASKED_CASES = {
    "low_confidence": dict(sampler="low_confidence", steps=NEW, temperature=0.0),
    "semi_ar": dict(sampler="low_confidence", steps=6, block_length=4, temperature=0.0),
    "hot": dict(sampler="low_confidence", steps=6, block_length=4, temperature=1.0, top_k=20, top_p=0.9, seed=3),
    "random": dict(sampler="random", steps=5, temperature=0.8, seed=1),
    "threshold": dict(sampler="threshold", steps=NEW, threshold=0.05, temperature=0.0),
    "ancestral": dict(sampler="ancestral", steps=8, temperature=1.0, seed=2),
    "cfg": dict(sampler="low_confidence", steps=NEW, cfg_scale=1.5, temperature=0.0),
    "two_rows": dict(sampler="low_confidence", steps=6, temperature=0.7, num_samples=2, seed=4),
}


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [{}, {"time_conditioning": True, "pos_encoding": "rope"}],
                         ids=["plain", "time-conditioned"])
def test_masked_export_diffusion_generate_like_sunfish(tmp_path, overrides):
    folder = _export(tmp_path, "masked", 7, **overrides)
    loaded = load_checkpoint(folder)
    infill = sample(loaded, mode="infill", prompt=PROMPT + "[MASK] the[MASK].", seed=0, mask_length=4, num_samples=1,
                    sampler="low_confidence", steps=7, temperature=0.0)
    res = _child(MASKED_CHILD, tmp_path, str(folder), str(NEW), json.dumps(MASKED_CASES),
                 json.dumps(infill.start.tolist()))
    prompt_ids = loaded.tokenizer.encode(PROMPT)
    for name, kw in MASKED_CASES.items():
        kw = dict(kw)
        seed, rows = kw.pop("seed", 0), kw.pop("num_samples", 1)
        ref = sample(loaded, mode="uncond", prompt=PROMPT, seed=seed, length=NEW, num_samples=rows, **kw)
        assert res[name] == ref.ids.tolist(), name  # the same tokens, every row
        for row in res[name]:
            assert row[:len(prompt_ids)] == prompt_ids and loaded.tokenizer.mask_token_id not in row
    assert res["hot"] != res["semi_ar"] and res["two_rows"][0] != res["two_rows"][1]
    # infill: 8 [MASK] inside the text filled with Sunfish's tokens, every other token kept
    mask_id = loaded.tokenizer.mask_token_id
    assert int((infill.start == mask_id).sum()) == 8 and res["infill"] == infill.ids.tolist()
    keep = infill.start != mask_id
    assert torch.equal(torch.tensor(res["infill"])[keep], infill.start[keep])


CONTINUOUS_CHILD = BLOCKER + textwrap.dedent('''
    import json, torch
    from transformers import AutoModelForMaskedLM, AutoTokenizer
    folder, out_path, new, cases = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForMaskedLM.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32).eval()
    ids = tok("ROMEO:", return_tensors="pt").input_ids
    out = {name: model.diffusion_generate(ids, max_new_tokens=new, **kw).tolist() for name, kw in cases.items()}
    out["sunfish_imported"] = sorted(m for m in sys.modules if m.startswith("sunfish_lib"))
    open(out_path, "w").write(json.dumps(out))
''')

CONTINUOUS_CASES = {
    "ddim": dict(sampler="ddim", steps=10, eta=0.0, seed=0),
    "eta1": dict(sampler="ddim", steps=10, eta=1.0, seed=3),
    "clamp": dict(sampler="ddim", steps=6, eta=0.0, clamp=True, seed=1),
}
TEMPERED_CASES = {  # a CDCD model's p(w | x_t) tempered (score_interpolation's temperature)
    "cold": dict(sampler="ddim", steps=10, eta=0.0, temperature=0.5, seed=2),
    "argmax": dict(sampler="ddim", steps=6, eta=1.0, temperature=0.0, seed=4),
}


PLAIN = PLAIN_RECIPE


@pytest.mark.slow
@pytest.mark.parametrize("overrides, spread", [({**PLAIN, "embed_dim": 16, "self_conditioning": True}, 1),
                                               ({**PLAIN, "pos_encoding": "rope", "prediction": "eps",
                                                 "schedule": "cosine"}, 4),
                                               ({**CDCD_RECIPE, "embed_dim": 16}, 2),
                                               ({**CDCD_RECIPE, "embed_dim": 16, "tie_embeddings": False, "own_evidence": False}, 2)],
                         ids=["self-cond", "eps-cosine", "cdcd", "cdcd-untied-no-evidence"])
def test_continuous_export_ddim_like_sunfish(tmp_path, overrides, spread):
    """DDIM from the model's x0 estimate: Sunfish's tokens at eta 0 (deterministic after x_T) and, for the same seed,
    at eta 1; the prompt (known positions, held at q(x_s | x_0)) is returned exactly. The x0 estimate is the model's
    x0 output (Diffusion-LM) or CDCD's score interpolation over the normalised table, with own evidence and
    self-conditioning (the tied table after out_proj, or lm_head). `spread`: distinct tokens the random model's
    samples reach at least (an untrained x0-predicting model rounds every position to one token, so that case
    checks the code path, self-conditioning included; the others check varied tokens)."""
    folder = _export(tmp_path, "continuous", 9, **overrides)
    cases = {**CONTINUOUS_CASES, **(TEMPERED_CASES if overrides["continuous_loss"] == "ce" else {})}
    res = _child(CONTINUOUS_CHILD, tmp_path, str(folder), str(NEW), json.dumps(cases))
    loaded = load_checkpoint(folder)
    prompt_ids = loaded.tokenizer.encode(PROMPT)
    for name, kw in cases.items():
        kw = dict(kw)
        ref = sample(loaded, mode="uncond", prompt=PROMPT, seed=kw.pop("seed"), length=NEW, num_samples=1, **kw)
        assert res[name] == ref.ids.tolist(), name
        assert res[name][0][:len(prompt_ids)] == prompt_ids and loaded.tokenizer.mask_token_id not in res[name][0]
        assert len(set(res[name][0][len(prompt_ids):])) >= spread, name


BLOCK_CASES = {
    "low_confidence": dict(sampler="low_confidence", steps=NEW, temperature=0.0),
    "few_steps": dict(sampler="low_confidence", steps=5, temperature=0.0),
    "hot": dict(sampler="low_confidence", steps=8, temperature=1.0, top_k=20, top_p=0.9, seed=3),
    "random": dict(sampler="random", steps=6, temperature=0.8, seed=1),
    "threshold": dict(sampler="threshold", steps=NEW, threshold=0.05, temperature=0.0),
    "ancestral": dict(sampler="ancestral", steps=8, temperature=1.0, seed=2),
    "two_rows": dict(sampler="low_confidence", steps=6, temperature=0.7, num_samples=2, seed=4),
    "eos_allowed": dict(sampler="low_confidence", steps=NEW, temperature=1.0, allow_eos=True, seed=5),
}


@pytest.mark.slow
@pytest.mark.parametrize("overrides", [{}, {"shift_logits": True, "pos_encoding": "rope"}], ids=["plain", "shift"])
def test_block_export_diffusion_generate_like_sunfish(tmp_path, overrides):
    """A block export (BD3-LM, block_size 4) samples block by block under the block-causal mask: the tokens of
    `sunfish sample` (its exact-cache block sampler) at temperature 0 and, for the same seed, above it, every sampler;
    infill fills only the [MASK] blocks."""
    folder = _export(tmp_path, "block", 11, block_size=4, **overrides)
    loaded = load_checkpoint(folder)
    assert loaded.cfg.diffusion.objective == "block" and loaded.cfg.diffusion.block_size == 4
    infill = sample(loaded, mode="infill", prompt=PROMPT + "[MASK] the[MASK].", seed=0, mask_length=4, num_samples=1,
                    sampler="low_confidence", steps=7, temperature=0.0)
    res = _child(MASKED_CHILD, tmp_path, str(folder), str(NEW), json.dumps(BLOCK_CASES),
                 json.dumps(infill.start.tolist()))
    prompt_ids = loaded.tokenizer.encode(PROMPT)
    for name, kw in BLOCK_CASES.items():
        kw = dict(kw)
        seed, rows = kw.pop("seed", 0), kw.pop("num_samples", 1)
        ref = sample(loaded, mode="uncond", prompt=PROMPT, seed=seed, length=NEW, num_samples=rows, **kw)
        assert res[name] == ref.ids.tolist(), name
        for row in res[name]:
            assert row[:len(prompt_ids)] == prompt_ids and loaded.tokenizer.mask_token_id not in row
    assert res["hot"] != res["low_confidence"] and res["two_rows"][0] != res["two_rows"][1]
    mask_id = loaded.tokenizer.mask_token_id
    assert int((infill.start == mask_id).sum()) == 8 and res["infill"] == infill.ids.tolist()
    if overrides:
        return
    model = AutoModelForMaskedLM.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32).eval()
    ids = torch.tensor([prompt_ids])
    with pytest.raises(ValueError, match="leave block_length and cfg_scale unset"):
        model.diffusion_generate(ids, max_new_tokens=4, steps=4, block_length=4)
    with pytest.raises(ValueError, match="one prompt length per batch"):
        model.diffusion_generate(ids, max_new_tokens=4, steps=4,
                                 attention_mask=torch.tensor([[0] + [1] * (ids.shape[1] - 1)]))


@pytest.mark.slow
def test_block_export_ends_rows_at_eos_like_sunfish(tmp_path):
    """With EOS allowed, a row that emits EOS gets EOS in every later position after its block, and sampling stops
    once every row has: the same rows as `sunfish sample`. The random model's EOS embedding (tied head) is scaled
    3x so p(EOS) is about 0.2 per position and rows end at different blocks."""
    tok = get_tokenizer("bpe", 4096)
    cfg = small_config("block", block_size=4, vocab_size=len(tok) + 3)
    model = _random_model(cfg, 11)
    with torch.no_grad():
        model.tok_emb.weight[tok.eos_token_id] *= 3.0
    export_model(model, cfg, tmp_path / "block", tok)
    cases = {"eos": dict(sampler="low_confidence", steps=NEW, temperature=1.0, allow_eos=True, num_samples=6, seed=0),
             "eos_ancestral": dict(sampler="ancestral", steps=NEW, temperature=1.0, allow_eos=True, num_samples=6,
                                   seed=1)}
    res = _child(MASKED_CHILD, tmp_path, str(tmp_path / "block"), str(NEW), json.dumps(cases),
                 json.dumps([[0, tok.mask_token_id]]))  # the child infills one [MASK] too
    loaded = load_checkpoint(tmp_path / "block")
    P, eos = len(tok.encode(PROMPT)), tok.eos_token_id
    for name, kw in cases.items():
        kw = dict(kw)
        ref = sample(loaded, mode="uncond", prompt=PROMPT, seed=kw.pop("seed"), length=NEW,
                     num_samples=kw.pop("num_samples"), **kw)
        assert res[name] == ref.ids.tolist(), name
        ends = []
        for row in res[name]:
            new = row[P:]
            first = new.index(eos) if eos in new else None
            if first is not None:  # every position after the EOS's block is EOS
                stop = ((P + first) // 4 + 1) * 4 - P
                assert all(t == eos for t in new[stop:]), (name, row)
            ends.append(first)
        assert any(e is not None and e < NEW - 4 for e in ends), (name, ends)  # some row ended before the last block
