"""Exports load in `transformers` (trust_remote_code) with Sunfish's logits; old exports still load in Sunfish."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

from sunfish_lib.config import Config, ModelConfig
from sunfish_lib.data import get_tokenizer
from sunfish_lib.hf.folder import REMOTE_CODE, resolved_fields
from sunfish_lib.hf.remote import modeling_sunfish
from sunfish_lib.model import Backbone
from sunfish_lib.io.export import export_model, load_for_inference
from tests.helpers import run_cli
from tests.train_helpers import small_config

# (name, objective, overrides): every objective, both position encodings, and each architecture option.
CASES = [
    ("masked-learned", "masked", {}),
    ("masked-rope-gqa-qknorm", "masked", {"pos_encoding": "rope", "norm": "rmsnorm", "mlp": "swiglu", "n_heads": 4,
                                          "n_kv_heads": 2, "qk_norm": True, "head_dim": 8,
                                          "tie_embeddings": False}),
    ("masked-gemma-style", "masked", {"pos_encoding": "rope", "norm": "rmsnorm", "mlp": "geglu", "embed_scale": 8.0}),
    ("masked-time", "masked", {"time_conditioning": True, "pos_encoding": "rope", "rope_type": "llama3",
                               "rope_original_max_len": 16, "rope_factor": 4.0}),
    ("ar-learned", "ar", {}),
    ("ar-rope-llama3", "ar", {"pos_encoding": "rope", "rope_type": "llama3", "rope_original_max_len": 16,
                              "rope_factor": 4.0, "norm": "rmsnorm", "mlp": "swiglu", "qkv_bias": True}),
    ("continuous-learned", "continuous", {"embed_dim": 16, "self_conditioning": True}),
    ("continuous-rope", "continuous", {"pos_encoding": "rope"}),
]

CHILD = textwrap.dedent('''
    import json, sys
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer
    out = {}
    for name, folder in json.loads(sys.argv[1]).items():
        ref = torch.load(folder + "/ref.pt")
        cls = AutoModelForCausalLM if ref["objective"] == "ar" else AutoModelForMaskedLM
        model = cls.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32).eval()
        kw = {"timesteps": ref["t"]} if ref["t"] is not None else {}
        with torch.no_grad():
            if ref["objective"] == "continuous":
                o = model(inputs_embeds=ref["vectors"], **kw)
            else:
                o = model(input_ids=ref["ids"], **kw)
        tok = AutoTokenizer.from_pretrained(folder)  # no trust_remote_code: the tokenizer is a plain fast one
        text = "To be, or not to be: that is the question."
        out[name] = {"diff": (o.logits - ref["logits"]).abs().max().item(), "class": type(model).__name__,
                     "roundtrip": tok.decode(tok(text)["input_ids"]) == text,
                     "ids_match": tok(text)["input_ids"] == ref["text_ids"]}
    out["sunfish_imported"] = sorted(m for m in sys.modules if m.startswith("sunfish_lib"))
    open(sys.argv[2], "w").write(json.dumps(out))
''')


def _random_model(cfg: Config, seed: int) -> Backbone:
    """Every parameter random (adaLN tables and time projection too), so no pathway hides behind a zero init."""
    torch.manual_seed(seed)
    model = Backbone.from_config(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            gain = p.dim() == 1 and ("ln" in name or "norm" in name) and not name.endswith("bias")
            p.copy_(0.2 * torch.randn_like(p) + (1.0 if gain else 0.0))
    return model.eval()


def _export_case(tmp_path, tok, name: str, objective: str, overrides: dict, seed: int):
    cfg = small_config(objective, **overrides, vocab_size=len(tok) + 3)
    model = _random_model(cfg, seed)
    folder = tmp_path / name
    export_model(model, cfg, folder, tok)
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, cfg.model.vocab_size, (2, 24), generator=g)
    m = cfg.resolved_model
    t = torch.rand(2, generator=g) if m.time_conditioning else None
    vectors = torch.randn(2, 24, m.embed_dim, generator=g)
    with torch.no_grad():
        logits = model(vectors=vectors, t=t) if objective == "continuous" else model(ids, t=t)
    text_ids = tok.encode("To be, or not to be: that is the question.")
    torch.save({"objective": objective, "ids": ids, "t": t, "vectors": vectors, "logits": logits,
                "text_ids": list(text_ids)}, folder / "ref.pt")
    return folder


@pytest.mark.slow
def test_transformers_loads_exports_with_sunfish_logits(tmp_path):
    """A fresh process that imports nothing from sunfish_lib: AutoModel* + AutoTokenizer on each export."""
    tok = get_tokenizer("bpe", 4096)
    folders = {name: str(_export_case(tmp_path, tok, name, obj, ov, i)) for i, (name, obj, ov) in enumerate(CASES)}
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(tmp_path / "hf_modules")}
    r = subprocess.run([sys.executable, "-c", CHILD, json.dumps(folders), str(tmp_path / "out.json")], cwd=tmp_path,
                       env=env, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads((tmp_path / "out.json").read_text())
    assert out.pop("sunfish_imported") == []
    for name, obj, _ in CASES:
        res = out[name]
        assert res["diff"] < 1e-5, (name, res)
        assert res["class"] == ("SunfishForCausalLM" if obj == "ar" else "SunfishForMaskedLM"), (name, res)
        assert res["roundtrip"] and res["ids_match"], (name, res)


def test_export_folder_layout(tmp_path):
    cfg = small_config("ar")
    export_model(Backbone.from_config(cfg), cfg, tmp_path / "e", get_tokenizer("bpe", 4096))
    hf = json.loads((tmp_path / "e" / "config.json").read_text())
    assert hf["model_type"] == "sunfish" and hf["architectures"] == ["SunfishForCausalLM"]
    assert hf["auto_map"] == {"AutoConfig": "configuration_sunfish.SunfishConfig",
                              "AutoModelForCausalLM": "modeling_sunfish.SunfishForCausalLM"}
    for f in ("model.safetensors", "configuration_sunfish.py", "modeling_sunfish.py", "tokenizer.json",
              "tokenizer_config.json"):
        assert (tmp_path / "e" / f).is_file(), f
    assert not (tmp_path / "e" / "tokenizer").exists()
    assert Config.load(tmp_path / "e" / "config.json") == cfg  # `sunfish train --config` reads it too
    resolved = hf["resolved_model"]
    assert resolved["causal"] is True and resolved["head_dim"] == cfg.model.d_model // cfg.model.n_heads


def test_remote_code_knows_every_backbone_field():
    """modeling_sunfish.py mirrors the backbone: a new ModelConfig field must be taught to it (and to this list)."""
    fields = set(resolved_fields(small_config("masked")))
    assert modeling_sunfish.KNOWN_FIELDS == fields
    assert {f.name for f in dataclasses.fields(ModelConfig)} <= fields
    for path in REMOTE_CODE.glob("*_sunfish.py"):
        assert not re.search(r"^\s*(from|import)\s+sunfish_lib", path.read_text(), re.M), path.name


@pytest.mark.slow
def test_sunfish_still_loads_old_layout_exports(tmp_path):
    """Format 1: Sunfish's config.json only, the tokenizer in tokenizer/ (exports written before the HF layout)."""
    from safetensors.torch import save_file

    cfg = small_config("masked")
    model = _random_model(cfg, 3)
    tok = get_tokenizer("bpe", 4096)
    old = tmp_path / "old"
    old.mkdir()
    save_file({k: v.clone() for k, v in model.state_dict().items()}, str(old / "model.safetensors"))
    cfg.save(old / "config.json")
    tok.save(old / "tokenizer")
    loaded, cfg2, tok2 = load_for_inference(old)
    ids = torch.randint(0, 100, (1, 12))
    assert cfg2 == cfg and tok2 is not None and tok2.encode("hello world") == tok.encode("hello world")
    assert torch.equal(loaded(ids), model(ids))
    # `sunfish export` rewrites it in the current layout.
    r = run_cli("export", str(old), "--out", str(tmp_path / "new"), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["objective"] == "masked"
    assert (tmp_path / "new" / "modeling_sunfish.py").is_file() and (tmp_path / "new" / "tokenizer.json").is_file()
    assert torch.equal(load_for_inference(tmp_path / "new")[0](ids), model(ids))


@pytest.mark.slow
def test_push_to_hub_offline_is_one_line(tmp_path):
    from tests.sampling_helpers import make_run

    run = make_run(tmp_path / "run", "masked")
    r = run_cli("export", str(run), "--push-to-hub", "alice/sunfish-tiny")
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "HF_HUB_OFFLINE=1" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("export", str(run), "--push-to-hub", "no-org")
    assert r.returncode == 2 and "ORG/NAME" in r.stderr


def test_version_flag():
    from importlib.metadata import version

    r = run_cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"sunfish {version('sunfish')}"


@pytest.fixture(autouse=True)
def _no_leftover_modules(tmp_path):
    yield
    shutil.rmtree(tmp_path / "hf_modules", ignore_errors=True)
