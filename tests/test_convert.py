"""HF causal LM -> Sunfish backbone: exact logits with the causal mask kept, then masked training from there."""

import json
from dataclasses import replace

import pytest
import torch

from sunfish_lib.convert import HF_FAMILIES, Conversion, convert
from sunfish_lib.diffusion.masked import MaskedDiffusion
from sunfish_lib.errors import SunfishError
from sunfish_lib.sizing.counts import num_params
from sunfish_lib.model import Backbone
from sunfish_lib.io.export import load_for_inference
from sunfish_lib.train.optim import param_groups
from tests.convert_helpers import save_hf_model, save_tokenizer_without_mask, text_sample
from tests.helpers import run_cli

# family, HF shape arguments, extra embedding rows beyond the tokenizer (Qwen-style padding)
PARENTS = {
    "gpt2": ("gpt2", {}, 0),
    "gpt2_untied": ("gpt2", {"tied": False}, 0),
    "llama_gqa_untied": ("llama", {"n_kv_heads": 2, "tied": False}, 0),
    "llama_mha_tied": ("llama", {"tied": True}, 0),
    "llama_mqa_tied": ("llama", {"n_kv_heads": 1, "tied": True}, 0),
    "qwen2_gqa_padded_vocab": ("qwen2", {"n_kv_heads": 2, "tied": True}, 20),
    "mistral_gqa": ("mistral", {"n_kv_heads": 2, "tied": False}, 0),
    "qwen3_qknorm_headdim": ("qwen3", {"n_kv_heads": 2, "tied": True, "head_dim": 24}, 0),
    "llama3_rope_scaling": ("llama", {"n_kv_heads": 2, "tied": False, "rope_type": "llama3"}, 0),
    "gemma_mqa_tied": ("gemma", {"n_kv_heads": 1, "tied": True}, 0),
}


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tok")
    save_tokenizer_without_mask(folder)
    return folder


@pytest.fixture(scope="module")
def parents(tok_dir, tmp_path_factory):
    """name -> (HF folder, HF model in fp32)."""
    out = {}
    for i, (name, (family, kw, extra)) in enumerate(PARENTS.items()):
        folder = tmp_path_factory.mktemp(name)
        out[name] = (folder, save_hf_model(folder, family, tok_dir, extra_rows=extra, seed=i, **kw))
    return out


def _causal_copy(folder):
    """The exported model rebuilt with causal attention (what the AR parent computes)."""
    model, cfg, tok = load_for_inference(folder)
    causal = Backbone(replace(cfg.resolved_model, causal=True)).eval()
    causal.load_state_dict(model.state_dict())
    return model, causal, cfg, tok


