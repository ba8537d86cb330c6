"""Every (rank, worker) stream reads disjoint documents, and together they cover the corpus (issue #17)."""

from __future__ import annotations

import logging

import pytest

from sunfish_lib.config import DataConfig
from sunfish_lib.data.pipeline import make_dataset
from sunfish_lib.data.tokenizer import get_tokenizer
from tests.data_fixtures import make_docs, write_fineweb_parquet


def _documents_per_stream(folder, ranks: int, workers: int) -> list[list[str]]:
    """The document ids each (rank, worker) stream reads in one pass over the source."""
    tok = get_tokenizer("bpe", 4096)
    data = DataConfig(source=str(folder), seq_len=16, micro_batch_size=2, shuffle_buffer=4, val_fraction=0.0)
    out = []
    for rank in range(ranks):
        ds = make_dataset(data, tok, "train", seed=1, rank=rank, world_size=ranks, loop=False)
        for worker in range(workers):
            reader = ds.stream(worker, workers).reader
            ids = []
            while (doc := reader.next_doc()) is not None:
                ids.append(doc[1].split(".", 1)[0])  # "Document 17"
            out.append(ids)
    return out


@pytest.mark.parametrize("n_files, ranks, workers, warns", [(4, 2, 2, False), (8, 2, 2, False), (3, 2, 2, True)])
def test_streams_disjoint_and_cover_the_corpus(tmp_path, caplog, n_files, ranks, workers, warns):
    docs = make_docs(48, seed=4, max_words=12)
    write_fineweb_parquet(tmp_path / "src", docs, n_files=n_files, row_group_size=5)
    with caplog.at_level(logging.WARNING, logger="sunfish_lib.data.loader"):
        streams = _documents_per_stream(tmp_path / "src", ranks, workers)
    assert len(streams) == ranks * workers and all(streams)  # every stream reads something
    every = [d for s in streams for d in s]
    assert len(every) == len(set(every)) == 48  # disjoint, and together the whole corpus
    assert set(every) == {f"Document {i}" for i in range(48)}
    lines = [r.getMessage() for r in caplog.records if "streams" in r.getMessage()]
    if warns:
        assert lines == [f"data.source={str(tmp_path / 'src')!r} has 3 file(s) (shards) for 4 streams (2 ranks x 2 "
                         "workers): every stream reads and decodes all of it to keep 1/4; use at most 3 streams "
                         "(lower data.num_workers) or split the source into >= 4 files"]
    else:
        assert lines == []
