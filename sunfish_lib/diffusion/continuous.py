"""Continuous (embedding-space) diffusion on the shared backbone: CDCD's recipe (the default) or plain Diffusion-LM.

Two training losses (`DiffusionConfig.continuous_loss`):

- ce (the default, `CDCD_RECIPE`; CDCD, Dieleman et al. 2022; bench/continuous_recipe.py): the backbone reads x_t and outputs token
  logits, trained with cross-entropy; x0_hat = softmax(logits) @ table ("score interpolation", Sec. 3.1),
  with L2-normalised embeddings, self-conditioning and time warping (Sec. 6.1, `time_warp.py`) as options,
  and `own_evidence`: each position's exact Gaussian evidence log q(x_t,i | w) added to its logits,
  so p(w_i | x_t) = p(w_i | x_t,-i) q(x_t,i | w_i) / Z and the network models only the context's part. Without
  it, a CE-trained softmax keeps a few % of mass off the right token even at SNR 40, and the bound's
  0.5 dSNR ||x_0 - x0_hat||^2 terms charge that at every high-SNR step (9.3 nats/token at 400 steps, against
  4.4 with it at 160; bench/continuous_recipe.py).
- mse (Diffusion-LM, Li et al. 2022; `PLAIN_RECIPE` names its overrides): the backbone outputs a vector, loss below.

Either way the model's likelihood figure is the chain's variational bound (`continuous_bound.py`).
The rest of this docstring describes the mse loss and the shared forward process.

Forward process (Ho et al. 2020, Eq. 4) on the backbone's own token embeddings, learned
jointly with the denoiser (end-to-end, as Diffusion-LM Sec. 4.1 proposes):

    x_0 = EMB(w) / init_std    (or, with embed_norm, EMB(w) L2-normalised to norm sqrt(embed_dim): Plaid / CDCD)
    x_k = sqrt(alpha_bar_k) x_0 + sqrt(1 - alpha_bar_k) eps,    eps ~ N(0, I)

Dividing by `model.init_std` turns the backbone's N(0, 0.02^2) init into Diffusion-LM's
N(0, 1) one: at 0.02 the first step's noise (std 0.15 under sqrt) swamps every
embedding and training stalls; the embeddings remain free to grow or shrink.

The model sees x_k / sqrt(alpha_bar_k sigma^2 + 1 - alpha_bar_k), sigma^2 being the mean
squared coordinate of the embedding table, i.e. an input of unit variance at every t
(CDCD, Dieleman et al. 2022, Sec. 3), and t = (k + 1) / T (see `schedules.py`).
Its output, in the embedding space, is one of (`DiffusionConfig.prediction`):

    eps,   x0,   or v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x_0   (Salimans & Ho 2022, Sec. 4)

Loss per token, averaged over real tokens:

    || out - target ||^2 / embed_dim               simplified DDPM MSE in the chosen parameterisation
    + rounding_weight * CE(logits(x0_hat), w)      rounding: logits_v = -||x0_hat - e_v||^2
    + KL(q(x_T | x_0) || N(0, I)) / embed_dim      prior term at T

This is NOT Diffusion-LM's L_e2e (Sec. 4.1), whose rounding term decodes the word from
x_0 = EMB(w) + sigma_0 eps (a fixed small noise level, `training_losses_e2e`) plus a t_0
embedding term. Here the CE reads the *denoiser's* x0 prediction at the sampled t, a
CDCD-like (Dieleman et al. 2022, score interpolation's CE on x0_hat) / Plaid-like variant:
it trains the denoiser to land nearest the right embedding, not only the embedding table.

The rounding CE is what stops the embeddings collapsing (all embeddings equal make the
MSE zero but the CE log V); the prior term stops them growing without bound, which
would let x_T keep signal. Distance logits make the CE train the very decision rule the
sampler rounds and clamps with (`sample.rounding="auto"`: euclidean; cosine only with
embed_norm, where all norms are equal and the two rules agree). Self-conditioning (Chen et al. 2022, Sec. 3.3): half
of the training rows (all rows in eval) first predict x0 without gradient and feed that
estimate back.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sunfish_lib.config import BACKBONE_NEEDS, SAMPLERS, DiffusionConfig
from sunfish_lib.diffusion.continuous_bound import bound_terms
from sunfish_lib.diffusion.schedules import NoiseSchedule
from sunfish_lib.diffusion.objective import antithetic_draws, real_tokens
from sunfish_lib.diffusion.time_warp import TimeWarp
from sunfish_lib.diffusion.timesteps import sample_t
from sunfish_lib.errors import ConfigError

N_BUCKETS = 4
"""Loss metrics are also reported per t bucket [i/4, (i+1)/4)."""
EVAL_T_MAX = 0.1
"""`rounding_ce_small_t` draws t uniformly in (0, EVAL_T_MAX]."""


# ----------------------------------------------------------------------------
# Parameterisations (Salimans & Ho 2022, Sec. 4 and App. D)
# ----------------------------------------------------------------------------

def to_x0_eps(out: torch.Tensor, x_t: torch.Tensor, alpha_bar: torch.Tensor, prediction: str):
    """Model output in `prediction` -> (x0_hat, eps_hat); alpha_bar broadcasts against x_t."""
    a, s = alpha_bar.sqrt(), (1.0 - alpha_bar).sqrt()
    if prediction == "x0":
        return out, (x_t - a * out) / s
    if prediction == "eps":
        return (x_t - s * out) / a, out  # inverts Ho et al. 2020, Eq. 4
    if prediction == "v":
        return a * x_t - s * out, s * x_t + a * out  # x0 = a z - s v, eps = s z + a v
    raise ValueError(f"prediction {prediction!r}: choose eps, v or x0")


def target_of(x0: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor, prediction: str) -> torch.Tensor:
    """What the model should output: eps, x0, or v = sqrt(alpha_bar) eps - sqrt(1 - alpha_bar) x0."""
    if prediction == "x0":
        return x0
    if prediction == "eps":
        return eps
    if prediction == "v":
        return alpha_bar.sqrt() * eps - (1.0 - alpha_bar).sqrt() * x0
    raise ValueError(f"prediction {prediction!r}: choose eps, v or x0")


def eps_from_x0(x_t: torch.Tensor, x0: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """eps implied by x_t and an x0 estimate (Ho et al. 2020, Eq. 4 solved for eps)."""
    return (x_t - alpha_bar.sqrt() * x0) / (1.0 - alpha_bar).sqrt()


def evidence_logits(x_t: torch.Tensor, alpha_bar: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """log q(x_t,i | w = v) up to a constant in v, (B, T, V): (sqrt(ab) x.e_v - ab |e_v|^2 / 2) / (1 - ab).

    The Gaussian evidence each position's own noisy vector carries about its token (Ho et al. 2020, Eq. 4);
    `own_evidence` adds it to the CDCD logits. alpha_bar broadcasts against x_t, e.g. (B, 1, 1)."""
    table = table.float()
    return (alpha_bar.sqrt() * (x_t.float() @ table.t()) - 0.5 * alpha_bar * table.pow(2).sum(-1)) / (1.0 - alpha_bar)


def score_interpolation(logits: torch.Tensor, table: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """x0_hat = E_{p(w | x_t)}[e_w] = softmax(logits) @ table, (B, T, V) @ (V, e) -> (B, T, e) (CDCD, Dieleman et al.
    2022, Sec. 3.1: score interpolation).

    temperature: sampling only, p(w | x_t) ∝ exp(logits / temperature): below 1 it moves x0_hat toward the likelier
    embeddings (Plaid's lower sampling temperature, Gulrajani & Hashimoto 2023); 0 is the argmax token's embedding.
    Training and the bound use 1."""
    table = table.float()
    if temperature == 0:
        return table[logits.argmax(-1)]
    return (logits / temperature).softmax(-1) @ table


def gaussian_kl_to_standard(mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, var I) || N(0, I)) per coordinate: 0.5 (var + mean^2 - 1 - log var)."""
    return 0.5 * (var + mean.pow(2) - 1.0 - var.log())


# ----------------------------------------------------------------------------
# The objective
# ----------------------------------------------------------------------------

PLAIN_RECIPE = {"continuous_loss": "mse", "embed_norm": False, "self_conditioning": False, "time_warping": False,
                "own_evidence": False}
"""Diffusion-LM as the seed had it (x0 MSE + rounding CE, raw embeddings): the overrides that undo the CDCD default;
the recipe study's first row."""
CDCD_RECIPE = {"continuous_loss": "ce", "embed_norm": True, "self_conditioning": True, "time_warping": True,
               "own_evidence": True}
"""CDCD (Dieleman et al. 2022) with own evidence: score interpolation trained by cross-entropy, normalised embeddings,
self-conditioning, time warping, each position's Gaussian evidence in its logits (bench/continuous_recipe.py's
ce-norm-sc-warp-ev): `DiffusionConfig`'s defaults, spelled out (tests/test_config*.py checks they agree)."""


class ContinuousDiffusion:
    """Gaussian diffusion on the backbone's token embeddings (see module docstring)."""

    name = "continuous"
    kind = "ELBO upper bound"  # the chain's variational bound (`continuous_bound`)
    samplers = SAMPLERS["continuous"]
    backbone_needs = BACKBONE_NEEDS["continuous"]
    iterative = True  # denoising steps: the sampler's `steps` knob and its trajectory
    likelihood = True  # scores text by its variational bound (`sequence_nats`, `continuation_score`)

    @staticmethod
    def sampling_steps(requested: int, length: int) -> int:
        return requested  # every step moves every position: more steps than tokens still help

    @classmethod
    def from_config(cls, cfg, *, mask_token_id: int | None = None, eos_token_id: int | None = None):
        return cls(cfg.diffusion)

    def __init__(self, cfg: DiffusionConfig | None = None):
        self.cfg = cfg = cfg or DiffusionConfig()
        if cfg.prediction not in ("eps", "v", "x0"):
            raise ConfigError(f"diffusion.prediction={cfg.prediction!r} is not allowed; choose one of eps, v, x0")
        self.schedule = NoiseSchedule(cfg.schedule, cfg.num_timesteps)
        self.num_timesteps = cfg.num_timesteps
        self.prediction = cfg.prediction
        if cfg.continuous_loss == "ce" and cfg.prediction != "x0":
            raise ConfigError(f"diffusion.continuous_loss='ce' predicts x0 by score interpolation, not "
                              f"{cfg.prediction!r}; set prediction=x0")
        self.warp = TimeWarp(cfg.num_timesteps) if cfg.time_warping else None

    # -- the embedding space ---------------------------------------------------------
    def embedding_table(self, model) -> torch.Tensor:
        """x_0 of every token (V, e), float32: EMB / init_std, or rows of norm sqrt(e) if embed_norm."""
        w = model.embedding_weight().float()
        if self.cfg.embed_norm:
            # normalize saves its input for backward: a copy, not FSDP2's gathered weight, which the root frees once
            # the gradient reaches encode's input (before it reaches the table: a segfault, tests/test_train.py)
            return F.normalize(w.clone(), dim=-1) * math.sqrt(w.shape[1])
        return w / model.cfg.init_std

    def x0_of(self, model, ids: torch.Tensor, table: torch.Tensor | None = None) -> torch.Tensor:
        """Clean embeddings x_0 (B, T, e) of token ids (B, T)."""
        return F.embedding(ids, self.embedding_table(model) if table is None else table).float()

    def input_scale(self, k: torch.Tensor, table: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """1 / sqrt(alpha_bar sigma^2 + 1 - alpha_bar): makes the model input unit-variance (B, 1, 1)."""
        t = table.detach().float()
        sigma2 = torch.linalg.vector_norm(t).square() / t.numel()  # mean of squares, without a (V, e) temporary
        ab = self.schedule.coef("alpha_bar", k, like)
        return (ab * sigma2 + 1.0 - ab).rsqrt()

    def hidden_states(self, model, x_t, k, table, *, self_cond=None, segment_ids=None, attention_mask=None):
        """The backbone's final hidden states (B, T, d) for noisy x_t at step indices k (B,)."""
        x_in = (x_t * self.input_scale(k, table, x_t)).to(next(model.parameters()).dtype)
        return model.encode(vectors=x_in, t=self.schedule.model_time(k), self_cond=self_cond,
                            segment_ids=segment_ids, attention_mask=attention_mask)

    def model_output(self, model, x_t, k, table, **kw):
        """The backbone's raw output in the embedding space (B, T, e) (continuous_loss=mse)."""
        return model.to_embedding_space(self.hidden_states(model, x_t, k, table, **kw)).float()

    def forward(self, model, x_t, k, table, *, self_cond=None, temperature: float = 1.0, **kw):
        """(raw output in the prediction's space, x0_hat, token logits or None), (B, T, e) / (B, T, V).

        continuous_loss=mse: the backbone outputs a vector in the embedding space (eps, v or x0).
        continuous_loss=ce: it outputs token logits and x0_hat = softmax(logits) @ table, the
        expectation of the embedding under the model's p(w | x_t) (CDCD's score interpolation,
        Dieleman et al. 2022, Sec. 3.1); the raw output is that x0_hat (prediction=x0). `temperature` tempers
        that p(w | x_t) (`score_interpolation`; sampling only); with mse there is no p(w | x_t) to temper.
        """
        if self.cfg.continuous_loss == "ce":
            logits = model.logits(self.hidden_states(model, x_t, k, table, self_cond=self_cond, **kw)).float()
            if self.cfg.own_evidence:
                logits = logits + evidence_logits(x_t, self.schedule.coef("alpha_bar", k, x_t), table)
            x0_hat = score_interpolation(logits, table, temperature)
            return x0_hat, x0_hat, logits
        out = self.model_output(model, x_t, k, table, self_cond=self_cond, **kw)
        x0_hat, _ = to_x0_eps(out, x_t, self.schedule.coef("alpha_bar", k, x_t), self.prediction)
        return out, x0_hat, None

    def predict(self, model, x_t, k, table, *, self_cond=None, temperature: float = 1.0,
                **kw) -> tuple[torch.Tensor, torch.Tensor]:
        """(raw model output, x0_hat), both (B, T, e)."""
        out, x0_hat, _ = self.forward(model, x_t, k, table, self_cond=self_cond, temperature=temperature, **kw)
        return out, x0_hat

    def decoder_logits(self, x0_hat: torch.Tensor, logits: torch.Tensor | None, table: torch.Tensor) -> torch.Tensor:
        """Token logits (..., V) read from a prediction: the model's own (ce) or the rounding logits of x0_hat (mse)."""
        return logits if logits is not None else self.rounding_logits(x0_hat, table)

    @staticmethod
    def rounding_logits(x0_hat: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        """logits_v = -||x0_hat - e_v||^2 up to a per-position constant: 2 x.e_v - |e_v|^2, (..., V)."""
        table = table.float()
        return 2.0 * x0_hat @ table.t() - table.pow(2).sum(-1)

    def scored(self, batch: dict) -> torch.Tensor:
        """(B, T) bool: the tokens the bound scores, every real one (of the completion, with conditional data)."""
        return real_tokens(batch, batch["input_ids"])

    # -- loss ------------------------------------------------------------------------
    def sample_steps(self, batch_size: int, device, generator=None, warped: bool = True) -> torch.Tensor:
        """Step indices k (B,), uniform over {0..T-1}, stratified across the batch (MDLM Sec. 3.5.1);
        with time_warping and `warped`, drawn from the learned density instead (`time_warp.TimeWarp`).

        `DiffusionConfig.t_min` is not used: it guards masked diffusion's 1/t weight, and the
        discrete chain has no singularity (its first step, t = 1/T, is a valid training point).
        """
        u = sample_t(batch_size, t_min=0.0, low_discrepancy=self.cfg.low_discrepancy, device=device, generator=generator)
        if self.warp is not None and warped:
            return self.warp.steps_of(u)
        return (u * self.num_timesteps).long().clamp_(0, self.num_timesteps - 1)

    def loss(self, model, batch: dict, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Training loss at random steps; see `loss_at` for the returned metrics."""
        ids = batch["input_ids"]
        # validation (eval mode) draws uniform t, so val/loss stays one estimator while the warp moves
        k = self.sample_steps(ids.shape[0], ids.device, generator, warped=model.training)
        return self._loss_at_step(model, batch, k, generator)

    def loss_at(self, model, batch: dict, t: torch.Tensor, generator=None) -> dict[str, torch.Tensor]:
        """Loss at given times t (B,) in (0, 1] (the `Objective` interface's `loss_at`).

        The chain is discrete: each t is taken to its nearest step, k + 1 = round(t T) clamped to
        1..T (`NoiseSchedule.step_of`), so t = (k + 1) / T (`model_time`, what the returned `t`
        holds) gives step k exactly. Returns `loss`; `mse`, `rounding_ce`, `prior`, `rounding_acc`
        (token-weighted scalars); `mse_per_seq`, `ce_per_seq` (B,) and `t` (B,); and per-bucket
        `mse/t0.00-0.25`-style scalars for the buckets present in this batch.
        """
        return self._loss_at_step(model, batch, self.schedule.step_of(t), generator)

    def _loss_at_step(self, model, batch: dict, k: torch.Tensor, generator=None) -> dict[str, torch.Tensor]:
        """`loss_at` at step indices k (B,) in 0..T-1."""
        ids = batch["input_ids"]  # (B, T)
        valid = real_tokens(batch, ids).float()
        table = self.embedding_table(model)  # (V, e)
        x0 = self.x0_of(model, ids, table)  # (B, T, e)
        noise = torch.randn(x0.shape, device=x0.device, generator=generator)
        ab = self.schedule.coef("alpha_bar", k, x0)  # (B, 1, 1)
        x_t = self.schedule.q_sample(x0, k, noise)
        if batch.get("loss_mask") is not None:  # SFT: the prompt is clean x0 (infill-style conditioning), no loss
            x_t = torch.where(batch["loss_mask"].bool()[..., None], x_t, x0)
        if batch.get("segment_ids") is not None:  # x_t shows no EOS: clean-x0 document ids would leak x0
            raise ConfigError("data.cross_document_attention=False does not combine with objective 'continuous'; "
                              "set it to true")
        kw = dict(attention_mask=batch.get("attention_mask"))
        self_cond = self._self_cond(model, x_t, k, table, generator, **kw)
        out, x0_hat, token_logits = self.forward(model, x_t, k, table, self_cond=self_cond, **kw)
        mse = (out - target_of(x0, noise, ab, self.prediction)).pow(2).mean(-1)  # (B, T)
        if token_logits is None:
            # eps-prediction's x0_hat = (x_t - s eps)/sqrt(alpha_bar) explodes at large t; bound it for the CE only
            bound = 2.0 * table.detach().abs().max().float()
            logits = self.rounding_logits(x0_hat.clamp(-bound, bound), table)  # (B, T, V)
        else:
            logits = token_logits
        ce = F.cross_entropy(logits.flatten(0, 1), ids.flatten(), reduction="none").view_as(ids)
        ab_T = self.schedule.alpha_bar[-1].to(x0)
        prior = gaussian_kl_to_standard(ab_T.sqrt() * x0, (1.0 - ab_T).expand_as(x0)).mean(-1)  # (B, T)
        if self.cfg.continuous_loss == "ce":  # CDCD: cross-entropy only (the prior keeps free embeddings bounded)
            total = ce + prior
        else:
            total = mse + self.cfg.rounding_weight * ce + prior
        if self.warp is not None and model.training:
            self.warp.update(k, ((ce * valid).sum(1) / valid.sum(1).clamp(min=1)).detach())
        n_seq = valid.sum(1).clamp(min=1).float()  # (B,)
        n_all = n_seq.sum()

        def tok_mean(v):
            return (v * valid).sum() / n_all

        out_d = {
            "loss": tok_mean(total), "mse": tok_mean(mse), "rounding_ce": tok_mean(ce), "prior": tok_mean(prior),
            "rounding_acc": tok_mean((logits.argmax(-1) == ids).float()),
            "mse_per_seq": (mse * valid).sum(1) / n_seq, "ce_per_seq": (ce * valid).sum(1) / n_seq,
            "t": self.schedule.model_time(k),
        }
        out_d.update(_bucketed(out_d["t"], out_d["mse_per_seq"], out_d["ce_per_seq"]))
        return out_d

    def _self_cond(self, model, x_t, k, table, generator, **kw) -> torch.Tensor | None:
        """Self-conditioning input: a gradient-free x0 estimate for a random half of the rows (all in eval)."""
        if not self.cfg.self_conditioning:
            return None
        with torch.no_grad():
            _, x0_hat = self.predict(model, x_t, k, table, **kw)
        if not model.training:
            return x0_hat
        use = torch.rand(x_t.shape[0], device=x_t.device, generator=generator) < 0.5  # (B,)
        return x0_hat * use[:, None, None]

    # -- evaluation ------------------------------------------------------------------
    t_draws = staticmethod(antithetic_draws)

    def sequence_nats(self, model, batch: dict, t_samples: int = 8, generator=None) -> torch.Tensor:
        """The variational bound of each sequence (B,), nats/token: an upper bound on its NLL
        (`continuous_bound.bound_terms`, `t_draws(t_samples)` draws of the chain's KL terms)."""
        return bound_terms(self, model, batch, self.t_draws(t_samples), generator)["bound"]

    @torch.no_grad()
    def continuation_score(self, model, x: torch.Tensor, n: int, *, draws: int, batch: int,
                           generator: torch.Generator) -> tuple[float, bool]:
        """(minus the bound on -log p of the last n tokens of x (1, T) given the rest, whether greedy decoding
        yields them: the decoder's argmax from pure noise on them, the context held as the infill sampler holds it).

        The conditional bound of `continuous_bound` (module docstring: `conditional`), `draws` KL draws per row,
        rows in batches of `batch`.
        """
        T = x.shape[1]
        cont = torch.arange(T, device=x.device) >= T - n  # (T,)
        total = []
        for B in [min(batch, draws - i) for i in range(0, draws, batch)]:
            rows = {"input_ids": x.expand(B, -1)}
            nats = bound_terms(self, model, rows, 1, generator, scored=cont.expand(B, -1))["bound"]
            total.append(nats * n)  # (B,) nats of the continuation
        table = self.embedding_table(model).detach()
        k = torch.full((1,), self.num_timesteps - 1, device=x.device)
        z = torch.where(cont[None, :, None], torch.randn((1, T, table.shape[1]), device=x.device, generator=generator),
                        self.schedule.q_sample(self.x0_of(model, x, table), k, torch.randn(
                            (1, T, table.shape[1]), device=x.device, generator=generator)))
        x0_hat, logits = self.forward(model, z, k, table, self_cond=self._self_cond(model, z, k, table, generator))[1:]
        greedy = self.decoder_logits(x0_hat, logits, table)[0, -n:].argmax(-1)
        return -torch.cat(total).mean().item(), bool((greedy == x[0, -n:]).all())

    @torch.no_grad()
    def rounding_ce_small_t(self, model, batch: dict, t_samples: int = 8, generator=None) -> torch.Tensor:
        """Rounding CE (nats/token) per sequence (B,), averaged over t ~ U(0, EVAL_T_MAX]: NOT a likelihood
        (a diagnostic of how well the denoiser names tokens from lightly noised embeddings)."""
        ids = batch["input_ids"]
        k_max = max(1, int(round(EVAL_T_MAX * self.num_timesteps)))
        draws = []
        for _ in range(max(1, t_samples)):
            k = torch.randint(0, k_max, (ids.shape[0],), device=ids.device, generator=generator)
            draws.append(self._loss_at_step(model, batch, k, generator)["ce_per_seq"].double())
        return torch.stack(draws).mean(0)


def _bucketed(t: torch.Tensor, mse: torch.Tensor, ce: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sequence metrics averaged within t buckets [i/N, (i+1)/N); empty buckets are left out."""
    out = {}
    idx = (t * N_BUCKETS).long().clamp(0, N_BUCKETS - 1)  # (B,)
    for i in range(N_BUCKETS):
        sel = idx == i
        if sel.any():
            name = f"t{i / N_BUCKETS:.2f}-{(i + 1) / N_BUCKETS:.2f}"
            out[f"mse/{name}"] = mse[sel].mean()
            out[f"ce/{name}"] = ce[sel].mean()
    return out
