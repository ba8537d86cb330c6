import math

import pytest
import torch
import torch.nn.functional as F

from sunfish_lib.config import ModelConfig, get_config
from sunfish_lib.model import Backbone, timestep_embedding
from sunfish_lib.model.attention import dense_mask


def small(**kw) -> ModelConfig:
    base = dict(vocab_size=64, n_layers=2, n_heads=2, d_model=16, max_seq_len=32, time_conditioning=True, causal=False)
    base.update(kw)
    return ModelConfig(**base).resolve("masked")  # the fields left None: off, as an explicit objective makes them


def test_shapes_tokens_and_vectors():
    m = Backbone(small(embed_dim=8))
    tok = torch.randint(0, 64, (3, 10))
    assert m(tok, t=torch.rand(3)).shape == (3, 10, 64)
    h = m.encode(vectors=torch.randn(3, 10, 8), t=0.5)
    assert h.shape == (3, 10, 16)
    assert m.to_embedding_space(h).shape == (3, 10, 8)
    assert m.embed(tok).shape == (3, 10, 8)
    with pytest.raises(ValueError, match="exactly one"):
        m.encode(tok, vectors=torch.randn(3, 10, 8), t=0.5)
    with pytest.raises(ValueError, match="max_seq_len=32"):
        m(torch.zeros(1, 33, dtype=torch.long), t=0.1)
    with pytest.raises(ValueError, match="pass t"):
        m(tok)


def test_time_conditioning_is_exact_noop_at_init_and_when_off():
    torch.manual_seed(1)
    with_t = Backbone(small())
    without = Backbone(small(time_conditioning=False))
    missing, unexpected = without.load_state_dict(with_t.state_dict(), strict=False)
    assert missing == [] and all("time" in k or "mod_table" in k for k in unexpected) and unexpected
    tok = torch.randint(0, 64, (2, 12))
    a = with_t(tok, t=torch.tensor([0.01, 0.99]))
    b = with_t(tok, t=torch.tensor([0.7, 0.3]))
    c = without(tok)  # t not needed
    assert torch.equal(a, b)
    assert torch.allclose(a, c, atol=0, rtol=0)
    assert without.num_params() < with_t.num_params()


def test_time_conditioning_learns():
    torch.manual_seed(0)
    m = Backbone(small())
    tok = torch.randint(0, 64, (4, 8))
    loss = F.cross_entropy(m(tok, t=torch.rand(4)).flatten(0, 1), tok.flatten())
    loss.backward()
    assert m.time_mod.weight.grad.abs().sum() > 0
    with torch.no_grad():
        m.time_mod.weight.normal_(0, 0.1)
    assert not torch.allclose(m(tok, t=torch.full((4,), 0.1)), m(tok, t=torch.full((4,), 0.9)))


def test_causal_switch_really_causal():
    torch.manual_seed(0)
    causal = Backbone(small(causal=True, time_conditioning=False))
    bidir = Backbone(small(causal=False, time_conditioning=False))
    bidir.load_state_dict(causal.state_dict())
    tok = torch.randint(0, 64, (1, 10))
    tok2 = tok.clone()
    tok2[0, 7] = (tok[0, 7] + 1) % 64  # change a later token
    out1, out2 = causal(tok), causal(tok2)
    assert torch.allclose(out1[:, :7], out2[:, :7], atol=1e-6)  # earlier positions can't see it
    assert not torch.allclose(out1[:, 7:], out2[:, 7:])
    b1, b2 = bidir(tok), bidir(tok2)
    assert not torch.allclose(b1[:, :7], b2[:, :7])  # bidirectional ones do
    # causal via explicit mask path (segment ids) equals the is_causal path
    seg = torch.zeros(1, 10, dtype=torch.long)
    assert torch.allclose(causal(tok, segment_ids=seg), out1, atol=1e-5)


def test_segment_ids_block_cross_document_attention():
    torch.manual_seed(0)
    m = Backbone(small(time_conditioning=False))
    tok = torch.randint(0, 64, (1, 12))
    seg = torch.tensor([[0] * 5 + [1] * 7])
    alone = m(tok[:, :5])  # document 0 by itself (same positions 0..4)
    packed = m(tok, segment_ids=seg)
    assert torch.allclose(packed[:, :5], alone, atol=1e-5)
    tok2 = tok.clone()
    tok2[0, 9] = (tok[0, 9] + 5) % 64
    assert torch.allclose(m(tok2, segment_ids=seg)[:, :5], packed[:, :5], atol=1e-6)


def test_padding_mask_no_nan_and_ignored():
    torch.manual_seed(0)
    m = Backbone(small(time_conditioning=False))
    tok = torch.randint(0, 64, (2, 8))
    am = torch.ones(2, 8, dtype=torch.long)
    am[:, 5:] = 0
    out = m(tok, attention_mask=am)
    assert not out.isnan().any()
    tok2 = tok.clone()
    tok2[:, 6] = (tok[:, 6] + 1) % 64  # changing padding does not change real positions
    assert torch.allclose(m(tok2, attention_mask=am)[:, :5], out[:, :5], atol=1e-6)


