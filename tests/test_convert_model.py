"""Architecture options for converted models (RMSNorm, SwiGLU, RoPE, GQA, qkv bias) and the keep-the-shift option."""

from dataclasses import replace

import pytest
import torch

from sunfish_lib.config import DiffusionConfig, ModelConfig, get_config
from sunfish_lib.diffusion.masked import MaskedDiffusion, shift_right
from sunfish_lib.errors import ConfigError
from sunfish_lib.sampling.noise import RowNoise
from sunfish_lib.sizing.counts import built_params, matmul_params, num_params, param_counts
from sunfish_lib.sizing.estimate import config_for, make_setup
from sunfish_lib.model.layers import apply_rope, rope_cos_sin, rope_inv_freq
from sunfish_lib.sizing.memory import activations, block_params
from sunfish_lib.model import Backbone, KVCache
from sunfish_lib.sampling.masked import MaskedSampler
from sunfish_lib.train.optim import categorize

LLAMA = {"norm": "rmsnorm", "mlp": "swiglu", "pos_encoding": "rope", "n_kv_heads": 2, "d_ff": 96}
ARCHS = {
    "llama_gqa": LLAMA,
    "qwen_mqa_untied": {**LLAMA, "n_kv_heads": 1, "qkv_bias": True, "tie_embeddings": False, "rope_theta": 1e6},
    "gpt2_bias_rmsnorm": {"bias": True, "qkv_bias": False, "norm": "rmsnorm"},
    "swiglu_learned_pos": {"mlp": "swiglu", "bias": True, "pos_encoding": "learned"},
}
CASES = [(a, o) for a in ARCHS for o in ("continuous", "masked", "ar")]


@pytest.mark.parametrize("arch, objective", CASES, ids=["-".join(c) for c in CASES])
def test_param_count_equals_built_model(arch, objective):
    cfg = config_for("tiny", objective, ARCHS[arch])
    with torch.device("meta"):
        model = Backbone.from_config(cfg)
    assert num_params(cfg) == sum(p.numel() for p in model.parameters()) == built_params(cfg)
    assert block_params(cfg.resolved_model) == sum(p.numel() for p in model.blocks[0].parameters())
    matrices = sum(p.numel() for n, p in model.named_parameters() if p.dim() == 2 and not n.startswith(
        ("tok_emb", "pos_emb", "time_emb", "time_mod")) and not n.endswith("mod_table"))
    head = cfg.model.vocab_size * cfg.model.d_model if cfg.model.tie_embeddings else 0  # tied: embedding as matmul
    assert matmul_params(cfg) == matrices + head


def test_param_components_by_hand_llama():
    m = ModelConfig(vocab_size=100, n_layers=2, n_heads=4, d_model=8, d_ff=12, max_seq_len=16, causal=False,
                    time_conditioning=False, **{k: v for k, v in LLAMA.items() if k != "d_ff"})
    c = param_counts(m)
    kv = 2 * 2  # n_kv_heads x head_dim
    assert c["position_embedding"] == 0  # RoPE has no parameters
    assert c["attention"] == 2 * (8 * (8 + 2 * kv) + 8 * 8)
    assert c["mlp"] == 2 * (8 * 2 * 12 + 12 * 8)  # gate|up fused, down
    assert c["block_norms"] == 2 * 2 * 8 and c["final_norm"] == 8  # RMSNorm: a gain, no bias


@pytest.mark.parametrize("arch", ["llama_gqa", "gpt2_bias_rmsnorm", "swiglu_learned_pos"])
def test_activation_model_equals_saved_tensors(arch):
    """The memory model counts exactly what autograd saves for the new options too."""
    cfg = config_for("tiny", "masked", {"n_layers": 2, "d_model": 64, "n_heads": 4, "seq_len": 64,
                                        "micro_batch_size": 3, **ARCHS[arch], "d_ff": None})
    model = Backbone.from_config(cfg).train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in params:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        model.logits(model.encode(torch.randint(0, cfg.model.vocab_size, (3, 64))))
    s = make_setup(cfg, strategy="single", precision="32-true", device="cpu")
    ids = 3 * 64 * 8 + (64 * 8 if cfg.model.pos_encoding == "learned" else 0)  # token ids (+ learned positions)
    assert sum(saved.values()) == sum(activations(cfg.resolved_model, s).values()) + ids


