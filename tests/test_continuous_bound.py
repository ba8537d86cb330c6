"""The continuous-diffusion variational bound (`diffusion.continuous_bound`) on toy cases with known answers.

Toy: one token, two embeddings +a and -a on a line (V = 2, e = 1), the chain of a real `NoiseSchedule`.
The reverse model is the exact posterior (or a deliberately wrong scaling of it), so

- the bound is a 1-D integral per term that Gauss-Hermite quadrature computes to ~1e-10;
- the model's marginal p(w) is computable by pushing the reverse chain's density along a grid,
  and the bound must sit above -log p(w) for each w;
- with data uniform over the two tokens, the bound averaged over w is >= log 2 whatever the model.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from sunfish_lib.config import DiffusionConfig
from sunfish_lib.diffusion import ContinuousDiffusion, NoiseSchedule
from sunfish_lib.diffusion.continuous import evidence_logits
from sunfish_lib.diffusion.continuous_bound import bound_terms, draw_steps, snr_drops, step_proposal
from sunfish_lib.eval.evaluate import evaluate_likelihood

A = 1.5  # the two embeddings are +A and -A


class ToyModel(nn.Module):
    """Just the embedding table (V = 2, e = 1) an objective reads; the denoiser is patched in."""

    def __init__(self):
        super().__init__()
        self.tok_emb = nn.Embedding(2, 1)
        with torch.no_grad():
            self.tok_emb.weight.copy_(torch.tensor([[A], [-A]]))
        self.cfg = SimpleNamespace(init_std=1.0)

    def embedding_weight(self):
        return self.tok_emb.weight


def posterior_logits(z: torch.Tensor, ab: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """log q(w | z_k) up to a constant for uniform w: (..., 1) -> (..., V); ab broadcasts against z."""
    e = table[:, 0].to(z)  # (V,)
    return (ab.sqrt() * e * z - 0.5 * ab * e * e) / (1.0 - ab)


def toy_objective(schedule="cosine", T=20, shrink=1.0, loss="ce"):
    """A `ContinuousDiffusion` whose denoiser is the exact posterior, its x0_hat scaled by `shrink`."""
    obj = ContinuousDiffusion(DiffusionConfig(schedule=schedule, num_timesteps=T, continuous_loss=loss,
                                              embed_norm=False, self_conditioning=False, time_warping=False))

    def forward(self, model, z, k, table, self_cond=None, **kw):
        ab = self.schedule.coef("alpha_bar", k, z)  # (B, 1, 1)
        logits = posterior_logits(z, ab, table)  # (B, T, V)
        x0_hat = shrink * (logits.softmax(-1) @ table.float())
        return x0_hat, x0_hat, logits

    obj.forward = forward.__get__(obj)
    return obj


def quadrature_bound(obj, w: int, shrink=1.0, n=120) -> float:
    """The bound of token w by Gauss-Hermite quadrature over each z_k ~ q(z_k | x_0), float64."""
    x, wts = np.polynomial.hermite_e.hermegauss(n)  # probabilists': weight exp(-x^2/2)
    x, wts = torch.tensor(x), torch.tensor(wts) / math.sqrt(2 * math.pi)
    table = torch.tensor([[A], [-A]], dtype=torch.float64)
    x0 = table[w, 0]
    ab = obj.schedule.alpha_bar.double()
    prior = 0.5 * ((1 - ab[-1]) + ab[-1] * x0 ** 2 - 1 - torch.log1p(-ab[-1]))

    def expect(k, f):
        z = ab[k].sqrt() * x0 + (1 - ab[k]).sqrt() * x
        return (wts * f(z[:, None], ab[k])).sum()

    def recon(z, a):
        return -torch.log_softmax(posterior_logits(z, a, table), -1)[:, w]

    def err(z, a):
        return (x0 - shrink * (posterior_logits(z, a, table).softmax(-1) @ table)[:, 0]) ** 2

    drops = snr_drops(obj.schedule)
    diffusion = sum(0.5 * drops[k - 1] * expect(k, err) for k in range(1, len(ab)))
    return float(prior + expect(0, recon) + diffusion)


def test_kl_weights_are_the_snr_drops_of_the_chain():
    """coef1_k^2 / beta~_k = SNR_{k-1} - SNR_k (VDM Eq. 13) on the buffers the samplers use."""
    for kind in ("linear", "cosine", "sqrt"):
        s = NoiseSchedule(kind, 200)
        lhs = s.posterior_mean_coef1[1:] ** 2 / s.posterior_variance[1:]
        assert torch.allclose(lhs, snr_drops(s), rtol=1e-6), kind


def test_step_draws_are_stratified_and_follow_the_proposal():
    s = NoiseSchedule("sqrt", 100)
    pi = step_proposal(s, 1.0)
    assert pi.shape == (99,) and abs(pi.sum().item() - 1) < 1e-9 and (pi > 0).all()
    ks = draw_steps(pi, 8, 20000, torch.Generator().manual_seed(0))
    assert ks.shape == (8, 20000) and ks.min() >= 1 and ks.max() <= 99
    hist = torch.bincount(ks.flatten() - 1, minlength=99).double() / ks.numel()
    assert (hist - pi).abs().max() < 0.01


def test_toy_bound_matches_quadrature():
    """Monte Carlo over the chain (bound_terms) agrees with the quadrature of the same formula within 4 SE."""
    obj, model = toy_objective(), ToyModel()
    ids = torch.tensor([[0]] * 3000 + [[1]] * 3000)
    r = bound_terms(obj, model, {"input_ids": ids}, 8, torch.Generator().manual_seed(1))
    assert r["bound"].shape == (6000,)
    for w in (0, 1):
        v = r["bound"][ids[:, 0] == w]
        exact = quadrature_bound(obj, w)
        assert abs(v.mean().item() - exact) < 4 * v.std().item() / math.sqrt(len(v)), (w, v.mean().item(), exact)
        assert exact >= math.log(2) - 1e-9  # E_w bound >= H(w) = log 2 (here each w alike by symmetry)


def reverse_chain_nll(obj, shrink: float, grid=np.linspace(-10, 10, 4001)) -> np.ndarray:
    """-log p_model(w) for w = 0, 1: the reverse chain's density pushed along a grid, then the decoder."""
    s = obj.schedule
    z = torch.tensor(grid)
    dz = float(grid[1] - grid[0])
    table = torch.tensor([[A], [-A]], dtype=torch.float64)
    T = s.num_timesteps
    ab_last = s.alpha_bar[-1].double()
    # z_{T-1} ~ N(0, I) is the reverse chain's start
    dens = torch.exp(-0.5 * z ** 2) / math.sqrt(2 * math.pi)
    for k in range(T - 1, 0, -1):
        ab = s.alpha_bar[k].double()
        x0_hat = shrink * (posterior_logits(z[:, None], ab, table).softmax(-1) @ table)[:, 0]
        mean = s.posterior_mean_coef1[k].double() * x0_hat + s.posterior_mean_coef2[k].double() * z
        var = s.posterior_variance[k].double()
        kern = torch.exp(-0.5 * (z[None, :] - mean[:, None]) ** 2 / var) / torch.sqrt(2 * math.pi * var)  # (from, to)
        dens = (dens[:, None] * kern).sum(0) * dz
    p_w = (dens[:, None] * posterior_logits(z[:, None], s.alpha_bar[0].double(), table).softmax(-1)).sum(0) * dz
    assert abs(ab_last) < 1e-3  # the chain ends near N(0, I), so starting it there is the model
    return (-torch.log(p_w / p_w.sum())).numpy()


