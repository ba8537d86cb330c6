"""The variational bound of continuous (embedding) diffusion: -log p(w) <= prior + diffusion + reconstruction.

The latent-variable model is the T-step chain of `schedules.NoiseSchedule` on the embeddings
x_0 = e(w) (`ContinuousDiffusion.embedding_table`), latents z_k (k = 0..T-1, alpha_bar_k),
the reverse steps p(z_{k-1} | z_k) = q(z_{k-1} | z_k, x0_hat(z_k, k)) (the ddpm sampler's) and a
decoder p(w | z_0). Its negative ELBO (Ho et al. 2020, Eq. 5; Sohl-Dickstein et al. 2015) is, per
token (every term is a sum over the token's embedding coordinates, so the three add to nats/token):

    L = KL(q(z_{T-1} | x_0) || N(0, I))                                     prior
      + sum_{k=1}^{T-1} KL(q(z_{k-1} | z_k, x_0) || p(z_{k-1} | z_k))        diffusion
      + E_q[-log p(w | z_0)]                                                 reconstruction

The posterior and the reverse step share the variance beta~_k, so each KL is a squared error
(Kingma et al. 2021, VDM Eq. 13, the discrete-time form):

    KL_k = 0.5 (SNR_{k-1} - SNR_k) ||x_0 - x0_hat(z_k)||^2,    SNR = alpha_bar / (1 - alpha_bar)

(coef1_k^2 / beta~_k = SNR_{k-1} - SNR_k: `tests/test_continuous_bound.py` checks it on the buffers).
The sum over k is estimated by importance sampling: k ~ pi_k proportional to
log(1 + sigma^2 SNR_{k-1}) - log(1 + sigma^2 SNR_k), the shape the summand has for Gaussian data of
variance sigma^2 (Bayes error sigma^2 / (1 + sigma^2 SNR) per coordinate), so rare high-SNR steps are
not missed; each draw counts KL_k / pi_k (unbiased for any pi with full support). The draws of a
sequence are stratified over pi's CDF. The decoder is the model's token distribution at z_0: its own
logits for continuous_loss=ce, else the rounding logits -||x0_hat - e_v||^2 (Diffusion-LM's rounding,
what the mse recipe trains); any distribution over tokens given z_0 keeps L a bound.

Everything the reverse model sees is a function of z_k (self-conditioning's first pass too), so L
bounds -log p(w) of this model whatever its x0_hat. `conditional`: positions outside `scored` are
context, noised afresh for each term as the infill sampler holds them (`ContinuousSampler._hold`);
then L bounds -log p(w_scored | w_context), since by the convexity of KL a bound with a random
context draw is still a bound on the mixture's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sunfish_lib.diffusion.schedules import NoiseSchedule


def snr_drops(schedule: NoiseSchedule) -> torch.Tensor:
    """SNR_{k-1} - SNR_k for k = 1..T-1, float64 (T-1,): the weights of the chain's KL terms (VDM Eq. 13)."""
    snr = schedule.snr().double()
    return snr[:-1] - snr[1:]


def step_proposal(schedule: NoiseSchedule, sigma2: float) -> torch.Tensor:
    """pi_k over k = 1..T-1 (T-1,), float64: proportional to log(1 + sigma^2 SNR_{k-1}) - log(1 + sigma^2 SNR_k)."""
    snr = schedule.snr().double()
    w = torch.log1p(sigma2 * snr[:-1]) - torch.log1p(sigma2 * snr[1:])
    w = w.clamp(min=0) + 1e-12
    return w / w.sum()


def draw_steps(proposal: torch.Tensor, n_draws: int, batch: int, generator=None) -> torch.Tensor:
    """(n_draws, batch) step indices in 1..T-1: stratified over the proposal's CDF for each row."""
    u = (torch.arange(n_draws, dtype=torch.float64)[:, None]
         + torch.rand(n_draws, batch, generator=generator, dtype=torch.float64,
                      device=generator.device if generator is not None else "cpu").cpu()) / n_draws
    cdf = torch.cumsum(proposal, 0)
    idx = torch.searchsorted(cdf, u.clamp(max=cdf[-1].item() - 1e-12), right=True).clamp_(max=proposal.numel() - 1)
    return idx + 1


@torch.no_grad()
def bound_terms(obj, model, batch: dict, draws: int = 8, generator=None,
                scored: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """The bound's three terms per sequence (B,), nats per scored token, and their sum `bound`.

    obj: a `ContinuousDiffusion`; batch: input_ids (B, T) [and attention_mask]; scored (B, T) bool:
    the tokens the bound is of (default every real one; the rest are context, see the module docstring).
    """
    ids = batch["input_ids"]  # (B, T)
    B = ids.shape[0]
    am = batch.get("attention_mask")
    real = torch.ones_like(ids, dtype=torch.bool) if am is None else am.bool()
    scored = real if scored is None else (scored & real)
    w = scored.double()  # (B, T)
    n_tok = w.sum(1).clamp(min=1)  # (B,)
    sched = obj.schedule
    table = obj.embedding_table(model).detach()  # (V, e)
    x0 = obj.x0_of(model, ids, table)  # (B, T, e)
    kw = dict(attention_mask=am)
    dev = ids.device

    def noised(k):  # z_k of the whole row (context drawn afresh each time)
        noise = torch.randn(x0.shape, device=dev, generator=generator)
        return sched.q_sample(x0, k, noise)

    def predict(z, k):
        self_cond = obj._self_cond(model, z, k, table, generator, **kw)  # eval mode: x0_hat of z itself
        _, x0_hat, logits = obj.forward(model, z, k, table, self_cond=self_cond, **kw)
        return x0_hat, logits

    # prior: KL(N(sqrt(ab) x0, (1 - ab) I) || N(0, I)) at the last step, summed over coordinates
    ab_last = sched.alpha_bar[-1].double()
    prior = 0.5 * ((1 - ab_last) + ab_last * x0.double().pow(2) - 1 - torch.log1p(-ab_last)).sum(-1)  # (B, T)
    prior = (prior * w).sum(1) / n_tok

    # reconstruction: -log p(w | z_0), the decoder read at the first step of the chain
    k0 = torch.zeros(B, dtype=torch.long, device=dev)
    x0_hat, logits = predict(noised(k0), k0)
    logits = obj.decoder_logits(x0_hat, logits, table)  # (B, T, V)
    nll = F.cross_entropy(logits.flatten(0, 1).float(), ids.flatten(), reduction="none").view_as(ids).double()
    recon = (nll * w).sum(1) / n_tok

    # diffusion: sum_k KL_k by importance sampling over k = 1..T-1
    diffusion = torch.zeros(B, dtype=torch.float64, device=dev)
    if sched.num_timesteps > 1:
        sigma2 = float(table.double().pow(2).mean())
        pi = step_proposal(sched, sigma2)
        drop = snr_drops(sched).cpu()
        ks = draw_steps(pi, draws, B, generator)  # (draws, B)
        for k in ks:
            weight = (drop[k - 1] / pi[k - 1]).to(dev)  # (B,)
            k = k.to(dev)
            x0_hat, _ = predict(noised(k), k)
            err = (x0 - x0_hat).double().pow(2).sum(-1)  # (B, T)
            diffusion += 0.5 * weight * (err * w).sum(1) / n_tok
        diffusion /= draws
    return {"bound": prior + diffusion + recon, "prior": prior, "diffusion": diffusion, "reconstruction": recon}
