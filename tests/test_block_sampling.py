"""Block-diffusion sampling: the exact prefix cache equals the uncached path; blocks in order; EOS stops."""

import pytest
import torch

from sunfish_lib.config import DiffusionConfig, ModelConfig
from sunfish_lib.diffusion.block import BlockDiffusion, block_causal_mask
from sunfish_lib.model.layers import PrefixCache
from sunfish_lib.model import Backbone
from sunfish_lib.sampling.block import BlockSampler

V, MASK, EOS, L, K = 48, 47, 0, 16, 4


def model_of(seed: int = 0) -> Backbone:
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=V, n_layers=2, n_heads=2, d_model=32, max_seq_len=L, init_std=0.3).resolve("block")
    return Backbone(cfg).eval()


def start(B: int = 2, prompt: int = 2) -> torch.Tensor:
    x = torch.full((B, L), MASK)
    x[:, :prompt] = torch.arange(1, prompt + 1)
    return x


def test_cached_block_pass_equals_the_training_forward():
    """The sampler's cached pass of noisy block b = the [z, x0] training forward's block b (same weights)."""
    model = model_of()
    x0 = torch.randint(1, MASK, (2, L), generator=torch.Generator().manual_seed(0))
    z = x0.masked_fill(torch.rand(x0.shape, generator=torch.Generator().manual_seed(1)) < 0.6, MASK)
    with torch.no_grad():
        train = BlockDiffusion(DiffusionConfig(objective="block", block_size=K), MASK).noisy_hidden(model, z, x0)
        cache = PrefixCache(len(model.blocks))
        cache.append = True
        model.encode(x0[:, :2 * K], kv_cache=cache, attn_mask=block_causal_mask(2 * K, K, "cpu"))
        cache.append = False
        h = model.encode(z[:, 2 * K:3 * K], kv_cache=cache)  # block 2 sees clean blocks 0, 1 and itself
    assert cache.length == 2 * K  # the noisy pass left the cache as it was
    assert torch.allclose(h, train[:, 2 * K:3 * K], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["ancestral", "low_confidence", "threshold", "random"])
def test_cached_sampling_equals_uncached_token_for_token_at_temperature_zero(kind):
    model = model_of()
    outs, widths, encode = {}, [], model.encode
    for cached in (True, False):
        s = BlockSampler(model, MASK, kind=kind, steps=L, temperature=0.0, block_size=K, exact_cache=cached,
                         exclude_ids=[EOS])
        if not cached:  # the positions each uncached pass runs
            model.encode = lambda x, **kw: widths.append(x.shape[1]) or encode(x, **kw)
        outs[cached] = (s(start(), seed=3), s.positions)
    (a, pos_a), (b, pos_b) = outs[True], outs[False]
    assert torch.equal(a.ids, b.ids)
    assert not (a.ids == MASK).any() and torch.equal(a.ids[:, :2], start()[:, :2])
    noisy = b.forward_passes  # uncached: one pass per denoising step over prefix + block
    assert a.forward_passes == noisy + (L // K - 1)  # cached: the same steps + one pass per finished block
    assert pos_a == 2 * (K * noisy + (L - K))  # each step runs the block only; clean blocks run once
    assert set(widths) == {K, 2 * K, 3 * K, 4 * K}  # the uncached path reruns the prefix at every step
    if kind != "ancestral":  # a step costs a pass whatever the draws (ancestral's unmasking coins skip some)
        assert pos_b > 2 * pos_a


def test_blocks_fill_left_to_right_and_each_block_is_finished_before_the_next():
    model = model_of()
    seen = []
    s = BlockSampler(model, MASK, kind="low_confidence", steps=L, temperature=0.0, block_size=K, exclude_ids=[EOS])
    s(start(1, 0), seed=0, callback=lambda i, n, x: seen.append((x[0] == MASK).clone()))
    assert len(seen) == L  # one token per step
    for state in seen:
        masked_blocks = state.view(-1, K).any(1)
        first = int(masked_blocks.float().argmax()) if masked_blocks.any() else L // K
        assert not masked_blocks[:first].any() and masked_blocks[first:].all()  # a prefix of blocks is done


def test_generation_stops_after_the_block_that_emits_eos():
    model = model_of()
    bias = torch.zeros(V)
    bias[EOS] = 50.0  # make EOS the model's favourite token everywhere
    head = model.logits
    model.logits = lambda h: head(h) + bias
    s = BlockSampler(model, MASK, kind="low_confidence", steps=L, temperature=0.0, block_size=K, eos_id=EOS)
    out = s(start(2, 2), seed=0)
    assert (out.ids[:, K:] == EOS).all()  # the rest filled with EOS, never generated
    assert out.forward_passes <= K  # one block of steps, not four


def test_a_block_run_samples_through_the_session_with_a_whole_row_trajectory(tmp_path):
    from sunfish_lib.sampling.session import load_checkpoint, sample
    from tests.sampling_helpers import make_run

    loaded = load_checkpoint(make_run(tmp_path / "run", "block", block_size=4))
    gen = sample(loaded, mode="uncond", num_samples=2, length=10, steps=10, seed=0, record=True,
                 sampler="low_confidence")
    assert gen.ids.shape == (2, 10) and not (gen.ids == loaded.tokenizer.mask_token_id).any()
    masked = gen.trajectory.stack("masked")  # (steps, B, T): whole rows at every step
    # 3 blocks (4, 4, 2 columns), steps 4 + 3 + 3: the last block's 2 masks need only 2 of its 3
    assert masked.shape == (9, 2, 10) and masked.sum((1, 2)).tolist() == [18, 16, 14, 12, 8, 6, 4, 2, 0]
    again = sample(loaded, mode="uncond", num_samples=2, length=10, steps=10, seed=0, sampler="low_confidence")
    assert torch.equal(gen.ids, again.ids)  # recording changes nothing


@pytest.mark.parametrize("kind", ["low_confidence", "ancestral"])
def test_kept_shift_cached_equals_uncached(kind):
    model = model_of(1)
    ids = []
    for cached in (True, False):
        s = BlockSampler(model, MASK, kind=kind, steps=L, temperature=0.0, block_size=K, exact_cache=cached,
                         exclude_ids=[EOS], shift_logits=True)
        ids.append(s(start(2, 3), seed=1).ids)
    assert torch.equal(ids[0], ids[1]) and not (ids[0] == MASK).any()
