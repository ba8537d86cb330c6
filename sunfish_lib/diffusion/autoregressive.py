"""The autoregressive baseline: the same backbone with causal attention, next-token loss.

-log p(x) = -sum_i log p(x_i | x_<i): exact, so its validation NLL is the reference
every diffusion number is compared against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sunfish_lib.config import DiffusionConfig


class Autoregressive:
    """Next-token prediction on packed sequences (the first token of a sequence has no loss)."""

    name = "ar"

    def __init__(self, cfg: DiffusionConfig | None = None):
        self.cfg = cfg

    def loss(self, model, batch: dict, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        x = batch["input_ids"]  # (B, T)
        am = batch.get("attention_mask")
        h = model.encode(x, segment_ids=batch.get("segment_ids"), attention_mask=am)  # (B, T, d)
        logits = model.logits(h[:, :-1]).float()  # (B, T-1, V): position i predicts token i+1
        target = x[:, 1:]
        nll = F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none").view_as(target)
        valid = torch.ones_like(target, dtype=torch.bool) if am is None else (am[:, 1:].bool() & am[:, :-1].bool())
        per_seq = (nll * valid).sum(1)  # (B,)
        n_tok = valid.sum(1).clamp(min=1).float()
        return {"loss": per_seq.sum() / n_tok.sum(), "nll_per_seq": per_seq / n_tok}
