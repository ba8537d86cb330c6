"""What the samplers promise: greedy is deterministic, semi-AR blocks, untempered confidence, the schedule's time,
no special tokens, classifier-free guidance, self-conditioning, and the vocabulary head only where a token is chosen.
"""

import pytest
import torch
from torch import nn

from sunfish_lib.config import DiffusionConfig, ModelConfig
from sunfish_lib.diffusion.continuous import ContinuousDiffusion
from sunfish_lib.errors import SunfishError
from sunfish_lib.model import Backbone
from sunfish_lib.sampling import ContinuousSampler, MaskedSampler, Trajectory, sample_ar
from sunfish_lib.diffusion.rounding import nearest_tokens
from sunfish_lib.sampling.noise import RowNoise

VOCAB, MASK, PAD, EOS = 50, 49, 48, 47


def tiny_masked(seed=0, **kw) -> Backbone:
    torch.manual_seed(seed)
    cfg = dict(vocab_size=VOCAB, n_layers=2, n_heads=2, d_model=32, max_seq_len=64, time_conditioning=False, causal=False)
    return Backbone(ModelConfig(**{**cfg, **kw}).resolve("masked")).eval()


class FixedDist(nn.Module):
    """Context-free model: every position predicts softmax(logits); records every t it is given."""

    def __init__(self, probs, time_conditioning=False):
        super().__init__()
        self.logp = torch.log(torch.as_tensor(probs, dtype=torch.float64).clamp_min(1e-30)).float()
        self.cfg = ModelConfig(vocab_size=len(self.logp), time_conditioning=time_conditioning)
        self.times, self.batches = [], []

    def forward(self, x, t=None, **kw):
        self.times.append(None if t is None else t.clone())
        self.batches.append(x.shape[0])
        return self.logp.expand(*x.shape, -1).clone()


def spread():
    """A context-free law with its mode at token 0 and mass everywhere (specials included)."""
    p = torch.full((VOCAB,), 1.0)
    p[0] = 5.0
    return p / p.sum()


class HeadCounter:
    """Counts the rows a backbone's vocabulary head is asked for."""

    def __init__(self, model):
        self.rows = []
        real = model.logits
        model.logits = lambda h: self.rows.append(h.shape[:-1].numel()) or real(h)


# -- #14 item 2: greedy is argmax for every sampler; top-k/top-p whatever the temperature ---------------

@pytest.mark.parametrize("kind", ["ancestral", "low_confidence", "threshold", "random"])
def test_temperature_0_top_k_1_is_identical_across_seeds(kind):
    """ancestral used to ignore temperature 0 and top_k there (different outputs per seed)."""
    x = torch.full((3, 12), MASK)
    model = FixedDist(spread())
    outs = [MaskedSampler(model, MASK, kind=kind, steps=4, temperature=0, top_k=1).generate(
        x, noise=RowNoise(seed)) for seed in (0, 1, 2)]
    assert all(torch.equal(o, outs[0]) for o in outs) and (outs[0] == 0).all()
    real = tiny_masked()
    if kind in ("low_confidence", "threshold"):  # deterministic in positions too: same output on a real model
        outs = [MaskedSampler(real, MASK, kind=kind, steps=4, temperature=0, top_k=1).generate(
            x, noise=RowNoise(seed)) for seed in (0, 1)]
        assert torch.equal(outs[0], outs[1])


def test_ar_greedy_identical_across_seeds_and_tempered_top_k_stays_in_top_k():
    torch.manual_seed(0)
    m = Backbone(ModelConfig(vocab_size=VOCAB, n_layers=1, n_heads=2, d_model=16, max_seq_len=32, causal=True,
                             time_conditioning=False).resolve("masked")).eval()
    prompt = torch.randint(0, 40, (4, 2))
    a, b = (sample_ar(m, prompt, 8, temperature=0, top_k=1, noise=RowNoise(s)) for s in (0, 1))
    assert torch.equal(a, b)


@pytest.mark.parametrize("kind", ["ancestral", "low_confidence", "random", "threshold"])
def test_tempered_top_k_never_emits_outside_the_top_k(kind):
    p = torch.linspace(1.0, 0.1, VOCAB)
    out = MaskedSampler(FixedDist(p / p.sum()), MASK, kind=kind, steps=6, temperature=3.0, top_k=3).generate(
        torch.full((40, 12), MASK), noise=RowNoise(0))
    assert set(out.unique().tolist()) == {0, 1, 2}


# -- #14 item 3: semi-AR blocks from the first [MASK], no step dropped --------------------------------

