"""One stream of batches — the slice of a source that one (rank, worker) reads — with exact state.

Documents are read in blocks of `block_rows` source rows; with shuffling on, each block
is permuted by a generator seeded from (seed, stream, epoch, block). This is the
streaming shuffle buffer: its window is the block, and, unlike a reservoir buffer, it
can be rebuilt exactly from where the block started, so resuming loses nothing.

The position of a stream is tiny: where the first not-yet-emitted token comes from —
(epoch, block, the `datasets` state at the block's start, index in the block, tokens of
that document already emitted) — plus how many batches it has produced. Restoring
re-reads one block, re-tokenizes one document and continues with the next unseen token.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np

from sunfish_lib.data import retry
from sunfish_lib.data.packing import PackSpec, TokenBuffer, make_batch
from sunfish_lib.data.retry import DataStreamError, RetryPolicy
from sunfish_lib.data.sources import RowFilter, SourceSpec, input_error
from sunfish_lib.errors import SunfishError

log = logging.getLogger(__name__)


class BlockReader:
    """Documents of one stream, block-shuffled, pass after pass (or one pass when `loop` is False).

    `ds` must be a fresh `datasets.IterableDataset` (not iterated yet) owned by this reader.
    A read that fails transiently is retried per `retry` from the state after the last rows received.
    """

    def __init__(self, ds, rows: RowFilter, spec: SourceSpec, *, stream: int, seed: int = 0, loop: bool = True,
                 block_rows: int = 1000, pull: int = 64, shuffle: bool = True, retry: RetryPolicy = RetryPolicy()):
        self.ds, self.rows, self.spec, self.retry = ds, rows, spec, retry
        self.stream, self.seed, self.loop, self.shuffle = stream, seed, loop, shuffle
        self.pull = max(1, min(pull, block_rows))
        self.block_rows = max(block_rows, 1)
        self._init_state = ds.state_dict() if ds is not None else None
        self.seek(None)

    def seek(self, pos: dict | None) -> None:
        """Continue at `pos` (a `position()` or a document tag); None: the very start."""
        pos = pos or {"epoch": 0, "block": 0, "hf": None, "index": 0}
        self.epoch, self.block_no = pos["epoch"], pos["block"]
        self._hf_state = pos["hf"]
        self._from_start = pos["hf"] is None and pos["block"] == 0
        self._pass_docs = 0
        if self.ds is not None:
            self.ds.load_state_dict(pos["hf"] if pos["hf"] is not None else self._init_state)
            self._it = self.ds.iter(batch_size=self.pull)
        self._exhausted = self.ds is None
        self._load_block()
        self.index = min(pos["index"], len(self.block))

    def position(self) -> dict:
        """Where the next document comes from."""
        return {"epoch": self.epoch, "block": self.block_no, "hf": self._block_start, "index": self.index}

    def next_doc(self) -> tuple[dict, str] | None:
        """(tag, text) of the next document; None when a single pass is over."""
        while self.index >= len(self.block):
            if not self._exhausted:
                self.block_no += 1
                self._load_block()
                continue
            if not self.loop:
                return None
            if self._from_start and self._pass_docs == 0:
                raise SunfishError(f"data.source={self.spec.source!r} gives stream {self.stream} no documents "
                                   "(empty files or too few documents for this many ranks x workers); "
                                   "add documents or use fewer data.num_workers")
            self.seek({"epoch": self.epoch + 1, "block": 0, "hf": None, "index": 0})
        tag = self.position()
        self.index += 1
        self._pass_docs += 1
        return tag, self.block[tag["index"]]

    def _load_block(self) -> None:
        self._block_start = self._hf_state
        docs, rows = [], 0
        while rows < self.block_rows and not self._exhausted:
            batch = self._pull()
            if batch is None:
                self._exhausted = True
                break
            rows += len(next(iter(batch.values()), []))
            docs.extend(self.rows(batch))
            self._hf_state = self.ds.state_dict()
        if self.shuffle and len(docs) > 1:
            rng = np.random.default_rng([self.seed, self.stream, self.epoch, self.block_no])
            docs = [docs[i] for i in rng.permutation(len(docs))]
        self.block, self.index = docs, 0

    def _pull(self) -> dict | None:
        """The next batch of rows; transient failures are retried from the state after the last batch."""
        attempt, waited = 0, 0.0
        while True:
            try:
                return next(self._it, None)
            except Exception as e:
                if not retry.is_transient(e):
                    bad = input_error(self.spec, e)  # a malformed record or text: the same on every read
                    raise (DataStreamError(str(bad)) if bad is not None else e) from None
                attempt += 1
                if attempt > self.retry.retries:
                    raise retry.exhausted_error(self.spec.source, self.spec.kind == "hub", e, attempt, waited) from None
                delay = self.retry.delay(attempt)
                retry.log_retry(self.spec.source, e, attempt, self.retry.retries, delay)
                retry.sleep(delay)
                waited += delay
                # A generator that raised is finished: reopen the stream where the last batch ended.
                self.ds.load_state_dict(self._hf_state if self._hf_state is not None else self._init_state)
                self._it = self.ds.iter(batch_size=self.pull)


class PackedStream:
    """Batches of one stream: documents -> tokens + EOS -> rows of the curriculum's length -> dicts."""

    def __init__(self, reader: BlockReader, encode_batch: Callable[[list[str]], list[list[int]]], pack: PackSpec,
                 *, stream: int = 0, num_streams: int = 1, tokenize_docs: int = 64, tokenize_chars: int = 1 << 16):
        self.reader, self.encode_batch, self.pack = reader, encode_batch, pack
        self.stream, self.num_streams = stream, num_streams
        # Tokenize in batches of up to `tokenize_docs` documents or `tokenize_chars` characters:
        # batched calls are fast, and the buffer stays small (one long document at a time).
        self.tokenize_docs, self.tokenize_chars = tokenize_docs, tokenize_chars
        self.buffer = TokenBuffer()
        self.batches = 0  # batches produced by this stream
        self._done = False

    # -- state ---------------------------------------------------------------------------
    def state(self) -> dict:
        """Everything needed to continue with the next unseen token (plain Python, a few hundred bytes)."""
        head = self.buffer.head()
        pos, offset = head if head is not None else (self.reader.position(), 0)
        return {"pos": pos, "offset": int(offset), "batches": self.batches}

    def restore(self, state: dict | None) -> None:
        """Continue from a `state()`; None: from the start."""
        self.buffer = TokenBuffer()
        self._done = False
        self.batches = state["batches"] if state else 0
        self.reader.seek(state["pos"] if state else None)
        if state and state["offset"]:
            self._tokenize(1)
            self.buffer.take(state["offset"])

    # -- batches -------------------------------------------------------------------------
    def next_batch(self) -> dict[str, np.ndarray] | None:
        """The next batch as numpy arrays; None when a single pass is over (no partial rows)."""
        j = self.batches
        T = self.pack.length_at(j * self.num_streams + self.stream)
        rows = []
        for length in self.pack.row_lengths(self.stream, j, T):
            while self.buffer.available < length and not self._done:
                self._tokenize(self.tokenize_docs)
            if self.buffer.available < length:
                break  # end of a single pass: the remainder is shorter than a row
            rows.append(self.buffer.take(length))
        if not rows:
            return None
        self.batches += 1
        return make_batch(rows, T, self.pack)

    def _tokenize(self, k: int) -> None:
        tags, texts, chars = [], [], 0
        while len(texts) < k and chars < self.tokenize_chars:
            item = self.reader.next_doc()
            if item is None:
                self._done = True
                break
            tags.append(item[0])
            texts.append(item[1])
            chars += len(item[1])
        if not texts:
            return
        eos = self.pack.eos_id
        for tag, ids in zip(tags, self.encode_batch(texts)):
            arr = np.empty(len(ids) + 1, dtype=np.int32)
            arr[:-1] = ids
            arr[-1] = eos
            self.buffer.push(tag, arr)
