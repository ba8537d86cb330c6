"""What a generation starts from and what it returns (`session.sample` is the one entry point).

Every sampler fills the [MASK] positions of a (B, T) id tensor and keeps the rest:
- `uncond`: B rows of `length` [MASK] (a prompt without [MASK] is kept as a prefix);
- `infill`: the prompt's [MASK] markers, each expanded to `mask_length` [MASK] ids.
The AR baseline can only extend a prefix, so it takes prompts whose masks form a suffix.
Prompts of different lengths (`sample(prompts=[...])`) are right-padded into one batch
(`pad_rows`); the padding is never attended to, so each row is what it would be alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sunfish_lib.config import SampleConfig
from sunfish_lib.errors import SunfishError
from sunfish_lib.sampling.infill import template_ids
from sunfish_lib.sampling.trajectory import Trajectory

MODES = ("uncond", "infill")


def initial_ids(tokenizer, *, mode: str, prompt: str = "", length: int, mask_length: int, num_samples: int,
                max_len: int) -> torch.Tensor:
    """The (num_samples, T) ids to fill, [MASK] where text is to be generated."""
    if mode not in MODES:
        raise SunfishError(f"mode={mode!r} is not allowed; choose uncond or infill")
    mask_tok = tokenizer.mask_token
    if mode == "infill":
        if mask_tok not in prompt:
            raise SunfishError(f"infill mode needs a prompt with {mask_tok}, e.g. 'To be [MASK] to be'")
        row = template_ids(tokenizer, prompt, mask_length, max_len)[0]
    else:
        if mask_tok in prompt:
            raise SunfishError(f"the prompt has {mask_tok} but mode is uncond; use mode infill")
        if length < 1:
            raise SunfishError(f"length={length} must be >= 1")
        prefix = tokenizer.encode(prompt) if prompt else []
        row = torch.tensor(prefix + [tokenizer.mask_token_id] * length, dtype=torch.long)
        if row.numel() > max_len:
            raise SunfishError(f"prompt + length = {row.numel()} tokens, past the model's limit {max_len}; "
                               "shorten the prompt or lower length")
    return row[None].repeat(num_samples, 1)


@dataclass
class Generation:
    ids: torch.Tensor  # (B, T) final tokens
    start: torch.Tensor  # (B, T) what the sampler was given ([MASK] where it generated)
    texts: list[str]
    trajectory: Trajectory | None
    forward_passes: int
    sample: SampleConfig | None = None  # the settings it was drawn with
    lengths: list[int] | None = None  # per row, when rows of different lengths were padded (right) into ids
    positions: int | None = None  # token positions the model ran (masked samplers)

    def rows(self) -> list[tuple[list[int], list[int]]]:
        """(final ids, start ids) of each row, padding removed."""
        n = self.lengths or [self.ids.shape[1]] * self.ids.shape[0]
        return [(r[:k].tolist(), s[:k].tolist()) for r, s, k in zip(self.ids, self.start, n)]


def pad_rows(rows: list[torch.Tensor], pad_id: int) -> tuple[torch.Tensor, torch.Tensor | None, list[int]]:
    """Right-pad (n_i, T_i) id blocks into (sum n_i, max T_i): (ids, attention mask 1 on real tokens or None
    when all rows are as long, lengths)."""
    lengths = [r.shape[1] for r in rows for _ in range(r.shape[0])]
    T = max(lengths)
    x = torch.cat([torch.nn.functional.pad(r, (0, T - r.shape[1]), value=pad_id) for r in rows])
    if min(lengths) == T:
        return x, None, lengths
    keys = (torch.arange(T)[None] < torch.tensor(lengths)[:, None]).long()
    return x, keys, lengths
