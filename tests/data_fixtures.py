"""Shared helpers for the data tests: synthetic corpora in FineWeb's schema, the cached BPE, a hang guard."""

from __future__ import annotations

import contextlib
import json
import random
import signal
from pathlib import Path

import pytest

WORDS = ("the quick brown fox jumps over a lazy dog while seven wizards quietly hex "
         "café naïve façade 東京 Ωμέγα 🐟 — “quotes” and\ttabs").split(" ")


def make_docs(n: int, seed: int = 0, min_words: int = 5, max_words: int = 80) -> list[dict]:
    """n FineWeb-like records with unique ids and texts of varying length (non-ASCII included)."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words))]
        text = f"Document {i}. " + " ".join(words) + ("\n\nSecond paragraph." if i % 3 == 0 else "")
        docs.append({
            "text": text, "id": f"<urn:uuid:{i:08d}>", "dump": "CC-MAIN-2024-10",
            "url": f"https://example.org/{i}", "date": "2024-02-21T00:00:00Z",
            "file_path": f"s3://commoncrawl/{i}.warc.gz", "language": "en",
            "language_score": round(0.8 + 0.2 * rng.random(), 4), "token_count": len(words) * 2,
        })
    return docs


WEB = {
    "topic": "garden kitchen bike laptop budget resume garage camera".split(),
    "verb": "clean fix plan build choose store paint upgrade".split(),
    "adj": "simple cheap quick small better new easy safe".split(),
    "thing": "tools steps ideas rules tips parts notes habits".split(),
    "time": ("today", "this week", "every morning", "before winter", "after work", "on weekends"),
}


def make_web_docs(n: int, seed: int = 0) -> list[dict]:
    """n short web-like English documents (how-to pages: a title, then 2-5 sentences) in FineWeb's schema.

    Sentences follow a few templates, so the next word depends on the words before it: a model that
    learns context beats the unigram model of this text, one that does not sits on it.
    """
    rng = random.Random(seed)
    pick = lambda k: rng.choice(WEB[k])  # noqa: E731
    templates = (
        lambda: f"You can {pick('verb')} your {pick('topic')} {pick('time')} with a few {pick('adj')} {pick('thing')}.",
        lambda: f"The best way to {pick('verb')} a {pick('topic')} is to keep it {pick('adj')}.",
        lambda: f"First, {pick('verb')} the {pick('thing')}; then {pick('verb')} the {pick('topic')}.",
        lambda: f"Most people {pick('verb')} their {pick('topic')} {pick('time')}, but {pick('adj')} {pick('thing')} help.",
    )
    docs = make_docs(n, seed)
    for i, doc in enumerate(docs):
        title = f"How to {pick('verb')} your {pick('topic')}: {rng.randint(3, 9)} {pick('adj')} {pick('thing')}"
        body = " ".join(rng.choice(templates)() for _ in range(rng.randint(2, 5)))
        doc["text"] = f"{title}\n\n{body}"
    return docs


def write_fineweb_parquet(folder: Path, docs: list[dict], n_files: int = 3, row_group_size: int = 7) -> list[Path]:
    """Write `docs` into n_files parquet shards in FineWeb's schema (several row groups each)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(n_files):
        part = docs[k::n_files]
        table = pa.table({key: [d[key] for d in part] for key in docs[0]})
        path = folder / f"000_{k:05d}.parquet"
        pq.write_table(table, path, row_group_size=row_group_size)
        paths.append(path)
    return paths


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


@contextlib.contextmanager
def deadline(seconds: float):
    """Fail (instead of hanging) if the block takes longer than `seconds`."""
    def _alarm(signum, frame):
        raise TimeoutError(f"took longer than {seconds} s (a hang?)")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="session")
def bpe():
    """The offline BPE (4096) from the shared cache: trained once (~2 s), then loaded."""
    from sunfish_lib.data.tokenizer import get_tokenizer

    return get_tokenizer("bpe", 4096)


@pytest.fixture(scope="session")
def fineweb_dir(tmp_path_factory):
    """A folder of 3 FineWeb-schema parquet shards with 60 documents; returns (folder, docs)."""
    folder = tmp_path_factory.mktemp("fineweb")
    docs = make_docs(60)
    write_fineweb_parquet(folder, docs)
    return folder, docs
