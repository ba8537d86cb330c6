"""Packing: a token stream (documents joined by EOS) cut into fixed-length rows, no padding waste.

A batch is a dict of (B, T) tensors:

- `input_ids` (long): tokens. Each document is followed by EOS; a document that does
  not fit the rest of a row continues at the start of the next row, so concatenating
  the rows (without padding) reproduces the token stream exactly.
- `attention_mask` (long, 1 real / 0 padding): present only when
  `random_length_fraction > 0`. That fraction of rows (LLaDA uses 1%) takes a length
  l ~ U{1..T} from the stream and is filled up to T with [PAD]; nothing is dropped,
  the next row continues the stream after those l tokens.
- `segment_ids` (long): present only when `cross_document_attention` is False. Document
  index within the row (0, 1, ...; an EOS belongs to the document it ends); padding
  gets one more index. The backbone builds a block-diagonal attention mask from it.

With `cross_document_attention=True` (the default, as in GPT-2 and LLaDA) attention
may cross EOS: cheaper (SDPA's unmasked kernels) and the model learns EOS as a boundary.

The sequence-length curriculum (`curriculum_steps > 0`) grows T linearly from
`curriculum_start_len` to `seq_len` over that many optimizer steps, rounded down to a
multiple of 8; shorter rows consume fewer tokens, so the stream stays exact.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PackSpec:
    """How one stream turns tokens into batches."""

    seq_len: int
    """T once any curriculum is over."""
    batch_size: int
    """Rows per batch."""
    eos_id: int
    pad_id: int
    cross_document_attention: bool = True
    random_length_fraction: float = 0.0
    curriculum_steps: int = 0
    curriculum_start_len: int = 64
    batches_per_step: int = 1
    """Micro-batches per optimizer step (accumulation); the curriculum counts steps."""
    always_attention_mask: bool = False
    """Emit `attention_mask` even without random lengths (validation of a run that pads)."""
    seed: int = 0

    @property
    def emits_attention_mask(self) -> bool:
        return self.random_length_fraction > 0 or self.always_attention_mask

    def length_at(self, batch_index: int) -> int:
        """Row length T for the batch with this per-rank index (the curriculum)."""
        return curriculum_length(batch_index // self.batches_per_step, self.seq_len,
                                 self.curriculum_start_len, self.curriculum_steps)

    def row_lengths(self, stream: int, batch_index: int, T: int) -> list[int]:
        """Tokens each row takes from the stream: T, or l ~ U{1..T} for a random fraction of rows."""
        if self.random_length_fraction <= 0:
            return [T] * self.batch_size
        rng = np.random.default_rng([self.seed, stream, batch_index, 0x5EED])
        short = rng.random(self.batch_size) < self.random_length_fraction
        draws = rng.integers(1, T + 1, size=self.batch_size)
        return [int(d) if s else T for s, d in zip(short, draws)]


def curriculum_length(step: int, seq_len: int, start_len: int, steps: int, multiple: int = 8) -> int:
    """Linear growth from start_len at step 0 to seq_len at `steps`, rounded down to `multiple`."""
    if steps <= 0 or step >= steps:
        return seq_len
    length = start_len + (seq_len - start_len) * step / steps
    rounded = int(length) // multiple * multiple
    return max(start_len, min(seq_len, rounded))


class TokenBuffer:
    """Tokenized documents waiting to be cut into rows; remembers which document each token is from."""

    def __init__(self):
        self._docs: deque = deque()  # [(tag, int32 array incl. EOS)]
        self.offset = 0  # tokens of the first document already consumed
        self.available = 0

    def push(self, tag, ids: np.ndarray) -> None:
        self._docs.append((tag, ids))
        self.available += len(ids)

    def take(self, n: int) -> np.ndarray:
        """The next min(n, available) tokens."""
        parts, need = [], min(n, self.available)
        self.available -= need
        while need:
            tag, ids = self._docs[0]
            piece = ids[self.offset: self.offset + need]
            parts.append(piece)
            need -= len(piece)
            self.offset += len(piece)
            if self.offset == len(ids):
                self._docs.popleft()
                self.offset = 0
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int32)

    def head(self):
        """(tag of the first pending document, tokens of it already consumed), or None when empty."""
        return (self._docs[0][0], self.offset) if self._docs else None


def make_batch(rows: list[np.ndarray], T: int, spec: PackSpec) -> dict[str, np.ndarray]:
    """Rows of <= T tokens -> arrays (B, T): input_ids, and attention_mask / segment_ids as configured."""
    B = len(rows)
    ids = np.full((B, T), spec.pad_id, dtype=np.int64)
    real = np.zeros((B, T), dtype=bool)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        real[i, : len(row)] = True
    out = {"input_ids": ids}
    if spec.emits_attention_mask:
        out["attention_mask"] = real.astype(np.int64)
    if not spec.cross_document_attention:
        out["segment_ids"] = segment_ids(ids, real, spec.eos_id)
    return out


def segment_ids(ids: np.ndarray, real: np.ndarray, eos_id: int) -> np.ndarray:
    """(B, T) document index within each row; EOS belongs to the document it ends; padding gets max + 1."""
    is_eos = (ids == eos_id) & real
    seg = np.cumsum(is_eos, axis=1) - is_eos  # EOS closes its own document
    pad_seg = seg.max(axis=1, keepdims=True, initial=0) + 1
    return np.where(real, seg, pad_seg).astype(np.int64)


def packing_stats(batch: dict, eos_id: int) -> dict[str, int]:
    """Counts for packing efficiency: slots, real tokens, EOS tokens, rows, rows ending mid-document."""
    ids = np.asarray(batch["input_ids"])
    real = np.asarray(batch["attention_mask"]).astype(bool) if "attention_mask" in batch else np.ones_like(ids, bool)
    lengths = real.sum(axis=1)
    last = ids[np.arange(len(ids)), np.maximum(lengths - 1, 0)]
    return {
        "slots": int(ids.size),
        "real_tokens": int(real.sum()),
        "eos_tokens": int(((ids == eos_id) & real).sum()),
        "rows": int(len(ids)),
        "rows_split": int(((last != eos_id) & (lengths > 0)).sum()),
    }