@pytest.mark.parametrize("name", list(PARENTS))
def test_causal_logits_equal_the_hf_parent(name, parents, tmp_path):
    folder, hf = parents[name]
    conv = convert(folder, tmp_path / "out", check=True)
    assert isinstance(conv, Conversion) and conv.parent == HF_FAMILIES[PARENTS[name][0]]
    assert conv.check["max_abs_diff"] < 1e-5 and conv.check["max_abs_logit"] > 1.0  # logits of real size
    assert conv.check["argmax_agreement"] == 1.0
    # independently of check_logits: the exported folder, loaded for inference, run causally
    model, causal, cfg, tok = _causal_copy(tmp_path / "out")
    assert not cfg.resolved_model.causal and cfg.diffusion.objective == "masked"
    n = 300  # the parent tokenizer's size (save_tokenizer_without_mask)
    ids = torch.randint(0, n, (3, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(input_ids=ids).logits[..., :n]
        ours = causal(ids)[..., :n]
    assert (ours - ref).abs().max().item() < 1e-5
    assert cfg.model.vocab_size % 64 == 0 and cfg.model.vocab_size >= len(tok) == 302
    assert conv.added_tokens == {"[MASK]": 300, "[PAD]": 301} and tok.mask_token_id == 300
    # the new rows start at the mean of the parent's rows (Hewitt 2021)
    emb = model.tok_emb.weight
    assert torch.allclose(emb[300], emb[:300].mean(0), atol=1e-6) and torch.equal(emb[300], emb[-1])
    assert model.num_params() == conv.params == json.loads((tmp_path / "out" / "conversion.json").read_text())["params"]
    assert num_params(cfg) == conv.params  # the estimator counts the converted architecture exactly


def test_bidirectional_after_conversion_and_time_pieces_are_a_noop(parents, tmp_path):
    folder, hf = parents["llama_gqa_untied"]
    conv = convert(folder, tmp_path / "out", time_conditioning=True, check=True)
    assert conv.check["max_abs_diff"] < 1e-5  # random t: the zero-initialised adaLN ignores it
    model, causal, cfg, _ = _causal_copy(tmp_path / "out")
    assert cfg.resolved_model.time_conditioning and model.time_mod is not None
    ids = torch.randint(0, 300, (1, 16), generator=torch.Generator().manual_seed(0))
    later = ids.clone()
    later[0, -1] = (later[0, -1] + 1) % 300
    with torch.no_grad():
        bi = model(ids, t=0.3), model(later, t=0.3)
        ca = causal(ids, t=0.3), causal(later, t=0.3)
        assert torch.equal(model(ids, t=0.3), model(ids, t=0.9))
    assert (bi[0][0, 0] - bi[1][0, 0]).abs().max() > 1e-4  # position 0 now sees the last token
    assert torch.equal(ca[0][0, :-1], ca[1][0, :-1])  # the causal copy does not


@pytest.mark.parametrize("name", ["gpt2", "llama_gqa_untied"])
def test_masked_objective_trains_after_conversion(name, parents, tmp_path):
    folder, _ = parents[name]
    convert(folder, tmp_path / "out")
    model, cfg, tok = load_for_inference(tmp_path / "out")
    ids = torch.tensor(tok.encode(text_sample(6000))[:8 * 32]).view(8, 32)
    objective = MaskedDiffusion(cfg.diffusion, tok.mask_token_id)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(30):
        loss = objective.loss(model, {"input_ids": ids}, torch.Generator().manual_seed(step % 4))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-4:]) / 4 < 0.7 * sum(losses[:4]) / 4, losses


def test_keep_shift_reads_the_parents_next_token_prediction(parents, tmp_path):
    """With the shift kept and the causal mask, masking only the last token scores it exactly as the AR parent."""
    folder, hf = parents["llama_mha_tied"]
    conv = convert(folder, tmp_path / "out", shift_logits=True)
    assert conv.config.diffusion.shift_logits
    model, causal, cfg, tok = _causal_copy(tmp_path / "out")
    ids = torch.randint(0, 300, (2, 20), generator=torch.Generator().manual_seed(0))
    masked = torch.zeros_like(ids, dtype=torch.bool)
    masked[:, -1] = True
    z = ids.masked_fill(masked, tok.mask_token_id)
    objective = MaskedDiffusion(cfg.diffusion, tok.mask_token_id)
    with torch.no_grad():
        nll = objective.masked_nll(causal, z, None, {"input_ids": ids}, masked)  # (2,)
        logp = hf(input_ids=ids).logits[:, -2].log_softmax(-1)  # position T-2 predicts token T-1
    # SUBS drops the [MASK] column; the parent never had it (the mean row), so compare renormalised
    ref = -(logp.gather(-1, ids[:, -1:]).squeeze(-1))
    full = causal(z)[:, -2].float()
    full[:, tok.mask_token_id] = float("-inf")
    assert torch.allclose(nll, torch.logsumexp(full, -1) - full.gather(-1, ids[:, -1:]).squeeze(-1), atol=1e-5)
    assert torch.allclose(causal(ids)[:, -2, :300], hf(input_ids=ids).logits[:, -2, :300], atol=1e-5)
    assert (nll - ref).abs().max() < 0.05  # only the extra vocabulary rows' mass differs


