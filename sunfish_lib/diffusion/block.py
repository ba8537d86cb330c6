"""Block diffusion (BD3-LM, Arriola et al., ICLR 2025): blocks left to right, masked diffusion inside each.

x0 of length L is cut into L / K blocks of K tokens (K = `diffusion.block_size`) and modelled as
log p(x) = sum_b log p(x^b | x^{<b}), each conditional a masked-diffusion model of block b given the
clean blocks before it. Its NELBO (Arriola et al. Eq. 8; MDLM Eq. 10 inside each block):

    -log p(x) <= sum_b E_{t_b ~ U[0,1]} E_{z^b ~ q(.|x^b, t_b)} [ w(t_b) sum_{i in b, masked} -log p_theta(x_i | z^b, x^{<b}) ]

each block with its own t_b, w(t) = -alpha'_t / (1 - alpha_t) = 1/t on both mask schedules
(`masked.MaskSchedule`), the SUBS parameterisation (never predict [MASK], copy unmasked tokens).
Reported per real token, like the masked ELBO; `kind` says it is a bound.

Vectorised training (BD3-LM Sec. 3.2): [z, x0] (B, 2L) run through the backbone once, both halves at
positions 0..L-1, under the mask (True = may attend)

    [[M_BD, M_OBC],     M_BD  (z -> z):   block-diagonal: noisy block b sees itself;
     [ 0,   M_BC ]]     M_OBC (z -> x0):  noisy block b sees the clean blocks < b;
                        M_BC  (x0 -> x0): block-causal: clean block b sees the clean blocks <= b.

The logits for block b are read at z's block b. Clean positions never see z, so their keys/values are
what sampling caches (`sampling.block`): the training forward is the sampler's forward, batched.

Limits (tests/test_block_diffusion.py): K = L is one noisy block that sees only itself, i.e. MDLM;
K = 1 makes every noisy token a lone [MASK] at position i (or its own token, copied by SUBS) seeing
x_{<i}, and w(t) P(masked | t) = 1, so the expectation is exactly sum_i -log p_theta(x_i | x_{<i}, [MASK]
at i): an autoregressive model on the same weights.

Clipped schedule (`diffusion.t_clip = [low, high]`, BD3-LM Sec. 5.2): training draws t_b from [low, high]
instead of [0, 1] (the paper names the variance of the NELBO's gradient as the gap to AR at small K;
clipping removes the rarely-masked and all-masked extremes). Evaluation (`loss_at`, `sequence_nats`) always
integrates t over the whole [t_min, 1], so it stays the bound.

Keep-the-shift (`diffusion.shift_logits`, for models converted from an AR parent: `sunfish convert
--objective block`): token i is scored by the state at i - 1 (`block_shift`); a block's first token by the
clean stream's last state of the block before, which sees only clean blocks < b, so no peeking.
"""

from __future__ import annotations

import torch
from torch.nn.attention.flex_attention import create_block_mask

from sunfish_lib.model.attention import use_flex
from sunfish_lib.config import BACKBONE_NEEDS, SAMPLERS, DiffusionConfig
from sunfish_lib.diffusion.masked import MaskedDiffusion, masked_rows
from sunfish_lib.diffusion.timesteps import sample_t
from sunfish_lib.errors import ConfigError


def bd3_allowed(q: torch.Tensor, kv: torch.Tensor, L: int, K: int) -> torch.Tensor:
    """The BD3-LM predicate on index tensors q, kv in [0, 2L) ([z, x0] layout): True = q may attend to kv."""
    q_noisy, kv_noisy = q < L, kv < L
    q_blk, kv_blk = (q % L) // K, (kv % L) // K
    same_noisy = q_noisy & kv_noisy & (q_blk == kv_blk)  # M_BD
    past_clean = q_noisy & ~kv_noisy & (kv_blk < q_blk)  # M_OBC
    clean_causal = ~q_noisy & ~kv_noisy & (kv_blk <= q_blk)  # M_BC
    return same_noisy | past_clean | clean_causal


