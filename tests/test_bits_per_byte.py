"""Issue 14.4: bits per byte and token counts cover exactly the scored tokens, the same set for AR and masked."""

import math

import pytest
import torch
import torch.nn.functional as F

from sunfish_lib.config import DiffusionConfig, ModelConfig, get_config
from sunfish_lib.data.tokenizer import train_bpe
from sunfish_lib.diffusion import Autoregressive, MaskedDiffusion, build_objective
from sunfish_lib.eval.evaluate import evaluate_likelihood
from sunfish_lib.model import Backbone

TEXT = "Café naïve — 日本語 text, ok? Ünïcödé again: café, 日本.\n" * 3


@pytest.fixture(scope="module")
def tok():
    return train_bpe(300, texts=[TEXT, "plain ascii words and more words"])


def test_token_bytes_count_each_byte_once_and_specials_zero(tok):
    ids = tok.encode(TEXT) + [tok.eos_token_id]
    nb = tok.token_bytes()
    assert len(nb) == len(tok)
    assert nb[tok.eos_token_id] == nb[tok.mask_token_id] == nb[tok.pad_token_id] == 0
    total = len(TEXT.encode("utf-8"))
    assert sum(nb[i] for i in ids) == total
    # rows cut inside a multi-byte character still add up to the text exactly ...
    decoded_sums = []
    for cut in range(1, len(ids)):
        assert sum(nb[i] for i in ids[:cut]) + sum(nb[i] for i in ids[cut:]) == total
        decoded_sums.append(sum(len(tok.decode(p).encode("utf-8")) for p in (ids[:cut], ids[cut:])))
    # ... which decoding the rows does not (U+FFFD at a cut, 13 bytes for the EOS string)
    assert max(decoded_sums) > total + len("<|endoftext|>")


def _ar_model():
    torch.manual_seed(0)
    return Backbone(ModelConfig(vocab_size=30, n_layers=1, n_heads=2, d_model=16, max_seq_len=16,
                                causal=True, time_conditioning=False).resolve("masked"))


@pytest.mark.parametrize("bos", [None, 29])
def test_ar_result_does_not_change_with_an_all_ones_attention_mask(bos):
    m = _ar_model()
    g = torch.Generator().manual_seed(0)
    batches = [{"input_ids": torch.randint(0, 29, (4, 9), generator=g)} for _ in range(3)]
    ones = [{**b, "attention_mask": torch.ones_like(b["input_ids"])} for b in batches]
    lengths = torch.arange(30) % 4  # bytes per token id
    a = evaluate_likelihood(m, Autoregressive(bos_token_id=bos), batches, token_bytes=lengths)
    b = evaluate_likelihood(m, Autoregressive(bos_token_id=bos), ones, token_bytes=lengths)
    assert a.nats_per_token == pytest.approx(b.nats_per_token, rel=1e-6) and a.tokens == b.tokens
    assert a.bits_per_byte == pytest.approx(b.bits_per_byte, rel=1e-6) and a.bytes == b.bytes
    first = 1 if bos is None else 0  # without a BOS the first token of a row is not scored
    assert a.tokens == 3 * 4 * (9 - first)
    assert a.bytes == sum(int(lengths[bb["input_ids"][:, first:]].sum()) for bb in batches)


def test_ar_with_bos_scores_every_token_and_matches_manual():
    m = _ar_model()
    x = torch.randint(0, 29, (3, 10))
    out = Autoregressive(bos_token_id=29).loss(m, {"input_ids": x})
    inp = torch.cat([torch.full((3, 1), 29), x[:, :-1]], 1)
    manual = F.cross_entropy(m(inp).flatten(0, 1), x.flatten())
    assert out["loss"].item() == pytest.approx(manual.item(), rel=1e-5)
    am = torch.ones_like(x)
    am[:, 6:] = 0
    out2 = Autoregressive(bos_token_id=29).loss(m, {"input_ids": x, "attention_mask": am})
    manual2 = F.cross_entropy(m(inp[:, :6]).flatten(0, 1), x[:, :6].flatten())
    assert out2["loss"].item() == pytest.approx(manual2.item(), rel=1e-5)


def test_ar_and_masked_score_the_same_tokens_and_bytes():
    am = torch.ones(2, 8, dtype=torch.long)
    am[1, 5:] = 0
    batch = {"input_ids": torch.randint(0, 20, (2, 8)), "attention_mask": am}
    ar = build_objective(get_config("tiny", objective="ar", sampler="ar"), 31, 30)
    masked = build_objective(get_config("tiny", objective="masked", sampler="random"), 31, 30)
    assert torch.equal(ar.scored(batch), masked.scored(batch)) and int(ar.scored(batch).sum()) == 13
    ar_res = evaluate_likelihood(_ar_model(), Autoregressive(bos_token_id=29), [batch], token_bytes=[2] * 30)
    m = Backbone(ModelConfig(vocab_size=32, n_layers=1, n_heads=2, d_model=16, max_seq_len=16).resolve("masked"))
    mk_res = evaluate_likelihood(m, MaskedDiffusion(DiffusionConfig(objective="masked"), 31), [batch],
                                 t_samples=2, token_bytes=[2] * 32, generator=torch.Generator().manual_seed(0))
    assert ar_res.tokens == mk_res.tokens == 13 and ar_res.bytes == mk_res.bytes == 26
    assert ar_res.bits_per_byte == pytest.approx(ar_res.nats_per_token * 13 / math.log(2) / 26)
