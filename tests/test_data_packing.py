"""Packing: exact token stream, segment ids, random shorter rows, the length curriculum."""

import numpy as np
import pytest
import torch

from sunfish_lib.config import DataConfig
from sunfish_lib.data.packing import PackSpec, curriculum_length, make_batch, packing_stats, segment_ids
from sunfish_lib.data.pipeline import make_loader
from sunfish_lib.data.summary import collect_stats, summarize_source
from tests.data_fixtures import make_docs, write_jsonl


@pytest.fixture
def corpus(tmp_path):
    docs = make_docs(40, seed=1)
    write_jsonl(tmp_path / "c.jsonl", [{"text": d["text"], "id": d["id"]} for d in docs])
    return tmp_path / "c.jsonl", [d["text"] for d in docs]


def _expected_stream(tok, texts):
    return [t for text in texts for t in tok.encode(text) + [tok.eos_token_id]]


def _real_tokens(batches):
    out = []
    for b in batches:
        mask = b.get("attention_mask", torch.ones_like(b["input_ids"])).bool()
        for row, m in zip(b["input_ids"], mask):
            assert not m[m.sum():].any(), "padding only at the end of a row"
            out.extend(row[m].tolist())
    return out


def test_concatenated_rows_reproduce_the_token_stream(corpus, bpe):
    path, texts = corpus
    data = DataConfig(source=str(path), seq_len=48, micro_batch_size=3, val_fraction=0.0, shuffle_buffer=0)
    batches = list(make_loader(data, bpe, loop=False))
    expected = _expected_stream(bpe, texts)
    assert set(batches[0]) == {"input_ids"} and batches[0]["input_ids"].dtype == torch.long
    assert all(b["input_ids"].shape[1] == 48 for b in batches)
    got = torch.cat([b["input_ids"].flatten() for b in batches]).tolist()
    assert len(got) == len(expected) // 48 * 48  # only the last partial row is dropped
    assert got == expected[: len(got)]


def test_random_length_rows_are_padded_and_lose_nothing(corpus, bpe):
    path, texts = corpus
    data = DataConfig(source=str(path), seq_len=32, micro_batch_size=4, val_fraction=0.0, shuffle_buffer=0,
                      random_length_fraction=0.3)
    batches = list(make_loader(data, bpe, loop=False, seed=3))
    assert set(batches[0]) == {"input_ids", "attention_mask"}
    mask = torch.cat([b["attention_mask"] for b in batches])
    ids = torch.cat([b["input_ids"] for b in batches])
    short = (mask.sum(1) < 32).float().mean().item()
    assert 0.15 < short < 0.45  # ~30% of rows, some draws are the full length
    assert (ids[mask == 0] == bpe.pad_token_id).all()
    got = _real_tokens(batches)
    assert got == _expected_stream(bpe, texts)[: len(got)]
    stats = {k: sum(packing_stats(b, bpe.eos_token_id)[k] for b in batches) for k in ("slots", "real_tokens")}
    assert stats["real_tokens"] == int(mask.sum()) < stats["slots"]


def test_segment_ids_follow_eos_and_isolate_padding():
    spec = PackSpec(seq_len=8, batch_size=2, eos_id=0, pad_id=9, cross_document_attention=False,
                    always_attention_mask=True)
    rows = [np.array([5, 6, 0, 7, 0, 8, 8, 8]), np.array([4, 0, 3])]
    batch = make_batch(rows, 8, spec)
    assert batch["segment_ids"].tolist() == [[0, 0, 0, 1, 1, 2, 2, 2], [0, 0, 1, 2, 2, 2, 2, 2]]
    assert batch["attention_mask"].tolist() == [[1] * 8, [1, 1, 1, 0, 0, 0, 0, 0]]
    assert batch["input_ids"][1].tolist() == [4, 0, 3, 9, 9, 9, 9, 9]
    ids = np.array([[1, 2, 0, 3]])
    assert segment_ids(ids, np.ones_like(ids, bool), 0).tolist() == [[0, 0, 0, 1]]


def test_segment_ids_in_the_stream(corpus, bpe):
    path, _ = corpus
    data = DataConfig(source=str(path), seq_len=64, micro_batch_size=2, val_fraction=0.0,
                      cross_document_attention=False)
    batch = next(iter(make_loader(data, bpe)))
    ids, seg = batch["input_ids"], batch["segment_ids"]
    assert seg.shape == ids.shape and seg.dtype == torch.long
    eos_before = torch.cumsum((ids == bpe.eos_token_id).long(), 1) - (ids == bpe.eos_token_id).long()
    assert torch.equal(seg, eos_before) and seg.max() >= 1


def test_curriculum_lengths():
    assert [curriculum_length(s, 256, 64, 100) for s in (0, 1, 25, 50, 99, 100, 5000)] == [64, 64, 112, 160, 248, 256, 256]
    assert curriculum_length(3, 256, 64, 0) == 256
    spec = PackSpec(seq_len=64, batch_size=2, eos_id=0, pad_id=1, curriculum_steps=4, curriculum_start_len=16,
                    batches_per_step=2)
    assert [spec.length_at(j) for j in range(10)] == [16, 16, 24, 24, 40, 40, 48, 48, 64, 64]


def test_curriculum_in_the_stream_keeps_it_exact(corpus, bpe):
    path, texts = corpus
    data = DataConfig(source=str(path), seq_len=64, micro_batch_size=2, val_fraction=0.0, shuffle_buffer=0,
                      curriculum_steps=6, curriculum_start_len=16)
    batches = list(make_loader(data, bpe, loop=False))
    assert [b["input_ids"].shape[1] for b in batches[:8]] == [16, 24, 32, 40, 48, 56, 64, 64]
    got = torch.cat([b["input_ids"].flatten() for b in batches]).tolist()
    assert got == _expected_stream(bpe, texts)[: len(got)]


def test_validation_is_one_full_length_pass(corpus, bpe):
    path, _ = corpus
    data = DataConfig(source=str(path), seq_len=32, micro_batch_size=4, val_fraction=0.3,
                      random_length_fraction=0.5, curriculum_steps=10, curriculum_start_len=8)
    val = list(make_loader(data, bpe, "validation"))
    again = list(make_loader(data, bpe, "validation"))
    assert len(val) >= 2 and all(b["input_ids"].shape[1] == 32 for b in val)
    assert all(b["attention_mask"].all() for b in val)  # schema kept, no padding in validation
    assert all(torch.equal(a["input_ids"], b["input_ids"]) for a, b in zip(val, again))


def test_summary_numbers_for_the_embedded_corpus(bpe):
    s = summarize_source("shakespeare", "bpe", seq_len=128, batch_size=4, max_docs=4)
    assert s["documents"] == 4 and s["characters"] > 200_000
    assert 2.5 < s["chars_per_token"] < 4.0
    assert abs(s["tokens"] - 4 * s["tokens_per_document_mean"] - 4) < 1  # documents + one EOS each
    assert s["packing_efficiency"] == 1.0 and s["documents_split_per_sequence"] > 0.99  # plays span many rows
    assert s["sequences"] == -(-s["tokens"] // 512) * 4  # batches of 4 x 128 until the 4 plays are packed
    assert s["pipeline_tokens_per_s"] > 10_000
    stats = collect_stats(DataConfig(seq_len=64), bpe, max_docs=3)
    assert len(stats.doc_tokens) == 3 and (stats.doc_chars > stats.doc_tokens).all()