def test_converted_names_fall_in_attention_and_mlp_groups(parents, tmp_path):
    convert(parents["llama_gqa_untied"][0], tmp_path / "out", overrides={"train.lr_mult_attn": 4.0,
                                                                         "train.lr_mult_mlp": 0.25})
    model, cfg, _ = load_for_inference(tmp_path / "out")
    groups, _ = param_groups(model, cfg.train, cfg.model.n_layers)
    by_name = {n: g["lr_mult"] for g in groups for n in g["names"]}
    assert by_name["blocks.1.attn.qkv.weight"] == by_name["blocks.0.attn.proj.weight"] == 4.0
    assert by_name["blocks.1.mlp.fc1.weight"] == by_name["blocks.0.mlp.fc2.weight"] == 0.25
    assert by_name["ln_f.weight"] == by_name["lm_head.weight"] == 1.0
    assert cfg.train.init_from == str((tmp_path / "out").resolve())


def test_training_starts_from_the_converted_weights(parents, tmp_path):
    """`train.init_from` (written by convert) loads the converted weights; a tiny LR leaves them in the export."""
    from safetensors.torch import load_file

    from sunfish_lib.train.trainer import train

    conv = convert(parents["llama_gqa_untied"][0], tmp_path / "out")
    cfg = conv.config.override({"max_steps": 2, "warmup_steps": 0, "lr": 1e-9, "micro_batch_size": 4,
                                "val_every": 2, "val_batches": 1, "ckpt_every": 2, "log_every": 1,
                                "tensorboard": False, "keep_best": 0})
    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary["global_step"] == 2 and summary["metrics"]["train/loss"] > 0
    before = load_file(str(tmp_path / "out" / "model.safetensors"))
    after = load_file(str(tmp_path / "run" / "export" / "model.safetensors"))
    assert before.keys() == after.keys()
    assert all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)
    bad = conv.config.override({"train.init_from": str(tmp_path / "nowhere")})
    with pytest.raises(SunfishError, match="holds no model.safetensors"):
        train(bad, tmp_path / "run2", progress=False)
    other = conv.config.override({"model.n_layers": 3})
    with pytest.raises(SunfishError, match="does not fit this run's model"):
        train(other, tmp_path / "run3", progress=False)


def test_sunfish_ar_run_converts_exactly(tmp_path):
    from sunfish_lib.config import get_config
    from sunfish_lib.data import get_tokenizer
    from sunfish_lib.io.export import export_model

    cfg = get_config("smoke", {"objective": "ar", "sampler": "ar"})
    torch.manual_seed(0)
    parent = Backbone.from_config(cfg).eval()
    export_model(parent, cfg, tmp_path / "ar", get_tokenizer("bpe", cfg.data.bpe_vocab_size))
    conv = convert(tmp_path / "ar", tmp_path / "out", check=True, time_conditioning=True)
    assert conv.parent == "sunfish-ar" and conv.check["max_abs_diff"] == 0.0 and conv.added_tokens == {}
    assert conv.config.data == cfg.data and conv.config.diffusion.objective == "masked"
    with pytest.raises(SunfishError, match="is a Sunfish masked model"):
        convert(tmp_path / "out", tmp_path / "again")


def test_unsupported_parents_fail_in_one_line(parents, tok_dir, tmp_path):
    from transformers import AutoConfig

    folder = parents["gpt2"][0]
    c = AutoConfig.from_pretrained(str(folder))
    c.activation_function = "relu"
    c.save_pretrained(str(folder.parent / "relu"))
    (folder.parent / "relu" / "model.safetensors").symlink_to(folder / "model.safetensors")
    with pytest.raises(SunfishError, match="activation_function='relu'"):
        convert(folder.parent / "relu", tmp_path / "a")
    no_tok = tmp_path / "no_tok"
    no_tok.mkdir()
    for f in ("config.json", "model.safetensors", "generation_config.json"):
        if (folder / f).exists():
            (no_tok / f).symlink_to(folder / f)
    with pytest.raises(SunfishError, match="--tokenizer"):
        convert(no_tok, tmp_path / "b")
    assert convert(no_tok, tmp_path / "c", tokenizer=str(tok_dir)).added_tokens["[MASK]"] == 300
    with pytest.raises(SunfishError, match="no such folder"):
        convert("./does/not/exist", tmp_path / "d")
    with pytest.raises(SunfishError, match="diffusion.shift_logits=True applies to the masked"):
        convert(folder, tmp_path / "e", objective="ar", shift_logits=True)


