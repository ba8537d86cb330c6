"""Token ids as text for people: one string per token, UTF-8 characters never cut.

Used by the sample display (`display`) and the trajectory views (`sampling.analysis`).
"""

from __future__ import annotations

from typing import Sequence

NEWLINE = "↵"
"""How a newline shows inside a sample (so a sample takes a few lines, not hundreds)."""


def decode_pieces(tokenizer, ids: Sequence[int], max_join: int = 4) -> list[str]:
    """One string per token whose concatenation is the decoded text, never cutting a UTF-8 character.

    A token that ends inside a multi-byte character (decoded alone it ends in U+FFFD) gets ""
    and the character goes to the token that completes it (at most `max_join` tokens, the
    longest UTF-8 sequence).
    """
    ids = [int(i) for i in ids]
    out, start = [], 0
    for k in range(len(ids)):
        text = tokenizer.decode(ids[start:k + 1])
        if text.endswith("\ufffd") and k + 1 < len(ids) and k + 1 - start < max_join:
            out.append("")
            continue
        out.append(text)
        start = k + 1
    return out
