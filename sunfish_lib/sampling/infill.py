"""Infilling templates: where to generate, as [MASK] ids in a (B, T) tensor (every sampler's convention).

- `template_ids(tokenizer, "To be [MASK] not to be", mask_length=4)`: text with [MASK]
  markers; each marker becomes `mask_length` [MASK] ids (the tokenizer keeps a literal
  "[MASK]" inside text as text, so the text is split on the marker and encoded piecewise).
- `expand_masks(ids, mask_id, mask_length)`: the same on ids that hold one [MASK] per span.
- `mask_spans(ids, starts, mask_length, mask_id)`: overwrite spans of an existing sequence.
"""

from __future__ import annotations

from typing import Sequence

import torch

from sunfish_lib.errors import SunfishError


def _check_length(mask_length: int) -> None:
    if not isinstance(mask_length, int) or mask_length < 1:
        raise SunfishError(f"sample.mask_length={mask_length!r} must be an integer >= 1")


def _check_fits(n: int, max_len: int | None) -> None:
    if max_len is not None and n > max_len:
        raise SunfishError(f"the infill template is {n} tokens, past the sequence limit {max_len}; "
                           "shorten the prompt or lower sample.mask_length")


def expand_masks(ids: Sequence[int], mask_id: int, mask_length: int, max_len: int | None = None) -> torch.Tensor:
    """One prompt's ids with single [MASK] markers -> (1, T) ids, each marker repeated mask_length times."""
    _check_length(mask_length)
    ids = [int(i) for i in ids]
    if mask_id not in ids:
        raise SunfishError("the infill prompt has no [MASK]: mark each span to generate with [MASK]")
    out: list[int] = []
    for i in ids:
        out.extend([mask_id] * mask_length if i == mask_id else [i])
    _check_fits(len(out), max_len)
    return torch.tensor([out], dtype=torch.long)


def template_ids(tokenizer, text: str, mask_length: int, max_len: int | None = None) -> torch.Tensor:
    """Text with [MASK] markers -> (1, T) ids; `tokenizer` has encode, mask_token and mask_token_id."""
    pieces = text.split(tokenizer.mask_token)
    ids: list[int] = []
    for j, piece in enumerate(pieces):
        if j:
            ids.append(tokenizer.mask_token_id)
        ids.extend(tokenizer.encode(piece) if piece else [])
    return expand_masks(ids, tokenizer.mask_token_id, mask_length, max_len)


def mask_spans(ids: torch.Tensor, starts: Sequence[int], mask_length: int, mask_id: int) -> torch.Tensor:
    """Copy of ids (B, T) with [start, start + mask_length) set to [MASK] for every start."""
    _check_length(mask_length)
    if not len(starts):
        raise SunfishError("mask_spans got no span starts: give at least one position to infill")
    T = ids.shape[-1]
    out = ids.clone()
    for s in starts:
        if s < 0 or s + mask_length > T:
            raise SunfishError(f"mask span [{s}, {s + mask_length}) runs past the sequence of {T} tokens; "
                               f"start it in [0, {T - mask_length}]")
        out[..., s:s + mask_length] = mask_id
    return out