@pytest.mark.parametrize("shrink", [1.0, 0.6])
def test_bound_is_above_the_exact_nll_of_an_enumerable_model(shrink):
    """A 4-step chain whose marginal p(w) is computed exactly: the bound of each w is >= -log p(w)."""
    obj, model = toy_objective(T=4, shrink=shrink), ToyModel()
    nll = reverse_chain_nll(obj, shrink)
    ids = torch.tensor([[0]] * 4000 + [[1]] * 4000)
    r = bound_terms(obj, model, {"input_ids": ids}, 4, torch.Generator().manual_seed(2))
    for w in (0, 1):
        v = r["bound"][ids[:, 0] == w]
        se = v.std().item() / math.sqrt(len(v))
        assert v.mean().item() + 4 * se >= nll[w], (w, v.mean().item(), nll[w])
        assert abs(quadrature_bound(obj, w, shrink) - v.mean().item()) < 4 * se
    if shrink != 1.0:  # a wrong denoiser pays for it in the bound, not in the exact NLL alone
        assert quadrature_bound(obj, 0, shrink) > quadrature_bound(toy_objective(T=4), 0)


def test_bound_is_the_table_figure_with_se_and_kind():
    """evaluate_likelihood reports the bound as an upper bound, nats/token +- SE, on every real token."""
    obj, model = toy_objective(), ToyModel()
    batches = [{"input_ids": torch.tensor([[0, 1, 1], [1, 0, 0]]), "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]])}]
    res = evaluate_likelihood(model, obj, batches, t_samples=4, token_bytes=[1, 2],
                              generator=torch.Generator().manual_seed(0))
    assert res.kind == "ELBO upper bound" and res.is_likelihood
    assert res.tokens == 5 and res.sequences == 2 and res.bytes == 1 + 2 + 2 + 2 + 1
    assert res.nats_per_token >= math.log(2) - 4 * res.stderr and res.stderr > 0
    assert res.bits_per_byte == pytest.approx(res.nats_per_token * 5 / math.log(2) / 8)


def test_time_warp_follows_the_rise_of_the_loss():
    """CDCD's time warping: a loss that rises only in the middle of the chain draws most t there."""
    from sunfish_lib.diffusion.time_warp import TimeWarp

    warp = TimeWarp(1000, n_bins=10, decay=0.0, floor=0.1)
    k = torch.arange(0, 1000, 10)
    loss = torch.where(k < 400, 0.0, torch.where(k < 500, 0.5, 1.0)).double()  # bins 4 and 5 each rise by 0.5
    warp.update(k, loss)
    ks = warp.steps_of(torch.rand(20000, generator=torch.Generator().manual_seed(0)))
    inside = ((ks >= 400) & (ks < 600)).double().mean().item()
    assert ks.min() >= 0 and ks.max() <= 999
    assert inside == pytest.approx(0.9 + 0.1 * 0.2, abs=0.02)  # all of the rise plus the floor's share


def test_own_evidence_logits_are_the_exact_gaussian_posterior():
    """own_evidence: log q(x_t,i | w) added to the logits; with no context (zero network logits) the softmax is
    Bayes' posterior over the table under a uniform prior, computed here from the normal densities."""
    obj = ContinuousDiffusion(DiffusionConfig(num_timesteps=50, continuous_loss="ce", own_evidence=True))
    table = torch.randn(7, 3)
    x_t, k = torch.randn(2, 4, 3), torch.tensor([3, 30])
    post = evidence_logits(x_t, obj.schedule.coef("alpha_bar", k, x_t), table).softmax(-1)  # (2, 4, 7)
    ab = obj.schedule.alpha_bar[k].float()[:, None, None, None]  # (2, 1, 1, 1)
    dens = torch.distributions.Normal(ab.sqrt() * table, (1 - ab).sqrt()).log_prob(x_t[:, :, None, :]).sum(-1).exp()
    assert torch.allclose(post, dens / dens.sum(-1, keepdim=True), atol=1e-4)
