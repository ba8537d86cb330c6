"""Masked (absorbing-state) diffusion: MDLM / LLaDA / RND1 style.

Forward process: each token of x0 independently becomes [MASK] with probability
1 - alpha_t, t in [0, 1]. Reverse model: p_theta(x0 | z_t) with the SUBS
parameterisation (MDLM, Sahoo et al. 2024, Sec. 3.2.3): the [MASK] logit is never
predicted ("zero masking probabilities") and unmasked tokens are copied through
("carry-over unmasking"), so only masked positions carry loss.

The loss is the continuous-time ELBO (MDLM Eq. 10; LLaDA, Nie et al. 2025, Eq. 3):

    -log p(x0) <= E_{t ~ U[0,1]} E_{z_t} [ alpha'_t / (1 - alpha_t) * sum_{i masked} log p_theta(x0_i | z_t) ]

with weight w(t) = -alpha'_t / (1 - alpha_t) = 1/t for the linear schedule
alpha_t = 1 - t (LLaDA). We report it per token: divided by the number of real tokens.

Keep-the-shift (`diffusion.shift_logits`, for models converted from an AR parent: RND1,
Radical Numerics 2025; dllm's `right_shift_logits`): the AR parent's position i-1
predicts token i, so p_theta(x0_i | z_t) is read from the output at position i-1; position
0 has no left neighbour and is read from its own output (dllm's
`cat([logits[:, :1], logits[:, :-1]])`). Any function of z_t is a valid reverse model, so
the ELBO stays a bound; the samplers apply the same shift (`sampling.masked`).

Document boundaries (`data.cross_document_attention=False`): the packer's segment ids come
from the clean x0, so they would tell the denoiser where every EOS is, masked or not, and
p_theta would no longer be a function of z_t alone (the "bound" would stop bounding).
`visible_segments` rebuilds them from what z_t shows: a masked EOS is no boundary.
"""

from __future__ import annotations

import math

import torch

from sunfish_lib.config import BACKBONE_NEEDS, SAMPLERS, DiffusionConfig
from sunfish_lib.diffusion.objective import antithetic_draws, real_tokens
from sunfish_lib.diffusion.timesteps import sample_t
from sunfish_lib.errors import ConfigError


