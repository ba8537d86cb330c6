"""One name per concept: `ModelConfig.resolve` fills every None, `Backbone` refuses one left, old names still load."""

from __future__ import annotations

import json
import re
from dataclasses import fields, replace

import pytest
import torch

from sunfish_lib.config import Config, ModelConfig, get_config
from sunfish_lib.errors import ConfigError
from sunfish_lib.hf.remote.configuration_sunfish import SunfishConfig
from sunfish_lib.hf.remote.modeling_sunfish import SunfishForMaskedLM
from sunfish_lib.io.export import export_model, load_for_inference
from sunfish_lib.model import Backbone
from tests.helpers import ROOT

BARE = ModelConfig(vocab_size=64, n_layers=1, n_heads=4, d_model=32, max_seq_len=16)
OPTIONAL = [f.name for f in fields(ModelConfig) if getattr(BARE, f.name) is None]
OLD_NAMES = re.compile(r"\.(ff_dim|emb_dim|kv_heads|has_qkv_bias|attn_head_dim)\b")


def test_the_optional_fields_are_the_widths_and_the_objective_switches():
    assert sorted(OPTIONAL) == sorted(["d_ff", "embed_dim", "head_dim", "n_kv_heads", "qkv_bias",
                                       "time_conditioning", "causal", "self_cond_input"])


@pytest.mark.parametrize("objective,self_cond,switches", [
    ("masked", False, (False, False, False)), ("ar", False, (False, True, False)),
    ("continuous", False, (True, False, False)), ("continuous", True, (True, False, True))])
def test_resolve_fills_every_none_field(objective, self_cond, switches):
    m = replace(BARE, bias=True).resolve(objective, self_cond)
    assert [f.name for f in fields(m) if getattr(m, f.name) is None] == []
    assert (m.d_ff, m.embed_dim, m.head_dim, m.n_kv_heads, m.qkv_bias) == (128, 32, 8, 4, True)
    assert (m.time_conditioning, m.causal, m.self_cond_input) == switches
    given = replace(BARE, d_ff=40, embed_dim=16, head_dim=12, n_kv_heads=2, qkv_bias=False, causal=False)
    r = given.resolve("ar")
    assert (r.d_ff, r.embed_dim, r.head_dim, r.n_kv_heads, r.qkv_bias, r.causal) == (40, 16, 12, 2, False, False)
    assert r.resolve("masked") == r  # resolving twice changes nothing


@pytest.mark.parametrize("name", OPTIONAL)
def test_backbone_refuses_an_unresolved_config_naming_the_field(name):
    with pytest.raises(ValueError) as e:
        Backbone(replace(BARE.resolve("masked"), **{name: None}))
    msg = str(e.value)
    assert msg.startswith(f"model.{name} is None (an unresolved ModelConfig)") and "\n" not in msg
    assert "Backbone.from_config(cfg)" in msg and "ModelConfig.resolve(objective)" in msg


def test_counts_read_the_resolved_widths_as_the_backbone_builds_them():
    from sunfish_lib.sizing.counts import built_params, num_params

    for m in (BARE, replace(BARE, d_ff=24, embed_dim=16, head_dim=6, n_kv_heads=2, qkv_bias=True, mlp="swiglu")):
        built = sum(p.numel() for p in Backbone(m.resolve("masked")).parameters())
        assert num_params(m) == built_params(m) == built
    assert num_params(BARE) != num_params(replace(BARE, d_ff=24))


def test_no_module_uses_the_old_names():
    """ff_dim / emb_dim / kv_heads / has_qkv_bias / attn_head_dim were second names of the fields."""
    this = ROOT / "tests" / "test_config_names.py"
    paths = [p for d in ("sunfish_lib", "bench", "tests", "scripts") for p in (ROOT / d).rglob("*.py") if p != this]
    paths += sorted((ROOT / "notebooks").glob("*.ipynb"))
    hits = [f"{p.relative_to(ROOT)}:{i}" for p in paths
            for i, line in enumerate(p.read_text().splitlines(), 1) if OLD_NAMES.search(line)]
    assert len(paths) > 50 and hits == []


def test_a_config_with_the_old_head_width_key_loads():
    """Run folders, checkpoints and exports written before the rename say model.attn_head_dim."""
    cfg = get_config("tiny", {"objective": "masked", "n_heads": 4, "head_dim": 48})
    d = cfg.to_dict()
    d["model"]["attn_head_dim"] = d["model"].pop("head_dim")
    assert Config.from_dict(d) == cfg and Config.from_dict(d).model.head_dim == 48
    d["model"]["head_dim"] = 48
    with pytest.raises(ConfigError, match=r"both 'model.attn_head_dim' \(its old name\) and 'model.head_dim'"):
        Config.from_dict(d)


def _old_style(hf: dict) -> dict:
    """config.json as exports wrote it before: raw None widths and attn_head_dim in both model sections,
    the resolved widths under their second names in resolved_model."""
    old, m = json.loads(json.dumps(hf)), hf["resolved_model"]
    old["model"]["attn_head_dim"] = old["model"].pop("head_dim")
    r = old["resolved_model"]
    r.update(ff_dim=m["d_ff"], emb_dim=m["embed_dim"], kv_heads=m["n_kv_heads"], has_qkv_bias=m["qkv_bias"],
             head_dim=m["head_dim"], gated_mlp=m["mlp"] != "gelu", attn_head_dim=None)
    r.update(d_ff=None, embed_dim=None, n_kv_heads=None, qkv_bias=None)
    return old


def test_an_old_export_loads_in_sunfish_and_in_the_remote_code(tmp_path):
    cfg = get_config("tiny", {"objective": "masked", "n_layers": 1, "d_model": 32, "n_heads": 4, "max_seq_len": 32,
                              "seq_len": 16, "length": 16, "mlp": "swiglu", "norm": "rmsnorm", "qk_norm": True})
    torch.manual_seed(0)
    model = Backbone.from_config(cfg).eval()
    export_model(model, cfg, tmp_path / "e")
    hf = json.loads((tmp_path / "e" / "config.json").read_text())
    m = hf["resolved_model"]
    assert {f.name for f in fields(ModelConfig)} == set(m) and None not in m.values()  # written resolved
    (tmp_path / "e" / "config.json").write_text(json.dumps(_old_style(hf)))
    ids = torch.randint(0, 300, (2, 12), generator=torch.Generator().manual_seed(1))
    loaded, cfg2, _ = load_for_inference(tmp_path / "e")
    assert cfg2 == cfg and torch.equal(loaded(ids), model(ids))
    for written in (hf, _old_style(hf)):  # today's remote code reads the new keys and the old ones alike
        remote = SunfishForMaskedLM(SunfishConfig(**written)).eval()
        remote.load_state_dict(model.state_dict())
        assert vars(remote.fields) == m
        with torch.no_grad():
            assert torch.allclose(remote(input_ids=ids).logits, model(ids), atol=1e-6)
