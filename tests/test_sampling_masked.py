"""Masked-diffusion and AR samplers: fill every mask, keep prompts, float64 Gumbel, correct distributions."""

import math

import pytest
import torch
from torch import nn

from sunfish_lib.config import ModelConfig
from sunfish_lib.errors import SunfishError
from sunfish_lib.model import Backbone
from sunfish_lib.sampling import MaskedSampler, Trajectory, filter_logits, gumbel_noise, sample_ar, sample_categorical
from sunfish_lib.sampling.masked import _threshold_commit, _topk_commit, _transfer_schedule
from sunfish_lib.sampling.noise import RowNoise

VOCAB, MASK = 50, 49


def tiny_masked(seed=0) -> Backbone:
    torch.manual_seed(seed)
    return Backbone(ModelConfig(vocab_size=VOCAB, n_layers=2, n_heads=2, d_model=32, max_seq_len=64,
                                time_conditioning=False, causal=False).resolve("masked")).eval()


class FixedDist(nn.Module):
    """Context-free model: every position predicts the same distribution p over VOCAB."""

    def __init__(self, p):
        super().__init__()
        self.logp = torch.log(p)

    def forward(self, x, t=None, **kw):
        return self.logp.float().expand(*x.shape, -1).clone()


def _prompted(B=3, T=24):
    x = torch.full((B, T), MASK)
    x[:, :4] = torch.randint(0, 40, (B, 4))  # prefix prompt
    x[:, 12:14] = torch.randint(0, 40, (B, 2))  # context between two spans
    return x


def test_gumbel_is_float64_and_gumbel_distributed():
    g = gumbel_noise((200_000,), generator=torch.Generator().manual_seed(0))
    assert g.dtype == torch.float64
    assert g.mean().item() == pytest.approx(0.5772, abs=0.01)  # Euler-Mascheroni
    assert g.var().item() == pytest.approx(math.pi**2 / 6, rel=0.02)
    assert g.max().item() > 11  # fp32 uniforms cap at ~16.6 but also lose resolution near 1


def test_sample_categorical_matches_softmax():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    draws = sample_categorical(logits.expand(100_000, 4), torch.Generator().manual_seed(0))
    freq = torch.bincount(draws, minlength=4).double() / 100_000
    assert torch.allclose(freq, logits.double().softmax(0), atol=0.005)


def test_filters_top_k_top_p_temperature():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    assert torch.isinf(filter_logits(logits, top_k=2)[2:]).all() and torch.isfinite(filter_logits(logits, top_k=2)[:2]).all()
    kept = torch.isfinite(filter_logits(logits, top_p=0.75))
    assert kept.tolist() == [True, True, False, False]  # 0.5 < 0.75, 0.5+0.3 >= 0.75
    assert torch.isfinite(filter_logits(logits, top_p=0.01)).tolist() == [True, False, False, False]
    assert torch.allclose(filter_logits(logits, temperature=0.5), logits * 2)


def test_transfer_schedule_and_commit_rules():
    assert _transfer_schedule(torch.tensor([10, 7]), 4).tolist() == [[3, 3, 2, 2], [2, 2, 2, 1]]
    score = torch.tensor([[0.1, 0.95, float("-inf"), 0.3], [0.2, 0.5, 0.4, float("-inf")]], dtype=torch.float64)
    assert _topk_commit(score, torch.tensor([2, 1])).tolist() == [[False, True, False, True], [False, True, False, False]]
    assert _threshold_commit(score, 0.9).tolist() == [[False, True, False, False], [False, True, False, False]]


@pytest.mark.parametrize("kind,extra", [
    ("low_confidence", {}), ("random", {}), ("threshold", {}), ("ancestral", {}),
    ("low_confidence", {"block_length": 8}), ("threshold", {"block_length": 8, "threshold": 0.5}),
    ("low_confidence", {"temperature": 0.0}), ("ancestral", {"top_k": 5, "top_p": 0.9}),
    ("low_confidence", {"cfg_scale": 1.0}),
])
def test_every_sampler_fills_all_masks_keeps_prompt(kind, extra):
    model = tiny_masked()
    x = _prompted()
    sampler = MaskedSampler(model, MASK, kind=kind, steps=10, **extra)
    traj = Trajectory(sampler=kind)
    out = sampler.generate(x, noise=RowNoise(0), trajectory=traj)
    assert (out != MASK).all()
    given = x != MASK
    assert torch.equal(out[given], x[given])
    assert len(traj) >= 1 and torch.equal(traj.steps[-1]["tokens"], out)
    masks_left = traj.stack("masked").flatten(1).sum(1)
    assert (masks_left[1:] <= masks_left[:-1]).all() and masks_left[-1] == 0
    if kind in ("low_confidence", "random") and "block_length" not in extra:
        assert sampler.forward_passes == 10 * (2 if extra.get("cfg_scale") else 1)


