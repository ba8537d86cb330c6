"""What a source yields: documents, tokens, packing efficiency and pipeline throughput.

`collect_stats` keeps per-document arrays (for the notebook's histograms);
`summarize_source` reduces them to the scalars `sunfish data` prints.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np

from sunfish_lib.config import DataConfig
from sunfish_lib.data.packing import packing_stats
from sunfish_lib.data.pipeline import check_fits_model, make_dataset
from sunfish_lib.data.sources import iter_documents, parse_source
from sunfish_lib.data.tokenizer import SunfishTokenizer, get_tokenizer
from sunfish_lib.errors import SunfishError


@dataclass
class SourceStats:
    """Per-document sizes of the first `max_docs` documents and how they pack."""

    source: str
    tokenizer: str
    seq_len: int
    doc_chars: np.ndarray
    doc_tokens: np.ndarray
    packing: dict = field(default_factory=dict)
    seconds: float = 0.0
    skipped: dict = field(default_factory=dict)

    def summary(self) -> dict:
        """Scalars: documents, tokens, packing efficiency, documents split per sequence, tokens/s."""
        p, n = self.packing, len(self.doc_tokens)
        rows = max(p.get("rows", 0), 1)
        return {
            "source": self.source,
            "tokenizer": self.tokenizer,
            "seq_len": self.seq_len,
            "documents": n,
            "characters": int(self.doc_chars.sum()),
            "tokens": int(self.doc_tokens.sum() + n),  # each document + its EOS
            "chars_per_token": round(float(self.doc_chars.sum() / max(self.doc_tokens.sum(), 1)), 3),
            "tokens_per_document_mean": round(float(self.doc_tokens.mean()), 1) if n else 0.0,
            "tokens_per_document_median": float(np.median(self.doc_tokens)) if n else 0.0,
            "sequences": p.get("rows", 0),
            "packing_efficiency": round(p.get("real_tokens", 0) / max(p.get("slots", 0), 1), 4),
            "eos_fraction": round(p.get("eos_tokens", 0) / max(p.get("real_tokens", 0), 1), 6),
            "documents_per_sequence": round(p.get("eos_tokens", 0) / rows, 4),
            "documents_split_per_sequence": round(p.get("rows_split", 0) / rows, 4),
            "pipeline_tokens_per_s": round(p.get("real_tokens", 0) / self.seconds) if self.seconds else 0,
            "skipped_documents": dict(self.skipped),
        }


def collect_stats(data: DataConfig, tokenizer: SunfishTokenizer | None = None, *, max_docs: int | None = 1000,
                  split: str = "train") -> SourceStats:
    """Read up to `max_docs` documents of `data.source` (in source order), tokenize them, and time the
    full pipeline (read -> tokenize -> pack) over the same documents."""
    check_fits_model(data)
    tok = tokenizer or get_tokenizer(data.tokenizer, data.bpe_vocab_size)
    spec = parse_source(data.source, data.text_field)
    docs = list(iter_documents(spec, split, data.val_fraction, limit=max_docs))
    if not docs:
        raise SunfishError(f"data.source={data.source!r} yields no documents for split {split!r} "
                           "(empty files, no text, or all held out); check the files or data.val_fraction")
    chars = np.array([len(d) for d in docs], dtype=np.int64)
    tokens = np.array([len(ids) for ids in tok.encode_batch(docs)], dtype=np.int64) if docs else np.zeros(0, np.int64)
    budget = int(tokens.sum() + len(docs))
    packing, seconds, skipped = _time_pipeline(replace(data, shuffle_buffer=0), tok, spec, split, budget)
    return SourceStats(data.source, data.tokenizer, data.seq_len, chars, tokens, packing, seconds, skipped)


def _time_pipeline(data: DataConfig, tok: SunfishTokenizer, spec, split: str, budget: int):
    """Pack (at most) `budget` tokens with the real stream in this process; counts and seconds."""
    dataset = make_dataset(data, tok, split, source=spec, loop=False)
    totals = {"slots": 0, "real_tokens": 0, "eos_tokens": 0, "rows": 0, "rows_split": 0}
    t0 = time.perf_counter()
    stream = dataset.stream()
    while totals["real_tokens"] < budget and (batch := stream.next_batch()) is not None:
        for k, v in packing_stats(batch, tok.eos_token_id).items():
            totals[k] += v
    seconds = time.perf_counter() - t0
    return totals, seconds, {k: v for k, v in dataset.rows.skipped.items() if v}


def summarize_source(source: str = "shakespeare", tokenizer: str = "bpe", *, seq_len: int = 256,
                     batch_size: int = 8, max_docs: int | None = 1000, text_field: str = "text",
                     bpe_vocab_size: int = 4096, val_fraction: float = 0.05, split: str = "train") -> dict:
    """Summary of what the pipeline yields for `source` (see `SourceStats.summary` for the keys)."""
    data = DataConfig(source=source, tokenizer=tokenizer, seq_len=seq_len, micro_batch_size=batch_size,
                      text_field=text_field, bpe_vocab_size=bpe_vocab_size, val_fraction=val_fraction)
    return collect_stats(data, max_docs=max_docs, split=split).summary()


# ----------------------------------------------------------------------------
# Compact views for the data notebook (02): one line per document, statistic or packed row
# ----------------------------------------------------------------------------

STAT_KEYS = ("documents", "tokens", "chars_per_token", "sequences", "packing_efficiency",
             "documents_per_sequence", "documents_split_per_sequence", "skipped_documents")
"""The `SourceStats.summary` figures notebook 02's packing table shows, in order."""


