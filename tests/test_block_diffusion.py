"""Block diffusion (BD3-LM): its exact limits (one block = masked, block size 1 = AR), no peeking, the config."""

import pytest
import torch

from sunfish_lib.config import DiffusionConfig, ModelConfig, get_config
from sunfish_lib.diffusion import BlockDiffusion, MaskedDiffusion, build_objective
from sunfish_lib.diffusion.block import bd3_dense_mask
from sunfish_lib.errors import ConfigError
from sunfish_lib.model import Backbone

V, MASK, L = 48, 47, 16


def model_of(seed: int = 0, std: float = 0.3) -> Backbone:
    """A tiny bidirectional backbone with weights large enough that logits differ from position to position."""
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=V, n_layers=2, n_heads=2, d_model=32, max_seq_len=L, init_std=std).resolve("block")
    return Backbone(cfg).eval()


def tokens(B: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, MASK, (B, L), generator=torch.Generator().manual_seed(seed))


def block_objective(K: int, **kw) -> BlockDiffusion:
    return BlockDiffusion(DiffusionConfig(objective="block", block_size=K, mask_schedule="linear", **kw), MASK)


def test_the_mask_is_bd3lms_three_parts():
    """[z, x0] at L=4, K=2: z's block sees itself and the clean blocks before; x0 is block-causal and never sees z."""
    m = bd3_dense_mask(4, 2, "cpu")[0, 0].int()
    expect = torch.tensor([
        # z0 z1 z2 z3 x0 x1 x2 x3
        [1, 1, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0, 0],
        [0, 0, 1, 1, 1, 1, 0, 0],
        [0, 0, 1, 1, 1, 1, 0, 0],
        [0, 0, 0, 0, 1, 1, 0, 0],
        [0, 0, 0, 0, 1, 1, 0, 0],
        [0, 0, 0, 0, 1, 1, 1, 1],
        [0, 0, 0, 0, 1, 1, 1, 1]])
    assert torch.equal(m, expect)


@pytest.mark.parametrize("t", [0.3, 0.8, 1.0])
def test_one_block_is_the_masked_objective_at_the_same_t_and_masks(t):
    model, x = model_of(), tokens(6)
    tt = torch.full((6,), t)
    masked = MaskedDiffusion(DiffusionConfig(objective="masked", mask_schedule="linear"), MASK)
    a = masked.loss_at(model, {"input_ids": x}, tt, torch.Generator().manual_seed(5))
    b = block_objective(L).loss_at(model, {"input_ids": x}, tt, torch.Generator().manual_seed(5))
    assert float(a["mask_fraction"]) == float(b["mask_fraction"]) > 0
    assert abs(float(a["loss"]) - float(b["loss"])) <= 1e-5
    assert torch.allclose(a["elbo_per_seq"], b["elbo_per_seq"], atol=1e-5, rtol=0)


def ar_nll_by_prefixes(model: Backbone, x: torch.Tensor, per_position: bool = False) -> torch.Tensor:
    """-log p(x_i | x_<i) per row (B,), nats/token, one plain causal pass per position over [x_<i, MASK]:
    the autoregressive model the block-1 weights define, computed without the [z, x0] machinery."""
    B, total, each = x.shape[0], torch.zeros(x.shape[0], dtype=torch.float64), []
    for i in range(x.shape[1]):
        inp = torch.cat([x[:, :i], torch.full((B, 1), MASK)], 1)  # (B, i + 1)
        causal = torch.ones(i + 1, i + 1, dtype=torch.bool).tril()[None, None]
        logits = model(inp, attn_mask=causal)[:, -1].double()  # (B, V)
        logits[:, MASK] = float("-inf")
        each.append(torch.logsumexp(logits, -1) - logits.gather(-1, x[:, i:i + 1]).squeeze(-1))
        total += each[-1]
    return torch.stack(each, 1) if per_position else total / x.shape[1]


def test_block_size_one_is_ar_exactly_at_t_one():
    model, x = model_of(), tokens(4)
    out = block_objective(1).loss_at(model, {"input_ids": x}, torch.ones(4))
    assert float(out["mask_fraction"]) == 1.0
    ar = ar_nll_by_prefixes(model, x)
    assert torch.allclose(out["elbo_per_seq"].double(), ar, atol=1e-5, rtol=0)
    assert float(ar.mean()) > 2.0  # a real number: near log(47) for weak weights, not a trivial zero