def test_block_decoding_is_left_to_right():
    model = tiny_masked()
    x = torch.full((2, 24), MASK)
    traj = Trajectory()
    MaskedSampler(model, MASK, kind="low_confidence", steps=6, block_length=8).generate(x, trajectory=traj)
    masked = traj.stack("masked")  # (steps, B, T)
    # after the first 2 steps block 0 is done and blocks 1, 2 are untouched
    assert not masked[1][:, :8].any() and masked[1][:, 8:].all()
    assert not masked[3][:, :16].any() and masked[3][:, 16:].all()


def test_ancestral_marginal_matches_model_distribution():
    p = torch.tensor([0.6, 0.25, 0.1, 0.05] + [0.0] * (VOCAB - 4)).double()
    model = FixedDist(p.clamp_min(1e-30))
    x = torch.full((4000, 8), MASK)
    sampler = MaskedSampler(model, MASK, kind="ancestral", steps=16)
    out = sampler.generate(x, noise=RowNoise(0))
    freq = torch.bincount(out.flatten(), minlength=VOCAB)[:4].double() / out.numel()
    assert torch.allclose(freq, p[:4], atol=0.01)
    assert sampler.forward_passes <= 16  # ddpm_cache: steps that unmask nothing reuse the prediction


def test_ancestral_cache_saves_forward_passes_when_nothing_changes():
    p = torch.full((VOCAB,), 1.0 / (VOCAB - 1)).double()
    x = torch.full((1, 2), MASK)  # 2 tokens over 100 steps: most steps unmask nothing
    cached = MaskedSampler(FixedDist(p), MASK, kind="ancestral", steps=100)
    cached.generate(x, noise=RowNoise(0))
    uncached = MaskedSampler(FixedDist(p), MASK, kind="ancestral", steps=100, use_cache=False)
    uncached.generate(x, noise=RowNoise(0))
    assert cached.forward_passes <= 3 < uncached.forward_passes


def test_threshold_uses_fewer_passes_on_a_confident_model():
    p = torch.tensor([0.97] + [0.03 / (VOCAB - 1)] * (VOCAB - 1)).double()
    x = torch.full((2, 32), MASK)
    fixed = MaskedSampler(FixedDist(p), MASK, kind="low_confidence", steps=32, temperature=0)
    fixed.generate(x)
    fast = MaskedSampler(FixedDist(p), MASK, kind="threshold", steps=32, threshold=0.9, temperature=0)
    out = fast.generate(x)
    assert (out == 0).all() and fast.forward_passes == 1 and fixed.forward_passes == 32


def test_bad_sampler_settings():
    with pytest.raises(SunfishError, match="not a masked-diffusion sampler"):
        MaskedSampler(tiny_masked(), MASK, kind="ddim")
    with pytest.raises(SunfishError, match="steps=0 must be > 0"):
        MaskedSampler(tiny_masked(), MASK, steps=0)
    with pytest.raises(SunfishError, match="block_length applies"):
        MaskedSampler(tiny_masked(), MASK, kind="ancestral", block_length=4)


def test_ar_sampling_kv_cache_equals_full_recompute():
    torch.manual_seed(0)
    m = Backbone(ModelConfig(vocab_size=VOCAB, n_layers=2, n_heads=2, d_model=32, max_seq_len=64,
                             causal=True, time_conditioning=False).resolve("masked")).eval()
    prompt = torch.randint(0, VOCAB, (2, 3))
    out = sample_ar(m, prompt, 10, temperature=0)
    ref = prompt
    with torch.no_grad():
        for _ in range(10):
            ref = torch.cat([ref, m(ref)[:, -1].argmax(-1, keepdim=True)], 1)
    assert torch.equal(out, ref)
    traj = Trajectory()
    out2 = sample_ar(m, prompt, 5, noise=RowNoise(0), trajectory=traj)
    assert out2.shape == (2, 8) and len(traj) == 5 and torch.equal(out2[:, :3], prompt)


def test_trajectory_round_trip_and_bad_files(tmp_path):
    traj = Trajectory(sampler="low_confidence", meta={"prompt": "hi"})
    traj.record(0.5, tokens=torch.tensor([[1, 2]]), confidence=torch.tensor([[0.1, 0.9]]))
    traj.record(0.0, tokens=torch.tensor([[1, 3]]), confidence=torch.tensor([[0.2, 0.8]]))
    path = traj.save(tmp_path / "t.safetensors")
    back = Trajectory.load(path)
    assert back.sampler == "low_confidence" and back.meta == {"prompt": "hi"} and back.times == [0.5, 0.0]
    assert torch.equal(back.stack("tokens"), traj.stack("tokens"))
    (tmp_path / "bad.safetensors").write_bytes(path.read_bytes()[:40])
    with pytest.raises(SunfishError, match="corrupt or not a trajectory"):
        Trajectory.load(tmp_path / "bad.safetensors")
    with pytest.raises(SunfishError, match="does not exist"):
        Trajectory.load(tmp_path / "nope.safetensors")