def test_activation_checkpointing_same_grads():
    torch.manual_seed(0)
    a = Backbone(small())
    b = Backbone(small(activation_checkpointing=True))
    b.load_state_dict(a.state_dict())
    a.train(), b.train()
    tok = torch.randint(0, 64, (2, 8))
    t = torch.rand(2)
    for m in (a, b):
        F.cross_entropy(m(tok, t=t).flatten(0, 1), tok.flatten()).backward()
    for (n, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert pa.grad is None and pb.grad is None or torch.allclose(pa.grad, pb.grad, atol=1e-6), n


def test_residual_init_scaled_and_initial_loss_near_uniform():
    torch.manual_seed(0)
    cfg = get_config("tiny").resolved_model
    m = Backbone(cfg)
    std_proj = m.blocks[0].attn.proj.weight.std().item()
    std_qkv = m.blocks[0].attn.qkv.weight.std().item()
    assert std_proj == pytest.approx(0.02 / math.sqrt(2 * cfg.n_layers), rel=0.1)
    assert std_qkv == pytest.approx(0.02, rel=0.1)
    tok = torch.randint(0, cfg.vocab_size, (4, 64))
    loss = F.cross_entropy(m(tok, t=torch.rand(4)).flatten(0, 1), tok.flatten()).item()
    # Tied embeddings give the input token a small head start; the loss is near ln V.
    assert abs(loss - math.log(cfg.vocab_size)) < 1.5


def test_deep_stack_stays_stable():
    """24 blocks at init: the residual stream grows by a bounded factor (scaled residual init)."""
    torch.manual_seed(0)
    m = Backbone(small(n_layers=24, d_model=64, n_heads=4, time_conditioning=False))
    tok = torch.randint(0, 64, (2, 16))
    h0 = m.embed(tok) + m.pos_emb.weight[:16]
    h = h0
    for blk in m.blocks:
        h = blk(h, None, None, False)
    growth = (h.std() / h0.std()).item()
    assert 1.0 < growth < 2.0, growth
    assert torch.isfinite(m.encode(tok)).all()


def test_timestep_embedding_closed_form():
    e = timestep_embedding(torch.tensor([0.0, 0.5]), 8)
    assert e.shape == (2, 8)
    assert torch.allclose(e[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    # first frequency is 1: cos(500), sin(500)
    assert e[1, 0].item() == pytest.approx(math.cos(500.0), abs=1e-4)
    assert e[1, 4].item() == pytest.approx(math.sin(500.0), abs=1e-4)


def test_untied_and_bias_variants_run():
    m = Backbone(small(tie_embeddings=False, bias=True, embed_dim=8))
    assert m.lm_head is not None and m.blocks[0].attn.qkv.bias is not None
    assert m(torch.randint(0, 64, (1, 4)), t=0.2).shape == (1, 4, 64)


def test_kv_cache_matches_full_forward():
    torch.manual_seed(0)
    from sunfish_lib.model import KVCache

    m = Backbone(small(causal=True, time_conditioning=False)).eval()
    tok = torch.randint(0, 64, (2, 12))
    full = m(tok)
    cache = KVCache(m.cfg.n_layers)
    outs = [m(tok[:, :5], kv_cache=cache)]
    for i in range(5, 12):
        outs.append(m(tok[:, i:i + 1], kv_cache=cache))
    assert cache.length == 12
    assert torch.allclose(torch.cat(outs, 1), full, atol=1e-5)
    with pytest.raises(ValueError, match="one token per call"):
        m(tok[:, :2], kv_cache=cache)
    with pytest.raises(ValueError, match="needs a causal model"):
        Backbone(small(time_conditioning=False))(tok, kv_cache=KVCache(2))


@pytest.mark.parametrize("causal", [False, True])
def test_no_dense_mask_when_nothing_is_restricted_and_logits_unchanged(causal, monkeypatch):
    torch.manual_seed(0)
    m = Backbone(small(time_conditioning=False, causal=causal)).eval()
    tok = torch.randint(0, 64, (3, 12))
    ones, one_doc = torch.ones(3, 12, dtype=torch.long), torch.full((3, 12), 4)
    right = ones.clone()
    right[1, 7:] = 0  # one random-length row, padded on the right
    assert m._attn_mask(None, ones, 12, tok.device) is None  # all-ones rows: no mask
    assert m._attn_mask(one_doc, ones, 12, tok.device) is None  # one document per row: no mask
    assert (m._attn_mask(None, right, 12, tok.device) is None) == causal  # causal: right padding needs none
    left = ones.clone()
    left[0, :3] = 0
    assert m._attn_mask(None, left, 12, tok.device) is not None  # left padding is a real restriction
    # SDPA gets attn_mask None and is_causal for AR: the flash/memory-efficient path
    seen = []
    real_sdpa = F.scaled_dot_product_attention
    monkeypatch.setattr(F, "scaled_dot_product_attention",
                        lambda *a, **kw: seen.append((kw["attn_mask"], kw["is_causal"])) or real_sdpa(*a, **kw))
    fast = m(tok, segment_ids=one_doc, attention_mask=ones)
    assert seen and all(mask is None and is_causal == causal for mask, is_causal in seen)
    monkeypatch.undo()
    # the same logits as the dense mask gave (real positions; pads are never scored)
    for seg, am in ((one_doc, ones), (None, right)):
        monkeypatch.setattr(Backbone, "_attn_mask",  # the full mask, with nothing dropped
                            lambda self, s, a, T, d: dense_mask(s, a, bool(self.cfg.causal), T, d))
        dense = m(tok, segment_ids=seg, attention_mask=am)
        monkeypatch.undo()
        out = fast if seg is not None else m(tok, attention_mask=am)
        real = am.bool()
        assert torch.allclose(out[real], dense[real], atol=1e-5)