def stats_table(summary: dict) -> list[dict]:
    """Rows (statistic, value) of `SourceStats.summary` for STAT_KEYS: floats to 3 significant digits,
    skipped documents as 'reason: count' (or 'none')."""
    def value(k):
        v = summary[k]
        if k == "skipped_documents":
            return ", ".join(f"{r}: {n}" for r, n in v.items()) or "none"
        return f"{v:,.3g}" if isinstance(v, float) else v
    return [{"statistic": k.replace("_", " "), "value": value(k)} for k in STAT_KEYS]


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())  # newlines and runs of spaces as one space: one line per item
    return text if len(text) <= width else text[: width - 1] + "…"


def document_lines(docs: list[str], width: int = 60) -> list[str]:
    """One line per document: its first line (a play's title), characters and lines, not its text."""
    firsts = [d.strip().splitlines()[0] if d.strip() else "(empty)" for d in docs]
    return [f"{_clip(first, width)}: {len(d):,} characters, {d.count(chr(10)) + 1:,} lines"
            for first, d in zip(firsts, docs)]


def packed_row_lines(batch: dict, tokenizer: SunfishTokenizer, width: int = 40) -> list[str]:
    """One line per packed row: its EOS positions (where a document ends and the next starts) and the text at
    both ends, clipped to `width` characters each."""
    lines = []
    for i, row in enumerate(batch["input_ids"].tolist()):
        eos = [p for p, t in enumerate(row) if t == tokenizer.eos_token_id]
        where = f"EOS at {', '.join(map(str, eos))}" if eos else "no EOS (inside one document)"
        lines.append(f"row {i}: {where}; starts {_clip(tokenizer.decode(row[:24]), width)!r}, "
                     f"ends {_clip(tokenizer.decode(row[-24:]), width)!r}")
    return lines


def batch_with_boundary(loader, eos_id: int, max_batches: int = 400) -> tuple[dict, int]:
    """(the first batch of `loader` holding an EOS, its index): one where a document ends, so a figure of it
    shows the packing; the first batch (index 0) when none of the first `max_batches` holds one."""
    first = None
    for i, batch in enumerate(loader):
        first = batch if first is None else first
        if (batch["input_ids"] == eos_id).any():
            return batch, i
        if i + 1 >= max_batches:
            break
    if first is None:
        raise SunfishError("the loader yielded no batch: check the source and seq_len")
    return first, 0