def test_every_parameter_name_has_an_lr_category():
    cfg = config_for("tiny", "continuous", {**ARCHS["qwen_mqa_untied"], "self_conditioning": True})
    cats = {n: categorize(n)[0] for n, _ in Backbone.from_config(cfg).named_parameters()}
    assert cats["blocks.0.attn.qkv.weight"] == cats["blocks.0.attn.qkv.bias"] == "attn"
    assert cats["blocks.0.mlp.fc1.weight"] == "mlp" and cats["blocks.0.ln1.weight"] == "norm"
    assert cats["lm_head.weight"] == "embed" and "pos_emb.weight" not in cats


def test_rope_rotates_pairs_and_scores_depend_on_offsets_only():
    cos, sin = rope_cos_sin(torch.arange(6), rope_inv_freq(ModelConfig(d_model=8, n_heads=1).resolve("masked")))
    assert cos.shape == (6, 8) and torch.equal(cos[0], torch.ones(8)) and torch.equal(sin[0], torch.zeros(8))
    q, k = torch.randn(1, 1, 1, 8).expand(1, 1, 6, 8), torch.randn(1, 1, 1, 8).expand(1, 1, 6, 8)
    rq, rk = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    assert torch.allclose(rq.norm(dim=-1), q.norm(dim=-1), atol=1e-6)  # a rotation
    scores = (rq[0, 0] @ rk[0, 0].T)  # (6, 6): q at i, k at j
    assert torch.allclose(scores[2, 0], scores[5, 3], atol=1e-5) and torch.allclose(scores[1, 1], scores[4, 4], atol=1e-5)


@pytest.mark.parametrize("arch", ["llama_gqa", "qwen_mqa_untied"])
def test_kv_cache_with_rope_and_gqa_matches_full_forward(arch):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=64, n_layers=2, n_heads=4, d_model=32, max_seq_len=32, causal=True,
                      time_conditioning=False, **ARCHS[arch])
    model = Backbone(cfg.resolve("masked")).eval()
    tok = torch.randint(0, 64, (2, 10))
    full = model(tok)
    cache = KVCache(cfg.n_layers)
    steps = [model(tok[:, :4], kv_cache=cache)]
    steps += [model(tok[:, i:i + 1], kv_cache=cache) for i in range(4, 10)]
    assert cache.layers[0][0].shape == (2, cfg.n_kv_heads, 10, 8)  # keys stored with the kv heads only
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)


def test_gqa_equals_full_attention_with_repeated_kv_heads():
    """Grouped-query attention is multi-head attention whose k/v heads are repeated (HF repeat_kv)."""
    torch.manual_seed(0)
    gqa_cfg = ModelConfig(vocab_size=64, n_layers=1, n_heads=4, d_model=32, max_seq_len=16, n_kv_heads=2,
                          causal=False, time_conditioning=False, pos_encoding="rope")
    gqa, mha = Backbone(gqa_cfg.resolve("masked")), Backbone(replace(gqa_cfg, n_kv_heads=None).resolve("masked"))
    sd = gqa.state_dict()
    q, k, v = sd["blocks.0.attn.qkv.weight"].split([32, 16, 16])
    rep = lambda w: w.view(2, 1, 8, 32).expand(2, 2, 8, 32).reshape(32, 32)  # kv head j -> query heads 2j, 2j+1
    sd["blocks.0.attn.qkv.weight"] = torch.cat([q, rep(k), rep(v)])
    mha.load_state_dict(sd)
    tok = torch.randint(0, 64, (2, 12))
    assert torch.allclose(gqa(tok), mha(tok), atol=1e-5)


@pytest.mark.parametrize("overrides, message", [
    ({"n_kv_heads": 3}, "model.n_kv_heads=3 must divide model.n_heads=4"),
    ({"norm": "batchnorm"}, "model.norm='batchnorm' is not allowed"),
    ({"mlp": "relu"}, "model.mlp='relu' is not allowed"),
    ({"pos_encoding": "alibi"}, "model.pos_encoding='alibi' is not allowed"),
    ({"pos_encoding": "rope", "n_heads": 128}, "even head dim"),
    ({"objective": "ar", "sampler": "ar", "shift_logits": True}, "diffusion.shift_logits=True applies to the masked"),
    ({"init_from": " "}, "train.init_from is empty"),
])
def test_bad_architecture_configs_are_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as e:
        get_config("tiny", overrides)
    assert "\n" not in str(e.value)