def visible_segments(segment_ids: torch.Tensor, masked: torch.Tensor,
                     attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Document ids (B, T) the denoiser may use: boundaries only after an EOS that is still visible in z_t.

    `segment_ids` (B, T) are the packer's (an EOS closes its own document, so the id steps up
    right after it); `masked` (B, T) marks [MASK] positions. Padding gets -1 (its own block).
    """
    real = torch.ones_like(masked) if attention_mask is None else attention_mask.bool()
    ends = (segment_ids[:, 1:] != segment_ids[:, :-1]) & real[:, 1:] & ~masked[:, :-1]  # (B, T-1): visible EOS
    closes = torch.cat([ends, torch.zeros_like(ends[:, :1])], 1).long()  # (B, T)
    return torch.where(real, closes.cumsum(1) - closes, torch.full_like(closes, -1))


class MaskSchedule:
    """alpha_t (probability a token is still clean at time t) and the ELBO weight.

    linear:    alpha_t = 1 - t                       (LLaDA; MDLM's "linear")
    loglinear: alpha_t = 1 - (1 - eps) t, i.e. sigma(t) = -log(1 - (1 - eps) t)
               (MDLM's LogLinearNoise, Sahoo et al. 2024, App. C): never fully masked.
    Both give w(t) = 1/t; loglinear keeps a 1e-3 chance that a token survives at t = 1.
    """

    def __init__(self, kind: str = "linear", eps: float = 1e-3):
        if kind not in ("linear", "loglinear"):
            raise ValueError(f"mask schedule {kind!r}: choose linear or loglinear")
        self.kind, self.eps = kind, eps
        self.rate = 1.0 if kind == "linear" else 1.0 - eps  # alpha_t = 1 - rate * t

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return 1.0 - self.rate * t

    def p_mask(self, t: torch.Tensor) -> torch.Tensor:
        """1 - alpha_t: probability that a token is [MASK] at time t."""
        return self.rate * t

    def weight(self, t: torch.Tensor) -> torch.Tensor:
        """w(t) = -alpha'_t / (1 - alpha_t) = rate / (rate * t) = 1/t."""
        return -(-self.rate) / (self.rate * t)


def shift_right(x: torch.Tensor) -> torch.Tensor:
    """(B, T, ...) -> (B, T, ...) with out[:, i] = x[:, i - 1] for i >= 1 and out[:, 0] = x[:, 0].

    Applied to hidden states or logits: afterwards row i scores the token at position i
    (see `DiffusionConfig.shift_logits`).
    """
    return torch.cat([x[:, :1], x[:, :-1]], dim=1)


def masked_rows(x: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """x[masked]: (N, ...) rows of x (B, T, ...) where masked (B, T) is True, in the same (row-major) order.

    One index_select, whose backward is an index_add_; boolean indexing's backward is an accumulating index_put_,
    several times slower on CPU (the masked objectives' gather, part `loss` of bench/step_profile.py).
    """
    return x.reshape(-1, *x.shape[2:]).index_select(0, masked.flatten().nonzero().squeeze(1))


def subs_logits(logits: torch.Tensor, never) -> torch.Tensor:
    """SUBS zero-masking (MDLM Sec. 3.2.3) on logits (..., V), in place: the ids `never` get -inf.

    `never` is the [MASK] id (the model never predicts [MASK]); a sampler adds [PAD]/EOS when it
    excludes them. SUBS's other half, carry-over unmasking (an unmasked token stays itself), is
    structural here: logits are computed only at masked positions and unmasked ones are copied from z_t.
    """
    logits[..., never] = float("-inf")
    return logits


class MaskedDiffusion:
    """The masked-diffusion objective: forward masking, SUBS, continuous-time ELBO."""

    name = "masked"
    kind = "ELBO upper bound"
    samplers = SAMPLERS["masked"]
    backbone_needs = BACKBONE_NEEDS["masked"]
    iterative = True  # denoising steps: the sampler's `steps` knob and its trajectory
    likelihood = True  # scores a continuation by its ELBO (`continuation_score`)

    @staticmethod
    def sampling_steps(requested: int, length: int) -> int:
        """A step unmasks at least one of `length` tokens, so more than `length` steps run empty."""
        return min(requested, length)

    def __init__(self, cfg: DiffusionConfig, mask_token_id: int):
        self.cfg = cfg
        self.mask_id = int(mask_token_id)
        self.schedule = MaskSchedule(cfg.mask_schedule)

    @classmethod
    def from_config(cls, cfg, *, mask_token_id: int | None = None, eos_token_id: int | None = None):
        if mask_token_id is None:
            raise ConfigError(f"objective {cls.name!r} needs the tokenizer's [MASK] id; the tokenizer has no [MASK] token")
        return cls(cfg.diffusion, mask_token_id)

    t_draws = staticmethod(antithetic_draws)

    @torch.no_grad()
    def sequence_nats(self, model, batch: dict, t_samples: int = 8, generator=None) -> torch.Tensor:
        """The continuous-time ELBO (MDLM Eq. 10) of each sequence (B,), nats/token: an upper bound on the NLL.

        Monte Carlo over t with antithetic pairs (t, 1 - t) on stratified draws, t mapped into
        [t_min, 1); the rows' t are shuffled so t does not follow row order.
        """
        x0 = batch["input_ids"]
        B = x0.shape[0]
        draws = []
        for _ in range(self.t_draws(t_samples) // 2):
            u = sample_t(B, t_min=0.0, generator=generator, device=x0.device)
            where = generator.device if generator is not None else "cpu"
            u = u[torch.randperm(B, generator=generator, device=where).to(x0.device)]  # decorrelate t from row order
            for t in (u, 1.0 - u):  # antithetic pair
                t = self.cfg.t_min + (1.0 - self.cfg.t_min) * t.clamp(0.0, 1.0 - 1e-7)
                draws.append(self.loss_at(model, batch, t, generator=generator)["elbo_per_seq"].double())
        return torch.stack(draws).mean(0)

    def scored(self, batch: dict) -> torch.Tensor:
        """(B, T) bool: the tokens the ELBO scores, every real one of the completion (`evaluate` counts their bytes)."""
        return real_tokens(batch, batch["input_ids"])

    def mask(self, x0: torch.Tensor, t: torch.Tensor, valid: torch.Tensor, generator=None):
        """Forward process q(z_t | x0): (B, T) ids, (B,) times -> (z_t, masked bool (B, T))."""
        u = torch.rand(x0.shape, device=x0.device, generator=generator)
        masked = (u < self.schedule.p_mask(t)[:, None]) & valid
        return torch.where(masked, torch.full_like(x0, self.mask_id), x0), masked

    def masked_logits(self, model, z, t, batch, masked) -> torch.Tensor:
        """SUBS logits of p_theta(x0_i | z_t) at the masked positions only: (N, V) for N = masked.sum().

        Logits are computed only where the loss needs them (the unmasked ones are copied
        through by SUBS), which saves the vocabulary projection on ~half the tokens. The
        attention sees document boundaries only where z_t shows an EOS (`visible_segments`).
        """
        am = batch.get("attention_mask")
        seg = batch.get("segment_ids")
        if seg is not None:
            seg = visible_segments(seg, z == self.mask_id, am)
        h = model.encode(z, t=t, segment_ids=seg, attention_mask=am)
        if self.cfg.shift_logits:
            h = shift_right(h)  # (B, T, d): row i now holds position i-1's output, which scores token i
        return subs_logits(model.logits(masked_rows(h, masked)).float(), self.mask_id)  # (N, V)

    def masked_nll(self, model, z, t, batch, masked) -> torch.Tensor:
        """-log p_theta(x0_i | z_t) at the masked positions only: (N,) for N = masked.sum()."""
        logits = self.masked_logits(model, z, t, batch, masked)  # (N, V)
        target = batch["input_ids"][masked]  # (N,)
        return torch.logsumexp(logits, -1) - logits.gather(-1, target[:, None]).squeeze(-1)

    def loss(self, model, batch: dict, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """ELBO per real token (a training loss and, averaged over t, an NLL upper bound)."""
        x0 = batch["input_ids"]  # (B, T)
        t = sample_t(x0.shape[0], t_min=self.cfg.t_min, low_discrepancy=self.cfg.low_discrepancy,
                     device=x0.device, generator=generator)
        out = self.loss_at(model, batch, t, generator)
        if self.cfg.masked_loss == "masked_mean":
            # Each sequence's mean CE over its masked tokens: since E[#masked] = t * n_tok, this is
            # the ELBO's per-sequence term sum_masked CE / t / n_tok (linear schedule) with the 1/t
            # replaced by 1/#masked, averaged over the rows that have a masked token.
            n_masked = out["n_masked"]
            has = n_masked > 0
            out["elbo"] = out["loss"]  # what validation reports (val/loss), whatever the training loss
            out["loss"] = (out["ce_per_seq"][has] / n_masked[has]).sum() / has.sum().clamp(min=1)
        return out

    def loss_at(self, model, batch, t, generator=None) -> dict[str, torch.Tensor]:
        """The ELBO estimate at given times t (B,) in (0, 1]: also used by evaluation (antithetic t)."""
        x0 = batch["input_ids"]
        valid = real_tokens(batch, x0)
        z, masked = self.mask(x0, t, valid, generator)
        nll = self.masked_nll(model, z, t, batch, masked)  # (N,)
        w = self.schedule.weight(t)[:, None].expand_as(x0)[masked]  # (N,)
        rows = masked.nonzero()[:, 0]
        per_seq = torch.zeros(x0.shape[0], device=x0.device).index_add_(
            0, rows, (w * nll).to(torch.float32))  # (B,) sum over masked tokens
        n_tok = valid.sum(1).clamp(min=1).float()  # (B,)
        loss = per_seq.sum() / n_tok.sum()
        return {
            "loss": loss,
            "elbo_per_seq": per_seq / n_tok,  # (B,) nats/token, for Monte-Carlo evaluation
            "masked_ce": nll.mean() if nll.numel() else loss.new_zeros(()),
            "mask_fraction": masked.sum() / valid.sum().clamp(min=1),
            **({"ce_per_seq": torch.zeros_like(per_seq).index_add_(0, rows, nll.to(torch.float32)),  # (B,) unweighted
                "n_masked": masked.sum(1)}  # (B,): what masked_mean reads, built only for it
               if self.cfg.masked_loss == "masked_mean" else {}),
        }

    @torch.no_grad()
    def continuation_score(self, model, x: torch.Tensor, n: int, *, draws: int, batch: int,
                           generator: torch.Generator) -> tuple[float, bool]:
        """(Monte-Carlo ELBO of the last n tokens of x (1, T) given the rest, whether greedy decoding yields them:
        all n masked, argmax = them).

        LLaDA's conditional estimator (Nie et al. 2025, Eq. 6, used in their lm-eval code): per
        draw, l ~ U{1..n} continuation tokens are masked uniformly at random and their NLLs are
        summed with weight n / l; unbiased for the same bound as the continuous-time ELBO, with
        far lower variance than w(t) = 1/t at small t. Time-conditioned models get t = l / n.
        `draws` draws in batches of `batch` rows.
        """
        dev, T, total = x.device, x.shape[1], []
        timed = model.cfg.time_conditioning
        for B in [min(batch, draws - i) for i in range(0, draws, batch)]:
            l = torch.randint(1, n + 1, (B,), generator=generator, device=dev)  # (B,) masked counts
            rank = torch.rand(B, n, generator=generator, device=dev).argsort(-1).argsort(-1)  # random ranks
            masked = torch.zeros(B, T, dtype=torch.bool, device=dev)
            masked[:, -n:] = rank < l[:, None]  # l random continuation positions per row
            z = x.expand(B, -1).masked_fill(masked, self.mask_id)
            t = l.float() / n if timed else None
            nll = self.masked_nll(model, z, t, {"input_ids": x.expand(B, -1)}, masked)  # (N,)
            per_row = torch.zeros(B, device=dev).index_add_(0, masked.nonzero()[:, 0], nll.float())
            total.append(per_row * n / l.float())  # (B,) nats of the continuation
        z = x.masked_fill(torch.arange(T, device=dev) >= T - n, self.mask_id)
        h = model.encode(z, t=torch.ones(1, device=dev) if timed else None)
        logits = subs_logits(model.logits((shift_right(h) if self.cfg.shift_logits else h)[0, -n:]).float(), self.mask_id)
        return -torch.cat(total).mean().item(), bool((logits.argmax(-1) == x[0, -n:]).all())


def elbo_closed_form_weight(k: int, L: int) -> float:
    """Integral over t of w(t) * P(a given set of k of L tokens is exactly the masked set), linear schedule.

    int_0^1 (1/t) t^k (1 - t)^(L - k) dt = B(k, L - k + 1) = (k - 1)! (L - k)! / L!
    (used by tests to compute the ELBO of a toy model exactly).
    """
    return math.factorial(k - 1) * math.factorial(L - k) / math.factorial(L)