@pytest.mark.slow
def test_cli_hub_name_fails_fast_offline(tmp_path):
    import time

    t0 = time.perf_counter()
    r = run_cli("convert", "--from", "gpt2", "--out", str(tmp_path / "x"), env={"HF_HOME": str(tmp_path / "hf")})
    assert r.returncode == 2 and time.perf_counter() - t0 < 30
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1 and "offline" in err and "save_pretrained(DIR)" in err and "--from DIR" in err


def test_dotted_hub_name_is_a_hub_name_not_a_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(SunfishError, match=r"'Qwen/Qwen2.5-0.5B' is not a local folder and the hub is offline"):
        convert("Qwen/Qwen2.5-0.5B", tmp_path / "x")


@pytest.mark.slow
def test_cli_local_folder_with_check(parents, tmp_path):
    r = run_cli("convert", "--from", str(parents["llama_gqa_untied"][0]), "--out", str(tmp_path / "o"), "--check",
                "--keep-shift", "--set", "train.lr_mult_attn=2", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["check_passed"] and out["check"]["max_abs_diff"] < 1e-5 and out["shift_logits"]
    assert out["model"]["n_kv_heads"] == 2 and out["model"]["pos_encoding"] == "rope"
    saved = json.loads((tmp_path / "o" / "config.json").read_text())
    assert saved["train"]["lr_mult_attn"] == 2.0 and saved["diffusion"]["shift_logits"] is True
    r = run_cli("convert", "--from", str(parents["gpt2"][0]), "--out", str(tmp_path / "p"), "--check")
    assert r.returncode == 0 and "PASS" in r.stdout and "sunfish train --config" in r.stdout


@pytest.mark.parametrize("name,field,plain", [("qwen3_qknorm_headdim", "qk_norm", False),
                                               ("llama3_rope_scaling", "rope_type", "default"),
                                               ("gemma_mqa_tied", "embed_scale", 1.0)])
def test_newer_parents_need_their_features(name, field, plain, parents, tmp_path):
    """Qwen3's q/k norms (and head_dim 24 != 64/4), llama3 RoPE scaling and Gemma's scaled embeddings are read
    and matter to the logits."""
    folder, hf = parents[name]
    convert(folder, tmp_path / "out", objective="ar")
    model, cfg, _ = load_for_inference(tmp_path / "out")
    m = cfg.model
    if name.startswith("qwen3"):
        assert m.qk_norm and m.head_dim == 24 and model.blocks[0].attn.qkv.weight.shape[0] == 24 * (4 + 2 + 2)
    elif name.startswith("gemma"):
        assert m.mlp == "geglu" and m.embed_scale == pytest.approx(8.0) and m.tie_embeddings  # sqrt(64)
    else:
        assert (m.rope_type, m.rope_factor, m.rope_original_max_len) == ("llama3", 4.0, 64)
    ids = torch.randint(0, 300, (2, 48), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = hf(input_ids=ids).logits[..., :300]
        assert (model(ids)[..., :300] - ref).abs().max().item() < 1e-5
        without = Backbone(replace(cfg.resolved_model, **{field: plain})).eval()
        without.load_state_dict(model.state_dict(), strict=False)
        assert (without(ids)[..., :300] - ref).abs().max().item() > 1e-3  # the feature is not a no-op


@pytest.mark.slow
def test_convert_keeps_the_ar_shift_by_default(parents, tmp_path):
    """Issue 14.9: HF and Sunfish AR parents keep the shift unless --no-keep-shift (RND1, Dream, dllm)."""
    folder = parents["gpt2"][0]
    assert convert(folder, tmp_path / "a").config.diffusion.shift_logits is True
    assert convert(folder, tmp_path / "b", objective="ar").config.diffusion.shift_logits is False  # stays causal AR
    assert convert(folder, tmp_path / "c", shift_logits=False).config.diffusion.shift_logits is False
    r = run_cli("convert", "--from", str(folder), "--out", str(tmp_path / "d"), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["shift_logits"] is True
    r = run_cli("convert", "--from", str(folder), "--out", str(tmp_path / "e"), "--no-keep-shift", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path / "e" / "config.json").read_text())["diffusion"]["shift_logits"] is False