def test_presets_unchanged_by_the_new_options():
    # positions are rotary in every preset (issue #13); the 1.4B count is that of learned positions less their table
    for name, n in (("tiny", None), ("1.4B", 1_315_276_800 - 2048 * 2048)):
        cfg = config_for(name, "masked")
        m = cfg.model
        assert (m.norm, m.mlp, m.pos_encoding, m.n_kv_heads, m.qkv_bias) == ("layernorm", "gelu", "rope", None, None)
        if n:
            assert num_params(cfg) == n


# -- keep the shift ---------------------------------------------------------------------

class _Shifted(torch.nn.Module):
    """A reference: the backbone with its outputs moved one position right by hand."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.cfg = inner, inner.cfg

    def encode(self, *a, **kw):
        h = self.inner.encode(*a, **kw)
        return torch.cat([h[:, :1], h[:, :-1]], 1)

    def logits(self, h):
        return self.inner.logits(h)

    def forward(self, x, **kw):
        return self.logits(self.encode(x, **kw))


def _masked_model():
    torch.manual_seed(0)
    return Backbone(ModelConfig(vocab_size=32, n_layers=1, n_heads=2, d_model=16, max_seq_len=16, causal=False,
                                time_conditioning=False).resolve("masked")).eval()


def test_shift_right_moves_rows_and_keeps_the_first():
    x = torch.arange(12).view(2, 6)
    assert shift_right(x).tolist() == [[0, 0, 1, 2, 3, 4], [6, 6, 7, 8, 9, 10]]


def test_masked_loss_with_shift_scores_token_i_by_position_i_minus_1():
    model = _masked_model()
    batch = {"input_ids": torch.randint(0, 31, (4, 12))}
    shifted = MaskedDiffusion(DiffusionConfig(objective="masked", shift_logits=True), mask_token_id=31)
    plain = MaskedDiffusion(DiffusionConfig(objective="masked"), mask_token_id=31)
    a = shifted.loss(model, batch, torch.Generator().manual_seed(3))
    b = plain.loss(_Shifted(model), batch, torch.Generator().manual_seed(3))
    c = plain.loss(model, batch, torch.Generator().manual_seed(3))
    assert torch.equal(a["loss"], b["loss"]) and not torch.equal(a["loss"], c["loss"])


def test_masked_sampler_with_shift_reads_the_same_positions():
    model = _masked_model()
    x = torch.full((2, 10), 31)
    x[:, 0] = 5
    out_a = MaskedSampler(model, 31, kind="low_confidence", steps=5, shift_logits=True).generate(
        x, noise=RowNoise(0))
    out_b = MaskedSampler(_Shifted(model), 31, kind="low_confidence", steps=5).generate(
        x, noise=RowNoise(0))
    out_c = MaskedSampler(model, 31, kind="low_confidence", steps=5).generate(
        x, noise=RowNoise(0))
    assert torch.equal(out_a, out_b) and not torch.equal(out_a, out_c)
    assert (out_a[:, 0] == 5).all() and not (out_a == 31).any()


def test_activation_checkpointing_same_grads_with_rope_gqa_swiglu():
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=64, n_layers=2, n_heads=4, d_model=32, max_seq_len=32, causal=False,
                      time_conditioning=True, **LLAMA)
    cfg = cfg.resolve("masked")
    plain, ckpt = Backbone(cfg).train(), Backbone(replace(cfg, activation_checkpointing=True)).train()
    ckpt.load_state_dict(plain.state_dict())
    tok = torch.randint(0, 64, (2, 16))
    for m in (plain, ckpt):
        m(tok, t=torch.tensor([0.2, 0.7])).logsumexp(-1).mean().backward()
    for (n, a), b in zip(plain.named_parameters(), ckpt.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6), n


def test_generate_builds_the_sampler_with_the_configs_shift():
    from sunfish_lib.sampling.samplers import build_sampler

    class Tok:
        mask_token_id, pad_token_id, eos_token_id = 31, 30, 29

    cfg = get_config("tiny", {"objective": "masked", "sampler": "low_confidence", "shift_logits": True})
    assert build_sampler(_masked_model(), cfg, Tok()).shift_logits is True
    assert build_sampler(_masked_model(), cfg.override({"shift_logits": False}), Tok()).shift_logits is False
