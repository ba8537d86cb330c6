"""Every discrete sampling path draws from the model's (tempered, filtered) softmax: chi-square tests in float64.

Fixed logits, many draws; the per-position token counts are compared with the expected
probabilities (tokens with expected count < 5 pooled into one cell). A p-value below 1e-4
fails; each test also checks that the same counts reject a nearby wrong distribution, so
the test has the power to see a mistake of the kind it guards against.
"""

import pytest
import torch
from torch import nn

from sunfish_lib.model import KVCache
from sunfish_lib.sampling import MaskedSampler, filter_logits, sample_ar, sample_categorical
from sunfish_lib.sampling.filters import compiled_step, inverse_cdf, sample_tokens
from sunfish_lib.sampling.noise import RowNoise

V, MASK = 40, 39
LOGITS = torch.linspace(2.5, -4.0, V - 1).double()  # the model's logits over the real tokens (MASK excluded)


def chi2_pvalue(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """p-value of the chi-square goodness-of-fit of counts (K,) to probs (K,) (cells with E < 5 pooled)."""
    counts, probs = counts.double(), probs.double() / probs.sum()
    n = counts.sum()
    expected = n * probs
    assert (counts[probs == 0] == 0).all(), "a zero-probability token was drawn"
    big = expected >= 5
    obs = torch.cat([counts[big], counts[~big].sum()[None]])
    exp = torch.cat([expected[big], expected[~big].sum()[None]])
    keep = exp > 0
    stat = ((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum()
    df = int(keep.sum()) - 1
    return float(torch.special.gammaincc(torch.tensor(df / 2.0, dtype=torch.float64), stat / 2))


def expected(temperature=1.0, top_k=0, top_p=1.0) -> torch.Tensor:
    """The distribution a sampler must draw from: full-vocabulary reference filter, softmax (V,)."""
    full = torch.cat([LOGITS, torch.tensor([float("-inf")], dtype=torch.float64)])
    return filter_logits(full, temperature, top_k, top_p).softmax(-1)


def check(draws: torch.Tensor, probs: torch.Tensor, wrong: torch.Tensor) -> None:
    counts = torch.bincount(draws.flatten(), minlength=V)[:V]
    assert chi2_pvalue(counts, probs) > 1e-4
    assert chi2_pvalue(counts, wrong) < 1e-4  # power: the test would notice the wrong law


SETTINGS = [dict(), dict(temperature=0.6), dict(temperature=1.7), dict(top_k=5), dict(temperature=1.5, top_k=7),
            dict(top_p=0.7), dict(temperature=0.8, top_p=0.9), dict(temperature=1.3, top_k=12, top_p=0.8)]


def _wrong(s: dict) -> torch.Tensor:
    """A nearby wrong law: the same settings at a temperature 25% off."""
    return expected(s.get("temperature", 1.0) * 1.25, s.get("top_k", 0), s.get("top_p", 1.0))


class FixedDist(nn.Module):
    """Context-free model: every position has logits LOGITS (and -inf for [MASK])."""

    def __init__(self):
        super().__init__()
        self.row = torch.cat([LOGITS, torch.tensor([-30.0], dtype=torch.float64)]).float()

    def forward(self, x, t=None, **kw):
        return self.row.expand(*x.shape, -1).clone()


class FixedAR(nn.Module):
    """Causal stand-in with the AR sampler's interface: the next token always has logits LOGITS."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList()
        self.row = torch.cat([LOGITS, torch.tensor([-30.0], dtype=torch.float64)]).float()

    def encode(self, ids, kv_cache=None, **kw):
        return torch.zeros(*ids.shape, 1)

    def logits(self, h):
        return self.row.expand(*h.shape[:-1], -1).clone()


@pytest.mark.parametrize("s", SETTINGS, ids=lambda s: "-".join(f"{k}{v}" for k, v in s.items()) or "plain")
def test_sample_tokens_matches_the_filtered_softmax(s):
    rows = LOGITS.float().expand(60_000, -1)
    tok, conf = sample_tokens(rows, noise=RowNoise(1), **s)
    probs = expected(**s)[:-1]
    check(tok, torch.cat([probs, torch.zeros(1, dtype=torch.float64)]), torch.cat([_wrong(s)[:-1], torch.zeros(1)]))
    # confidence is p(token) under the untempered, unfiltered softmax (LLaDA / Fast-dLLM)
    assert torch.allclose(conf, LOGITS.softmax(-1)[tok], rtol=1e-5)


@pytest.mark.parametrize("kind,extra", [("ancestral", {"steps": 6}), ("random", {"steps": 5}),
                                        ("low_confidence", {"steps": 1}), ("threshold", {"threshold": 1e-9})])
@pytest.mark.parametrize("s", [dict(), dict(temperature=1.5, top_k=7), dict(temperature=0.8, top_p=0.9)],
                         ids=["plain", "tempered-topk", "tempered-topp"])
def test_every_masked_sampler_position_follows_the_model(kind, extra, s):
    """Per-position marginals of the filled tokens equal the model's filtered softmax.

    low_confidence with one step and threshold with a threshold every token passes commit
    every draw (their later-step selections are by design biased toward confident tokens).
    """
    x = torch.full((1500, 16), MASK)
    out = MaskedSampler(FixedDist(), MASK, kind=kind, **extra, **s).generate(x, noise=RowNoise(2))
    check(out, expected(**s), _wrong(s))


@pytest.mark.parametrize("s", [dict(), dict(temperature=1.5, top_k=7), dict(temperature=0.8, top_p=0.9)],
                         ids=["plain", "tempered-topk", "tempered-topp"])
def test_ar_sampler_follows_the_model(s):
    out = sample_ar(FixedAR(), torch.zeros(1500, 1, dtype=torch.long), 12, noise=RowNoise(3),
                    exclude_ids=[MASK], **s)
    check(out[:, 1:], expected(**s), _wrong(s))


def test_rare_tokens_keep_their_float64_probability():
    """A token of probability ~1e-15 owns exactly its CDF bin: fp32 noise, uniforms or sums would lose it."""
    logits = torch.zeros(1, 200)  # one chunk: the bin edges are float64 cumulative sums
    logits[0, 7] = -29.0
    p = logits.double().softmax(-1)[0]
    cdf = p.cumsum(0)
    for u, want in ((cdf[6] + p[7] / 2, 7), (cdf[6] - p[6] / 2, 6), (cdf[7] + p[8] / 2, 8)):
        tok, prob = inverse_cdf(logits.clone(), u.reshape(1))
        assert int(tok) == want and float(prob) == pytest.approx(float(p[want]), rel=1e-6)
    assert float(p[7]) < 1e-14


def test_sample_categorical_never_draws_a_removed_token():
    logits = torch.full((20_000, 600), float("-inf"))
    logits[:, [3, 299, 300, 599]] = torch.tensor([0.0, -1.0, -2.0, 0.5])
    draws = sample_categorical(logits, torch.Generator().manual_seed(4))
    counts = torch.bincount(draws, minlength=600)
    assert set(counts.nonzero().flatten().tolist()) == {3, 299, 300, 599}
    assert chi2_pvalue(counts[[3, 299, 300, 599]], torch.tensor([0.0, -1.0, -2.0, 0.5]).softmax(0)) > 1e-4


def test_greedy_draws_no_random_numbers():
    noise, one = RowNoise(5), torch.ones(2, 3, dtype=torch.bool)
    tok, conf = sample_tokens(torch.randn(10, 50), temperature=0, top_k=3, noise=noise)
    assert torch.equal(noise.uniform(one), RowNoise(5).uniform(one))  # the streams are untouched
    assert conf.dtype == torch.float64 and (conf > 0).all() and (conf <= 1).all()


@pytest.mark.slow
def test_compiled_step_gives_identical_tokens():
    """torch.compile of the step math (on by default on CUDA): same seed, same tokens."""
    step = compiled_step(True, "cpu")
    torch.manual_seed(0)
    rows = torch.randn(64, 300)
    for s in (dict(), dict(temperature=0.7, top_k=9)):
        a = sample_tokens(rows, noise=RowNoise(6), **s)
        b = sample_tokens(rows, noise=RowNoise(6), step=step, **s)
        assert torch.equal(a[0], b[0]) and torch.allclose(a[1], b[1])
    model = FixedDist()
    x = torch.full((4, 16), MASK)
    outs = [MaskedSampler(model, MASK, steps=4, compile=c).generate(x, noise=RowNoise(7))
            for c in (False, True)]
    assert torch.equal(outs[0], outs[1])
