"""The autoregressive baseline: the same backbone with causal attention, next-token loss.

-log p(x) = -sum_i log p(x_i | x_<i): exact, so its validation NLL is the reference
every diffusion number is compared against.

Scored tokens. With `bos_token_id` (the EOS; what `build_objective` passes) the model reads
[BOS, x_0, ..., x_{T-2}] and predicts x_0, ..., x_{T-1}: every real token of the row is
scored, exactly the set the masked ELBO scores, so the two numbers (and their bits per
byte) describe the same text. Sampling starts from the same EOS-as-BOS. Without it (a bare
`Autoregressive()`) the row's first token has no loss and T-1 targets are scored.
`scored(batch)` returns the target positions either way; per-token means divide by them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sunfish_lib.config import BACKBONE_NEEDS, SAMPLERS, DiffusionConfig


class Autoregressive:
    """Next-token prediction on packed sequences (see the module docstring for which tokens are scored)."""

    name = "ar"
    kind = "exact NLL"
    samplers = SAMPLERS["ar"]
    backbone_needs = BACKBONE_NEEDS["ar"]
    iterative = False  # one token per forward pass: no denoising steps to choose or record
    likelihood = True  # scores a continuation exactly (`continuation_score`)

    @staticmethod
    def sampling_steps(requested: int, length: int) -> int:
        return requested  # unused: ar decodes `length` tokens one at a time

    def __init__(self, cfg: DiffusionConfig | None = None, bos_token_id: int | None = None):
        self.cfg = cfg
        self.bos_id = bos_token_id

    @classmethod
    def from_config(cls, cfg, *, mask_token_id: int | None = None, eos_token_id: int | None = None):
        """The AR baseline reads the EOS as BOS, so it scores every token (module docstring)."""
        return cls(cfg.diffusion, bos_token_id=eos_token_id)

    def t_draws(self, t_samples: int) -> int:
        return 0  # exact: no noise levels to average

    def sequence_nats(self, model, batch: dict, t_samples: int = 0, generator=None) -> torch.Tensor:
        """-1/n sum_i log p(x_i | x_<i) of each sequence (B,), exact."""
        return self.loss(model, batch)["nll_per_seq"].double()

    def scored(self, batch: dict) -> torch.Tensor:
        """(B, T) bool: positions whose token is a target of the loss."""
        x, am, lm = batch["input_ids"], batch.get("attention_mask"), batch.get("loss_mask")
        real = torch.ones_like(x, dtype=torch.bool) if am is None else am.bool()
        if lm is not None:
            real = real & lm.bool()  # conditional data: the loss on the completion only (the prompt is context)
        if self.bos_id is not None:
            return real
        return torch.cat([torch.zeros_like(real[:, :1]), real[:, 1:] & real[:, :-1]], 1)

    def _inputs(self, batch: dict):
        """(input ids, segment ids, attention mask) the causal model reads, each (B, T)."""
        x, am, seg = batch["input_ids"], batch.get("attention_mask"), batch.get("segment_ids")
        if self.bos_id is None:
            return x, seg, am
        x = torch.cat([torch.full_like(x[:, :1], self.bos_id), x[:, :-1]], 1)  # position i reads x_{i-1}
        am = None if am is None else torch.cat([torch.ones_like(am[:, :1]), am[:, :-1]], 1)
        seg = None if seg is None else torch.cat([seg[:, :1] - 1, seg[:, :-1]], 1)  # BOS: a block of its own
        return x, seg, am

    def loss(self, model, batch: dict, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        x = batch["input_ids"]  # (B, T)
        inp, seg, am = self._inputs(batch)
        h = model.encode(inp, segment_ids=seg, attention_mask=am)  # (B, T, d)
        if self.bos_id is None:
            h, x = h[:, :-1], x[:, 1:]  # position i predicts token i+1
        logits = model.logits(h).float()  # (B, T', V)
        nll = F.cross_entropy(logits.flatten(0, 1), x.flatten(), reduction="none").view_as(x)
        scored = self.scored(batch)[:, -x.shape[1]:]  # (B, T')
        per_seq = (nll * scored).sum(1)  # (B,)
        n_tok = scored.sum(1).clamp(min=1).float()
        return {"loss": per_seq.sum() / n_tok.sum(), "nll_per_seq": per_seq / n_tok}

    @torch.no_grad()
    def continuation_score(self, model, x: torch.Tensor, n: int, **_mc) -> tuple[float, bool]:
        """(log p of the last n tokens of x (1, T) given the rest, whether greedy decoding yields them): exact."""
        logp = F.log_softmax(model(x)[0, -n - 1:-1].float(), -1)  # (n, V): position i predicts i + 1
        target = x[0, -n:]
        return logp.gather(-1, target[:, None]).sum().item(), bool((logp.argmax(-1) == target).all())