def test_block_size_one_in_expectation_is_ar_within_3_se():
    """Random t per token (the training loss): w(t) P(masked | t) = 1, so the mean is the AR NLL."""
    model, x = model_of(), tokens(1)
    obj = block_objective(1)
    batch = {"input_ids": x.expand(512, -1)}  # 512 independent draws of the same sequence
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        draws = torch.cat([obj.loss(model, batch, g)["elbo_per_seq"].double() for _ in range(2)])
    mean, se = float(draws.mean()), float(draws.std() / len(draws) ** 0.5)
    ar = float(ar_nll_by_prefixes(model, x))
    assert se < 0.1 * ar  # the test has power: SE well under the value
    assert abs(mean - ar) < 3 * se, (mean, ar, se)


def test_a_later_block_never_moves_an_earlier_blocks_logits():
    model, K = model_of(), 4
    obj = block_objective(K)
    x = tokens(3)
    z = x.masked_fill(torch.rand(x.shape, generator=torch.Generator().manual_seed(2)) < 0.5, MASK)
    x2, z2 = x.clone(), z.clone()
    x2[:, 2 * K:] = (x[:, 2 * K:] + 7) % MASK  # blocks 2 and 3 change, clean and noisy alike
    z2[:, 2 * K:] = torch.where(z[:, 2 * K:] == MASK, MASK, x2[:, 2 * K:])
    z2[:, 3 * K] = MASK if z[0, 3 * K] != MASK else x2[0, 3 * K]  # and a mask moves inside a later block
    with torch.no_grad():
        h1, h2 = obj.noisy_hidden(model, z, x), obj.noisy_hidden(model, z2, x2)
    assert torch.equal(h1[:, :2 * K], h2[:, :2 * K])  # bit for bit
    assert not torch.allclose(h1[:, 2 * K:], h2[:, 2 * K:], atol=1e-3)  # the later blocks did see the change


def test_flex_attention_computes_the_dense_masks_function():
    model, obj = model_of(), block_objective(4)
    x = tokens(2)
    z = x.masked_fill(torch.rand(x.shape, generator=torch.Generator().manual_seed(3)) < 0.5, MASK)
    with torch.no_grad():
        dense = obj.noisy_hidden(model, z, x)
        model.attention_kernel = "flex"
        flex = obj.noisy_hidden(model, z, x)
    assert torch.allclose(dense, flex, atol=1e-5, rtol=0)


def test_padding_keys_are_never_attended():
    """A padded tail (attention_mask 0) leaves the real tokens' states as without it."""
    model, obj = model_of(), block_objective(4)
    x = tokens(1)
    z = x.masked_fill(torch.arange(L) % 3 == 0, MASK)
    am = (torch.arange(L) < 8).long()[None]
    junk_x, junk_z = x.clone(), z.clone()
    junk_x[:, 8:], junk_z[:, 8:] = 5, MASK
    with torch.no_grad():
        a = obj.noisy_hidden(model, z, x, am)[:, :8]
        b = obj.noisy_hidden(model, junk_z, junk_x, am)[:, :8]
    assert torch.equal(a, b)


def test_clipped_schedule_draws_block_times_inside_the_clip_and_evaluation_does_not():
    obj = block_objective(4, t_clip=(0.3, 0.8))
    t = obj.block_times(64, L, generator=torch.Generator().manual_seed(0))
    assert t.shape == (64, 4) and float(t.min()) >= 0.3 and float(t.max()) <= 0.8
    assert float(t.std()) > 0.1  # spread across blocks and rows, not one t per row
    full = obj.block_times(64, L, generator=torch.Generator().manual_seed(0), clip=False)
    assert float(full.min()) < 0.05 and float(full.max()) > 0.95


def test_sequence_nats_and_continuation_score_are_finite_bounds_above_the_ar_limit():
    model = model_of()
    x = tokens(2)
    obj = block_objective(4)
    nats = obj.sequence_nats(model, {"input_ids": x}, t_samples=4, generator=torch.Generator().manual_seed(0))
    assert nats.shape == (2,) and bool(torch.isfinite(nats).all()) and float(nats.min()) > 1.0
    score, greedy = obj.continuation_score(model, x[:1, :10], 5, draws=8, batch=4,
                                           generator=torch.Generator().manual_seed(0))
    assert score < 0 and isinstance(greedy, bool)