def bd3_dense_mask(L: int, K: int, device, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Dense bool mask (B or 1, 1, 2L, 2L) for the [z, x0] forward; padding keys (attention_mask 0) masked."""
    idx = torch.arange(2 * L, device=device)
    mask = bd3_allowed(idx[:, None], idx[None, :], L, K)[None, None]  # (1, 1, 2L, 2L)
    if attention_mask is not None:
        keep = attention_mask.bool().repeat(1, 2)  # (B, 2L): the clean copy pads where z does
        mask = mask & keep[:, None, None, :]
    return mask | torch.eye(2 * L, dtype=torch.bool, device=device)  # a padded query sees itself: no NaN


def bd3_block_mask(L: int, K: int, device, attention_mask: torch.Tensor | None = None):
    """The same predicate as `bd3_dense_mask`, as a FlexAttention BlockMask (CUDA: tiles outside it are skipped)."""
    keep = None if attention_mask is None else attention_mask.bool().repeat(1, 2)  # (B, 2L)

    def mask_mod(b, h, q, kv):
        allowed = bd3_allowed(q, kv, L, K)
        if keep is not None:
            allowed = allowed & keep[b, kv]
        return allowed | (q == kv)

    return create_block_mask(mask_mod, None if keep is None else keep.shape[0], None, 2 * L, 2 * L, device=device)


def block_causal_mask(T: int, K: int, device) -> torch.Tensor:
    """Dense bool (1, 1, T, T): position q sees the positions of blocks <= its block (M_BC on one stream)."""
    blk = torch.arange(T, device=device) // K
    return (blk[None, :] <= blk[:, None])[None, None]


def block_shift(noisy: torch.Tensor, clean: torch.Tensor, K: int) -> torch.Tensor:
    """Keep the AR shift inside block diffusion (Fast-dLLM v2 / dllm's A2D): (B, L, d) states where row i holds
    the state that scores token i: the noisy stream's i - 1 inside a block, the clean stream's i - 1 (the last
    token of the clean block before) at a block's first position, its own at position 0. With K = 1 every row
    but the first reads the clean block-causal stream: exactly the AR parent's next-token state."""
    L = noisy.shape[1]
    prev = torch.cat([noisy[:, :1], noisy[:, :-1]], 1)  # (B, L, d): noisy i - 1
    prev_clean = torch.cat([noisy[:, :1], clean[:, :-1]], 1)  # (B, L, d): clean i - 1
    first = (torch.arange(L, device=noisy.device) % K == 0)[None, :, None]  # a block's first position
    return torch.where(first, prev_clean, prev)


class BlockDiffusion(MaskedDiffusion):
    """The block-diffusion objective: per-block masking, the [z, x0] forward, the summed per-block NELBO.

    Shares masked diffusion's schedule, SUBS, step count and t draws (`MaskedDiffusion`); replaces its
    forward pass, loss and scores."""

    name = "block"
    kind = "ELBO upper bound"  # the per-block NELBO: a bound, as the masked one (evaluate.is_likelihood)
    samplers = SAMPLERS["block"]
    backbone_needs = BACKBONE_NEEDS["block"]

    def __init__(self, cfg: DiffusionConfig, mask_token_id: int):
        super().__init__(cfg, mask_token_id)
        self.block_size = int(cfg.block_size)

    def n_blocks(self, L: int) -> int:
        if L % self.block_size:
            raise ConfigError(f"diffusion.block_size={self.block_size} does not divide the sequence length {L}; "
                              "pick a divisor of seq_len")
        return L // self.block_size

    # -- forward process ------------------------------------------------------------
    def block_times(self, B: int, L: int, generator=None, device=None, clip: bool = True) -> torch.Tensor:
        """(B, L/K) t per block: stratified over the B * L/K blocks, shuffled, mapped into t_clip (training)."""
        nb = self.n_blocks(L)
        u = sample_t(B * nb, t_min=0.0, low_discrepancy=self.cfg.low_discrepancy, device=device, generator=generator)
        where = generator.device if generator is not None else "cpu"
        u = u[torch.randperm(B * nb, generator=generator, device=where).to(u.device)].view(B, nb)
        lo, hi = self.cfg.t_clip if clip else (0.0, 1.0)
        return (lo + (hi - lo) * u).clamp(min=self.cfg.t_min)

    def token_times(self, t: torch.Tensor, B: int, L: int) -> torch.Tensor:
        """t (B,) (every block alike) or (B, L/K) -> (B, L) each token its block's t."""
        t = t.reshape(B, -1)
        if t.shape[1] == 1:
            return t.expand(B, L)
        if t.shape[1] != self.n_blocks(L):
            raise ValueError(f"t has {t.shape[1]} columns; give (B,) or (B, {L // self.block_size}) block times")
        return t.repeat_interleave(self.block_size, dim=1)

    def mask(self, x0: torch.Tensor, t_tok: torch.Tensor, valid: torch.Tensor, generator=None):
        """q(z | x0): each token [MASK] with probability p_mask(t of its block). (B, L) -> (z, masked)."""
        u = torch.rand(x0.shape, device=x0.device, generator=generator)
        masked = (u < self.schedule.p_mask(t_tok)) & valid
        return torch.where(masked, torch.full_like(x0, self.mask_id), x0), masked

    # -- model ------------------------------------------------------------------------
    def noisy_hidden(self, model, z: torch.Tensor, x0: torch.Tensor, attention_mask=None) -> torch.Tensor:
        """Hidden states (B, L, d) at z's positions from one [z, x0] pass under the BD3-LM mask."""
        B, L = z.shape
        dropout = model.cfg.dropout if model.training else 0.0
        if use_flex(getattr(model, "attention_kernel", "auto"), z.device, dropout):
            mask = bd3_block_mask(L, self.block_size, z.device, attention_mask)
        else:
            mask = bd3_dense_mask(L, self.block_size, z.device, attention_mask)
        pos = torch.arange(L, device=z.device).repeat(2)  # (2L,): z and x0 at the same positions
        h = model.encode(torch.cat([z, x0], 1), positions=pos, attn_mask=mask)  # (B, 2L, d)
        return block_shift(h[:, :L], h[:, L:], self.block_size) if self.cfg.shift_logits else h[:, :L]

    def masked_nll(self, model, z, x0, masked, attention_mask=None) -> torch.Tensor:
        """-log p_theta(x0_i | z^b, x0^{<b}) at the masked positions: (N,) for N = masked.sum()."""
        h = self.noisy_hidden(model, z, x0, attention_mask)
        logits = model.logits(masked_rows(h, masked)).float()  # (N, V)
        logits[:, self.mask_id] = float("-inf")  # SUBS: never predict [MASK]
        target = x0[masked]
        return torch.logsumexp(logits, -1) - logits.gather(-1, target[:, None]).squeeze(-1)

    # -- losses ----------------------------------------------------------------------
    def loss(self, model, batch: dict, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """The NELBO per real token, each block at its own t from the (clipped) schedule."""
        x0 = batch["input_ids"]
        t = self.block_times(*x0.shape, generator=generator, device=x0.device)
        return self.loss_at(model, batch, t, generator)

    def loss_at(self, model, batch, t, generator=None) -> dict[str, torch.Tensor]:
        """The NELBO estimate at given times: t (B,) for every block alike, or (B, L/K) one per block."""
        x0 = batch["input_ids"]
        B, L = x0.shape
        valid = self.scored(batch)  # every real token (masked diffusion's set)
        t_tok = self.token_times(t.to(x0.device), B, L)  # (B, L)
        z, masked = self.mask(x0, t_tok, valid, generator)
        nll = self.masked_nll(model, z, x0, masked, batch.get("attention_mask"))  # (N,)
        w = self.schedule.weight(t_tok)[masked]  # (N,) 1/t_b
        rows = masked.nonzero()[:, 0]
        per_seq = torch.zeros(B, device=x0.device).index_add_(0, rows, (w * nll).to(torch.float32))  # (B,)
        n_tok = valid.sum(1).clamp(min=1).float()
        return {
            "loss": per_seq.sum() / n_tok.sum(),
            "elbo_per_seq": per_seq / n_tok,  # (B,) nats/token
            "masked_ce": nll.mean() if nll.numel() else per_seq.new_zeros(()),
            "mask_fraction": masked.sum() / valid.sum().clamp(min=1),
        }

    @torch.no_grad()
    def sequence_nats(self, model, batch: dict, t_samples: int = 8, generator=None) -> torch.Tensor:
        """The NELBO of each sequence (B,), nats/token: Monte Carlo over per-block t, antithetic pairs (t, 1 - t)."""
        x0 = batch["input_ids"]
        draws = []
        for _ in range(self.t_draws(t_samples) // 2):
            u = self.block_times(*x0.shape, generator=generator, device=x0.device, clip=False)
            for t in (u, 1.0 - u):
                t = self.cfg.t_min + (1.0 - self.cfg.t_min) * t.clamp(0.0, 1.0 - 1e-7)
                draws.append(self.loss_at(model, batch, t, generator=generator)["elbo_per_seq"].double())
        return torch.stack(draws).mean(0)

    @torch.no_grad()
    def continuation_score(self, model, x: torch.Tensor, n: int, *, draws: int, batch: int,
                           generator: torch.Generator) -> tuple[float, bool]:
        """(Monte-Carlo NELBO of the last n tokens of x (1, T) given the rest, whether greedy decoding yields
        them: every continuation token masked, each block's argmax = them, blocks given the true ones before).

        Per block, LLaDA's conditional estimator (Nie et al. 2025, Eq. 6) on the block's n_b continuation
        tokens: l_b ~ U{1..n_b} of them masked at random, their NLLs weighted n_b / l_b; context tokens in
        the block stay visible. Unbiased for the same per-block bound, far lower variance than w(t) = 1/t.
        """
        dev, T = x.device, x.shape[1]
        K, nb = self.block_size, -(-T // self.block_size)
        pad = nb * K - T  # right padding up to whole blocks (never attended to, never scored)
        xp = torch.cat([x, x.new_zeros(1, pad)], 1) if pad else x
        am = (torch.arange(nb * K, device=dev) < T).long()[None] if pad else None
        cont = (torch.arange(nb * K, device=dev) >= T - n) & (torch.arange(nb * K, device=dev) < T)  # (T',)
        n_b = cont.view(nb, K).sum(1)  # (nb,)
        total = []
        for B in [min(batch, draws - i) for i in range(0, draws, batch)]:
            u = torch.rand(B, nb * K, generator=generator, device=dev).masked_fill(~cont, 2.0)
            rank = u.view(B, nb, K).argsort(-1).argsort(-1)  # (B, nb, K) continuation first, in random order
            l = (torch.rand(B, nb, generator=generator, device=dev) * n_b).floor().long() + 1  # (B, nb)
            masked = (rank < l[..., None]).view(B, -1) & cont  # (B, T')
            x0 = xp.expand(B, -1)
            z = x0.masked_fill(masked, self.mask_id)
            nll = self.masked_nll(model, z, x0, masked, None if am is None else am.expand(B, -1))  # (N,)
            w = (n_b[None] / l.clamp(min=1)).repeat_interleave(K, 1)[masked].float()  # (N,)
            total.append(torch.zeros(B, device=dev).index_add_(0, masked.nonzero()[:, 0], w * nll.float()))
        z = xp.masked_fill(cont[None], self.mask_id)
        h = self.noisy_hidden(model, z, xp, am)[0, cont]  # (n, d)
        logits = model.logits(h).float()
        logits[:, self.mask_id] = float("-inf")
        return -torch.cat(total).mean().item(), bool((logits.argmax(-1) == x[0, -n:]).all())