def test_semi_ar_blocks_start_at_the_first_mask_one_token_per_pass():
    """5-token prompt, 16 masks, block 8, 16 steps: LLaDA makes 16 passes of 1 token (the old code made 13)."""
    x = torch.full((2, 21), MASK)
    x[:, :5] = torch.arange(5)
    traj = Trajectory()
    s = MaskedSampler(tiny_masked(), MASK, kind="low_confidence", steps=16, block_length=8)
    out = s.generate(x, noise=RowNoise(0), trajectory=traj)
    assert s.forward_passes == 16 and (out != MASK).all()
    committed = traj.stack("committed").sum(-1)  # (steps, B)
    assert committed.tolist() == [[1, 1]] * 16
    masked = traj.stack("masked")
    assert not masked[7][:, 5:13].any() and masked[7][:, 13:].all()  # block 1 untouched until block 0 is done


def test_semi_ar_blocks_follow_each_rows_own_prompt():
    """Rows with prompts of 3 and 6 tokens (and context after the span) still take 16 passes of 1 token."""
    x = torch.full((2, 22), MASK)
    x[0, :3], x[0, 19:] = 1, 2
    x[1, :6] = 1
    traj = Trajectory()
    s = MaskedSampler(tiny_masked(), MASK, kind="low_confidence", steps=16, block_length=8)
    s.generate(x, noise=RowNoise(0), trajectory=traj)
    assert s.forward_passes == 16 and traj.stack("committed").sum(-1).tolist() == [[1, 1]] * 16
    after_block_0 = traj.stack("masked")[7]
    assert not after_block_0[0, 3:11].any() and after_block_0[0, 11:19].all()
    assert not after_block_0[1, 6:14].any() and after_block_0[1, 14:].all()


def test_semi_ar_spreads_leftover_steps_and_rejects_too_few():
    x = torch.full((1, 21), MASK)
    x[:, :5] = 1
    s = MaskedSampler(tiny_masked(), MASK, kind="low_confidence", steps=15, block_length=8)
    s.generate(x, noise=RowNoise(0))
    assert s.forward_passes == 15  # 8 + 7 steps: the remainder is spread, never dropped
    with pytest.raises(SunfishError, match=r"steps=1 is fewer than the 2 semi-autoregressive blocks"):
        MaskedSampler(tiny_masked(), MASK, steps=1, block_length=8).generate(x)


# -- #14 item 8: confidence, time, [PAD], CFG, self-conditioning ---------------------------------------

def test_threshold_confidence_is_the_untempered_softmax():
    """p(top) = 0.6 < 0.7 untempered; at temperature 0.5 the tempered p would be 0.86 and commit all at once."""
    p = torch.tensor([0.6] + [0.4 / (VOCAB - 1)] * (VOCAB - 1))
    s = MaskedSampler(FixedDist(p), MASK, kind="threshold", threshold=0.7, temperature=0.5)
    s.generate(torch.full((2, 10), MASK), noise=RowNoise(0))
    assert s.forward_passes == 10  # one commit per pass: no untempered confidence reaches 0.7


@pytest.mark.parametrize("kind", ["ancestral", "low_confidence", "threshold"])
def test_time_conditioned_model_gets_the_schedule_time(kind):
    """A 12-token prompt and 4 masks start at t = 1 (the old code passed the row's masked fraction, 0.25)."""
    model = FixedDist(spread(), time_conditioning=True)
    x = torch.full((2, 16), MASK)
    x[:, :12] = 3
    # seed 1: ancestral's first step unmasks a position (a step that unmasks none runs no pass)
    MaskedSampler(model, MASK, kind=kind, steps=4).generate(x, noise=RowNoise(1))
    assert torch.allclose(model.times[0], torch.ones(2))
    if kind == "low_confidence":  # one token per step: t = 1, 3/4, 1/2, 1/4
        assert [round(float(t[0]), 3) for t in model.times] == [1.0, 0.75, 0.5, 0.25]


@pytest.mark.parametrize("kind", ["ancestral", "low_confidence", "random", "threshold"])
def test_pad_and_eos_are_never_emitted(kind):
    p = torch.full((VOCAB,), 0.001)
    p[[PAD, EOS, MASK]] = 1.0  # the specials are the model's favourites
    out = MaskedSampler(FixedDist(p / p.sum()), MASK, kind=kind, steps=4, exclude_ids=[PAD, EOS]).generate(
        torch.full((8, 12), MASK), noise=RowNoise(0))
    assert not torch.isin(out, torch.tensor([PAD, EOS, MASK])).any()


def test_cfg_runs_one_batched_forward_and_skips_without_prompt():
    model = FixedDist(spread())
    x = torch.full((3, 8), MASK)
    s = MaskedSampler(model, MASK, steps=4, cfg_scale=1.5)
    s.generate(x, noise=RowNoise(0))
    assert model.batches == [3] * 4  # no prompt: the unconditional pass is the conditional one
    x[:, :2] = 5
    model.batches.clear()
    s.generate(x, noise=RowNoise(0))
    assert model.batches == [6] * 4 and s.forward_passes == 8  # cond + uncond as one batch of 2B