def test_block_size_one_scores_a_continuation_exactly_as_ar():
    """K = 1: every continuation block is one token, always masked, weight 1: the score is the AR log-likelihood."""
    model, x = model_of(), tokens(1)[:, :12]
    score, _ = block_objective(1).continuation_score(model, x, 5, draws=4, batch=2,
                                                     generator=torch.Generator().manual_seed(0))
    nll = ar_nll_by_prefixes(model, x, per_position=True)[0, -5:]  # (5,)
    assert abs(score + float(nll.sum())) < 1e-4


def test_config_rules():
    cfg = get_config("tiny", {"objective": "block", "block_size": 16, "t_clip": "0.3,0.8", "seq_len": 64})
    assert cfg.diffusion.t_clip == (0.3, 0.8) and cfg.sample.sampler == "ancestral"
    assert not cfg.resolved_model.causal and not cfg.resolved_model.time_conditioning
    obj = build_objective(cfg, mask_token_id=3)
    assert isinstance(obj, BlockDiffusion) and obj.kind == "ELBO upper bound"
    with pytest.raises(ConfigError, match=r"diffusion.block_size=5 does not divide data.seq_len=64; pick a divisor"):
        get_config("tiny", {"objective": "block", "block_size": 5, "seq_len": 64})
    with pytest.raises(ConfigError, match=r"diffusion.t_clip=\[0.8, 0.3\] must be \[low, high\]"):
        get_config("tiny", {"objective": "block", "t_clip": [0.8, 0.3]})
    with pytest.raises(ConfigError, match="model.time_conditioning=True does not combine with objective 'block'"):
        get_config("tiny", {"objective": "block", "model.time_conditioning": True})


def test_kept_shift_with_block_size_one_is_the_ar_parent_exactly():
    """shift_logits, K = 1: token i is scored by the clean block-causal stream at i - 1, i.e. the AR objective
    (no BOS) of the same weights on tokens 1..L-1, at t = 1; earlier blocks still never see later ones."""
    from sunfish_lib.diffusion import Autoregressive

    model, x = model_of(), tokens(3)
    obj = BlockDiffusion(DiffusionConfig(objective="block", block_size=1, shift_logits=True, mask_schedule="linear"),
                         MASK)
    z = torch.full_like(x, MASK)
    with torch.no_grad():
        h = obj.noisy_hidden(model, z, x)  # (B, L, d)
        logits = model.logits(h[:, 1:]).double()
        logits[..., MASK] = float("-inf")
        block_nll = torch.logsumexp(logits, -1) - logits.gather(-1, x[:, 1:, None]).squeeze(-1)  # (B, L-1)
        causal = torch.ones(L, L, dtype=torch.bool).tril()[None, None]
        ar_logits = model(x, attn_mask=causal)[:, :-1].double()  # the parent read causally: i-1 predicts i
        ar_logits[..., MASK] = float("-inf")
        ar_nll = torch.logsumexp(ar_logits, -1) - ar_logits.gather(-1, x[:, 1:, None]).squeeze(-1)
    assert torch.allclose(block_nll, ar_nll, atol=1e-5, rtol=0)
    assert Autoregressive().scored({"input_ids": x})[:, 1:].all()  # the same L-1 targets the bare AR scores
    x2 = x.clone()
    x2[:, 8:] = (x[:, 8:] + 3) % MASK
    with torch.no_grad():
        assert torch.equal(obj.noisy_hidden(model, z, x)[:, :9], obj.noisy_hidden(model, z, x2)[:, :9])


def test_convert_an_ar_run_to_block_keeps_the_parent_exactly_at_block_size_one(tmp_path):
    """`sunfish convert --objective block --block-size 1`: the converted model's scores are the parent's."""
    from sunfish_lib.convert import convert
    from sunfish_lib.io.export import load_for_inference
    from tests.sampling_helpers import make_run

    run = make_run(tmp_path / "ar", "ar")
    conv = convert(run, tmp_path / "block", objective="block", block_size=1)
    assert (conv.config.diffusion.objective, conv.config.diffusion.block_size) == ("block", 1)
    assert conv.config.diffusion.shift_logits and not conv.config.resolved_model.causal
    parent, _, tok = load_for_inference(run)
    child, cfg, _ = load_for_inference(tmp_path / "block")
    obj = build_objective(cfg, mask_token_id=tok.mask_token_id)
    x = torch.randint(5, 200, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        h = obj.noisy_hidden(child, torch.full_like(x, tok.mask_token_id), x)
        assert torch.allclose(child.logits(h[:, 1:]), parent(x)[:, :-1], atol=1e-4, rtol=0)
