"""Masked diffusion and AR objectives: weights, SUBS, ELBO vs exact NLL on a toy joint distribution."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sunfish_lib.config import DiffusionConfig, ModelConfig, get_config
from sunfish_lib.diffusion import Autoregressive, MaskedDiffusion, MaskSchedule, build_objective, subs_logits
from sunfish_lib.diffusion.masked import elbo_closed_form_weight
from sunfish_lib.diffusion.timesteps import sample_t
from sunfish_lib.errors import ConfigError
from sunfish_lib.model import Backbone

V, L = 3, 3  # toy: 3 real tokens, sequences of 3
MASK = V  # [MASK] is id 3


class ToyConditional(nn.Module):
    """p(x_i | unmasked part of z) computed exactly from a known joint (or context-free marginals)."""

    def __init__(self, joint: torch.Tensor, ignore_context: bool = False):
        super().__init__()
        self.all_x = torch.tensor(list(itertools.product(range(V), repeat=L)))  # (N, L)
        self.p = joint  # (N,)
        self.ignore_context = ignore_context

    def encode(self, z, t=None, segment_ids=None, attention_mask=None):
        if self.ignore_context:
            z = torch.full_like(z, MASK)
        compat = ((z[:, None, :] == MASK) | (self.all_x[None] == z[:, None, :])).all(-1)  # (B, N)
        w = compat.double() * self.p[None]  # (B, N)
        onehot = F.one_hot(self.all_x, V).double()  # (N, L, V)
        marg = torch.einsum("bn,nlv->blv", w, onehot) / w.sum(1)[:, None, None]  # (B, L, V)
        logp = torch.log(marg.clamp_min(1e-300))
        return torch.cat([logp, torch.full_like(logp[..., :1], -1e30)], -1).float()  # (B, L, V+1)

    def logits(self, h):
        return h


def _dirichlet(g):
    x = -torch.log(torch.rand(V**L, generator=g, dtype=torch.double))  # Gamma(1) = Exp(1)
    return x / x.sum()


def _closed_form_elbo(model: ToyConditional, x: torch.Tensor) -> float:
    """sum_M B(|M|, L-|M|+1) sum_{i in M} -log p(x_i | x_{not M}) (linear schedule, exact integral)."""
    total = 0.0
    for k in range(1, L + 1):
        for M in itertools.combinations(range(L), k):
            z = x.clone()
            z[list(M)] = MASK
            logp = model.encode(z[None]).double()[0]  # (L, V+1)
            total += elbo_closed_form_weight(k, L) * sum(-logp[i, x[i]].item() for i in M)
    return total / L  # per token


def test_schedule_weights_hand_computed():
    lin, loglin = MaskSchedule("linear"), MaskSchedule("loglinear")
    t = torch.tensor([0.25, 0.5, 1.0])
    assert torch.allclose(lin.weight(t), torch.tensor([4.0, 2.0, 1.0]))
    assert torch.allclose(lin.p_mask(t), t)
    assert torch.allclose(loglin.p_mask(t), 0.999 * t)
    assert torch.allclose(loglin.weight(t), 1 / t)
    assert loglin.alpha(torch.tensor(1.0)).item() == pytest.approx(1e-3, rel=1e-4)
    # B(k, L-k+1): k=1, L=3 -> 0!2!/3! = 1/3
    assert elbo_closed_form_weight(1, 3) == pytest.approx(1 / 3)
    assert elbo_closed_form_weight(3, 3) == pytest.approx(2 / 6)


def test_elbo_weighting_hand_computed_uniform_model():
    """A model with uniform logits: loss = sum over masked of (1/t) log(V_real) / n_tokens."""
    obj = MaskedDiffusion(DiffusionConfig(objective="masked"), mask_token_id=MASK)

    class Uniform(nn.Module):
        def encode(self, z, **kw):
            return torch.zeros(*z.shape, V + 1)

        def logits(self, h):
            return h

    x0 = torch.randint(0, V, (2, 8))
    t = torch.tensor([0.5, 0.25])
    g = torch.Generator().manual_seed(3)
    out = obj.loss_at(Uniform(), {"input_ids": x0}, t, generator=g)
    g = torch.Generator().manual_seed(3)
    _, masked = obj.mask(x0, t, torch.ones_like(x0, dtype=torch.bool), g)
    expected = (masked.sum(1).double() * (1 / t.double()) * math.log(V)).sum() / 16
    assert out["loss"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert out["masked_ce"].item() == pytest.approx(math.log(V), rel=1e-6)


def test_masked_mean_loss_hand_computed_and_elbo_still_reported():
    """masked_loss=masked_mean: each row's mean CE over its masked tokens, averaged over rows with a mask;
    the per-sequence ELBO that evaluation reads is unchanged."""
    torch.manual_seed(0)
    logits = torch.randn(2, 8, V + 1)

    class Fixed(nn.Module):
        def encode(self, z, **kw):
            return logits

        def logits(self, h):
            return h

    x0 = torch.randint(0, V, (2, 8))
    batch = {"input_ids": x0}
    elbo = MaskedDiffusion(DiffusionConfig(objective="masked"), mask_token_id=MASK)
    mean = MaskedDiffusion(DiffusionConfig(objective="masked", masked_loss="masked_mean"), mask_token_id=MASK)
    t = torch.tensor([0.5, 0.25])
    outs = [o.loss_at(Fixed(), batch, t, generator=torch.Generator().manual_seed(3)) for o in (elbo, mean)]
    assert torch.allclose(outs[0]["elbo_per_seq"], outs[1]["elbo_per_seq"])
    _, masked = elbo.mask(x0, t, torch.ones_like(x0, dtype=torch.bool), torch.Generator().manual_seed(3))
    lp = logits.clone()
    lp[..., MASK] = float("-inf")
    ce = -torch.log_softmax(lp, -1).gather(-1, x0[..., None])[..., 0]  # (2, 8)
    g = torch.Generator().manual_seed(0)
    got = mean.loss(Fixed(), batch, generator=g)["loss"]
    g = torch.Generator().manual_seed(0)
    t2 = sample_t(2, t_min=mean.cfg.t_min, low_discrepancy=True, generator=g)
    _, m2 = mean.mask(x0, t2, torch.ones_like(x0, dtype=torch.bool), g)
    want = torch.stack([ce[b][m2[b]].mean() for b in range(2) if m2[b].any()]).mean()
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
    assert got.item() > 0
    with pytest.raises(ConfigError, match="masked_loss"):
        get_config("tiny", {"objective": "masked", "masked_loss": "mean"})


@pytest.mark.parametrize("ignore_context", [False, True])
def test_masked_elbo_bounds_exact_nll_toy(ignore_context):
    joint = _dirichlet(torch.Generator().manual_seed(0))
    model = ToyConditional(joint, ignore_context=ignore_context)
    obj = MaskedDiffusion(DiffusionConfig(objective="masked", t_min=1e-6), mask_token_id=MASK)
    x = model.all_x[int(torch.argmax(joint))]  # a likely sequence
    nll = -math.log(joint[int(torch.argmax(joint))].item()) / L  # exact, per token
    closed = _closed_form_elbo(model, x)
    if ignore_context:
        assert closed > nll + 1e-3  # a worse model: strictly above the NLL
    else:
        assert closed == pytest.approx(nll, abs=1e-6)  # exact conditionals: equality case (fp32 logits)
    n = 20000
    g = torch.Generator().manual_seed(1)
    t = sample_t(n, t_min=1e-6, generator=g)
    est = obj.loss_at(model, {"input_ids": x[None].expand(n, L)}, t, generator=g)["elbo_per_seq"].double()
    mean, se = est.mean().item(), est.std().item() / math.sqrt(n)
    assert abs(mean - closed) < 4 * se + 1e-4, (mean, closed, se)
    assert mean > nll - 4 * se


def test_subs_puts_no_mass_on_the_never_ids_and_leaves_the_rest():
    logits = torch.randn(7, 6)
    out = subs_logits(logits.clone(), [5, 2])
    assert torch.isneginf(out[:, [5, 2]]).all()
    assert torch.equal(out[:, [0, 1, 3, 4]], logits[:, [0, 1, 3, 4]])
    assert torch.allclose(out.softmax(-1).sum(-1), torch.ones(7))


def test_the_masked_objective_never_predicts_mask():
    """SUBS inside the loss: the logits at masked positions give [MASK] no mass."""
    cfg = get_config("smoke", objective="masked", sampler="ancestral")
    model = Backbone.from_config(cfg).eval()
    obj = build_objective(cfg, mask_token_id=cfg.model.vocab_size - 1)
    x0 = torch.randint(0, cfg.model.vocab_size - 1, (2, 16), generator=torch.Generator().manual_seed(0))
    z, masked = obj.mask(x0, torch.tensor([0.5, 0.9]), torch.ones_like(x0, dtype=torch.bool))
    logits = obj.masked_logits(model, z, None, {"input_ids": x0}, masked)
    assert logits.shape == (int(masked.sum()), cfg.model.vocab_size)
    assert torch.isneginf(logits[:, obj.mask_id]).all() and torch.isfinite(logits[:, :obj.mask_id]).all()


def test_masking_rate_and_padding_excluded():
    obj = MaskedDiffusion(DiffusionConfig(objective="masked"), mask_token_id=99)
    x0 = torch.randint(0, 50, (4, 2000))
    valid = torch.ones_like(x0, dtype=torch.bool)
    valid[:, 1500:] = False
    z, masked = obj.mask(x0, torch.tensor([0.1, 0.4, 0.7, 1.0]), valid, torch.Generator().manual_seed(0))
    rates = masked[:, :1500].float().mean(1)
    assert torch.allclose(rates, torch.tensor([0.1, 0.4, 0.7, 1.0]), atol=0.04)
    assert not masked[:, 1500:].any()
    assert torch.equal(z[~masked], x0[~masked]) and (z[masked] == 99).all()


def test_low_discrepancy_t_is_stratified():
    t = sample_t(8, t_min=0.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.floor(t * 8), torch.arange(8).float())
    t2 = sample_t(1000, t_min=1e-3, low_discrepancy=False, generator=torch.Generator().manual_seed(0))
    assert t2.min() >= 1e-3 and t2.max() < 1


def test_masked_loss_trains_on_backbone():
    torch.manual_seed(0)
    # learned positions: here the absolute position alone names each token, which rotary positions (relative) cannot see
    cfg = get_config("tiny", {"objective": "masked", "sampler": "low_confidence", "model.n_layers": 2,
                              "model.vocab_size": 300, "bpe_vocab_size": 260, "pos_encoding": "learned"})
    model = Backbone.from_config(cfg)
    assert model.time_emb is None  # masked: no time conditioning by default
    obj = build_objective(cfg, mask_token_id=299)
    x0 = (torch.arange(32) % 20).repeat(8, 1)  # position determines every token: learnable fast
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        out = obj.loss(model, {"input_ids": x0})
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5, losses


def test_ar_loss_matches_manual_and_masks_padding():
    torch.manual_seed(0)
    m = Backbone(ModelConfig(vocab_size=40, n_layers=2, n_heads=2, d_model=16, max_seq_len=16,
                             causal=True, time_conditioning=False).resolve("masked"))
    x = torch.randint(0, 40, (3, 10))
    out = Autoregressive().loss(m, {"input_ids": x})
    manual = F.cross_entropy(m(x)[:, :-1].flatten(0, 1), x[:, 1:].flatten())
    assert out["loss"].item() == pytest.approx(manual.item(), rel=1e-5)
    am = torch.ones_like(x)
    am[:, 6:] = 0
    out2 = Autoregressive().loss(m, {"input_ids": x, "attention_mask": am})
    manual2 = F.cross_entropy(m(x[:, :6])[:, :-1].flatten(0, 1), x[:, 1:6].flatten())
    assert out2["loss"].item() == pytest.approx(manual2.item(), rel=1e-5)


def test_build_objective_errors():
    cfg = get_config("tiny", {"objective": "masked", "sampler": "random"})
    with pytest.raises(ConfigError, match="needs the tokenizer's \\[MASK\\] id"):
        build_objective(cfg)
    assert isinstance(build_objective(get_config("tiny", objective="ar", sampler="ar")), Autoregressive)