def test_cfg_matches_the_two_pass_formula():
    model = tiny_masked()
    x = torch.full((2, 10), MASK)
    x[:, :3] = torch.tensor([4, 5, 6])
    s = MaskedSampler(model, MASK, steps=1, cfg_scale=2.0, temperature=0)
    out = s.generate(x)
    with torch.no_grad():
        cond, un = model(x).double(), model(x.masked_fill(x != MASK, MASK)).double()
    ref = (un + 3.0 * (cond - un))
    ref[..., MASK] = float("-inf")
    assert torch.equal(out[:, 3:], ref.argmax(-1)[:, 3:])


def test_self_conditioning_at_sampling_feeds_the_unclamped_estimate():
    torch.manual_seed(0)
    model = Backbone(ModelConfig(vocab_size=20, n_layers=1, n_heads=2, d_model=16, embed_dim=8, max_seq_len=16,
                                 time_conditioning=True, causal=False, self_cond_input=True,
                                 time_freq_dim=16).resolve("continuous")).eval()
    obj = ContinuousDiffusion(DiffusionConfig(num_timesteps=20, self_conditioning=True))
    seen = []
    real = model.encode
    model.encode = lambda *a, **k: seen.append(k.get("self_cond")) or real(*a, **k)
    ContinuousSampler(model, obj, steps=4, clamp=True).sample(2, 6, noise=RowNoise(1))
    table = obj.embedding_table(model)
    for sc in seen[1:]:
        _, dist = nearest_tokens(sc, table, "euclidean")
        assert dist.min() > 1e-3  # the clamped x0 would sit exactly on an embedding


# -- #19: no vocabulary work at committed positions ---------------------------------------------------

@pytest.mark.parametrize("kind", ["low_confidence", "random", "ancestral"])
def test_vocabulary_head_runs_only_where_a_decision_is_made(kind):
    model = tiny_masked()
    heads = HeadCounter(model)
    x = torch.full((2, 16), MASK)
    x[:, :4] = 7
    MaskedSampler(model, MASK, kind=kind, steps=6).generate(x, noise=RowNoise(0))
    if kind == "low_confidence":  # every still-masked position, shrinking: 24 -> ... never the 32 of the batch
        assert heads.rows[0] == 24 and all(b < a for a, b in zip(heads.rows, heads.rows[1:]))
    else:  # only the positions that commit: 24 in all
        assert sum(heads.rows) == 24


# -- #13 part 4: no [MASK], [PAD] or EOS inside generated text unless sample.allow_eos ---------------

@pytest.fixture(scope="module")
def tok():
    from sunfish_lib.data import get_tokenizer

    return get_tokenizer("bpe", 4096)


def _favour_specials(model, objective: str, tok) -> None:
    """Make the specials the model's first choice: +50 on their logits, or x0_hat = EOS's embedding."""
    ids = [tok.mask_token_id, tok.pad_token_id, tok.eos_token_id]
    if objective == "continuous":
        eos_row = ContinuousDiffusion(DiffusionConfig()).embedding_table(model)[tok.eos_token_id].detach()
        model.to_embedding_space = lambda h: eos_row.expand(*h.shape[:-1], -1).clone()
        return
    real = model.logits

    def logits(h):
        out = real(h)
        out[..., ids] += 50.0
        return out
    model.logits = logits


@pytest.mark.parametrize("objective,sampler", [("masked", "ancestral"), ("masked", "low_confidence"),
                                               ("masked", "random"), ("masked", "threshold"),
                                               ("continuous", "ddpm"), ("continuous", "ddim"), ("ar", "ar")])
def test_samples_and_infills_never_contain_special_tokens(tok, objective, sampler):
    from sunfish_lib.sampling.session import Loaded, sample
    from tests.train_helpers import small_config

    cfg = small_config(objective, sampler=sampler, steps=4)
    torch.manual_seed(0)
    model = Backbone.from_config(cfg).eval()
    _favour_specials(model, objective, tok)
    specials = torch.tensor([tok.mask_token_id, tok.pad_token_id, tok.eos_token_id])
    modes = [("uncond", "ROMEO:")] + ([] if objective == "ar" else [("infill", "To be [MASK] not to be")])
    for mode, prompt in modes:
        g = sample(Loaded(model, cfg, tok), mode=mode, prompt=prompt, num_samples=3, length=8, mask_length=4, seed=0)
        made = g.start == tok.mask_token_id
        assert made.any() and not torch.isin(g.ids[made], specials).any()
        assert (g.ids[made] < len(tok)).all()
    if objective != "continuous":  # asked for (variable-length output): EOS may appear
        g = sample(Loaded(model, cfg, tok), mode="uncond", num_samples=3, length=8, seed=0, allow_eos=True)
        assert (g.ids == tok.eos_token_id).any() and not (g.ids == tok.mask_token_id).any()
