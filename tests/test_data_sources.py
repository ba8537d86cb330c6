"""Sources: FineWeb's code path on local parquet, hub fail-fast, local formats, splits, sharding."""

import time

import pytest
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from sunfish_lib.config import DataConfig
from sunfish_lib.data.pipeline import make_dataset, make_loader
from sunfish_lib.data.sources import doc_hash, iter_documents, open_source, parse_source, split_files
from sunfish_lib.errors import SunfishError
from tests.data_fixtures import make_docs, write_fineweb_parquet, write_jsonl


def test_fineweb_parquet_reads_every_document_once_split_by_id_hash(fineweb_dir):
    folder, docs = fineweb_dir
    spec = parse_source(str(folder / "*.parquet"))
    assert spec.kind == "local" and spec.builder == "parquet" and len(spec.files) == 3
    train = list(iter_documents(spec, "train", val_fraction=0.2))
    val = list(iter_documents(spec, "validation", val_fraction=0.2))
    expected_val = {d["text"] for d in docs if doc_hash(d["id"]) < 0.2}
    assert set(val) == expected_val and 0 < len(val) < 30
    assert sorted(train + val) == sorted(d["text"] for d in docs)  # disjoint, covering, text intact
    assert any("東京 🐟" in t for t in train + val)


def test_fineweb_parquet_through_the_packed_loader(fineweb_dir, bpe):
    folder, docs = fineweb_dir
    data = DataConfig(source=str(folder), seq_len=32, micro_batch_size=4, val_fraction=0.0, shuffle_buffer=0)
    batches = list(make_loader(data, bpe, "train", loop=False))
    stream = torch.cat([b["input_ids"].flatten() for b in batches]).tolist()
    order = [d["text"] for d in docs[0::3] + docs[1::3] + docs[2::3]]  # shard order: file by file
    expected = [t for text in order for t in bpe.encode(text) + [bpe.eos_token_id]]
    assert len(stream) == len(expected) // 32 * 32 > 0
    assert stream == expected[: len(stream)]


def test_hub_source_fails_fast_offline_with_remedy():
    for source, repo in (("fineweb:sample-10BT", "HuggingFaceFW/fineweb"), ("fineweb-edu", "HuggingFaceFW/fineweb-edu")):
        spec = parse_source(source)
        assert (spec.kind, spec.repo) == ("hub", repo)
        t0 = time.perf_counter()
        with pytest.raises(SunfishError) as err:
            open_source(spec, "train")
        assert time.perf_counter() - t0 < 1.0
        msg = str(err.value)
        assert "offline" in msg and "shakespeare" in msg and "local" in msg and "\n" not in msg
    assert parse_source("fineweb:sample-10BT").config == "sample-10BT"
    t0 = time.perf_counter()
    with pytest.raises(SunfishError, match="Hugging Face hub"):
        make_loader(DataConfig(source="fineweb:sample-10BT"), tokenizer=object())
    assert time.perf_counter() - t0 < 1.0


def test_txt_folder_glob_and_jsonl_text_field(tmp_path):
    for i in range(3):
        (tmp_path / "txt" / "sub").mkdir(parents=True, exist_ok=True)
        (tmp_path / "txt" / ("sub" if i else "") / f"d{i}.txt").write_text(f"text file {i}\nline two ü\n")
    folder_docs = list(iter_documents(parse_source(str(tmp_path / "txt"))))
    assert sorted(folder_docs) == [f"text file {i}\nline two ü\n" for i in range(3)]
    glob_docs = list(iter_documents(parse_source(str(tmp_path / "txt" / "**" / "d[12].txt"))))
    assert sorted(glob_docs) == [f"text file {i}\nline two ü\n" for i in (1, 2)]
    write_jsonl(tmp_path / "j" / "a.jsonl", [{"body": f"record {i}", "n": i} for i in range(5)])
    assert list(iter_documents(parse_source(str(tmp_path / "j"), text_field="body"))) == [f"record {i}" for i in range(5)]


def test_file_documents_split_by_name_hash():
    files = tuple(f"/c/play_{i}_gut.txt" for i in range(42))
    val = split_files(files, "validation", 0.05)
    train = split_files(files, "train", 0.05)
    assert len(val) == 3 and len(train) == 39 and not set(val) & set(train)
    assert set(val) == set(split_files(tuple(reversed(files)), "validation", 0.05))  # order-independent
    assert split_files(files[:1], "validation", 0.5) == []  # one file: all for training


def test_shakespeare_split_counts():
    spec = parse_source("shakespeare")
    assert len(spec.files) == 42
    val = list(iter_documents(spec, "validation", 0.05))
    assert len(val) == 3 and all(len(v) > 1000 for v in val)


class _StreamDocs(IterableDataset):
    """Yields (worker, text) for the documents the real per-worker stream of a PackedDataset reads."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __iter__(self):
        info = get_worker_info()
        stream = self.dataset.stream(info.id, info.num_workers)
        while (item := stream.reader.next_doc()) is not None:
            yield info.id, item[1]


@pytest.mark.parametrize("n_files", [3, 4, 6])  # 3 < 4 streams: example-level split; 4, 6: by file
def test_two_ranks_two_workers_read_disjoint_documents_covering_the_set(tmp_path, bpe, n_files):
    docs = make_docs(45, seed=n_files)
    write_fineweb_parquet(tmp_path, docs, n_files=n_files, row_group_size=5)
    data = DataConfig(source=str(tmp_path), val_fraction=0.0, shuffle_buffer=8)
    seen: dict[tuple[int, int], list[str]] = {}
    for rank in range(2):
        ds = make_dataset(data, bpe, "train", rank=rank, world_size=2, loop=False)
        for worker, text in DataLoader(_StreamDocs(ds), batch_size=None, num_workers=2):
            seen.setdefault((rank, int(worker)), []).append(text)
    assert sorted(seen) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    all_texts = [t for texts in seen.values() for t in texts]
    assert len(all_texts) == len(set(all_texts)) == 45  # no document read by two (rank, worker) streams
    assert set(all_texts) == {d["text"] for d in docs}
    assert all(len(texts) >= 5 for texts in seen.values())


def test_four_streams_are_pairwise_disjoint(tmp_path, bpe):
    docs = make_docs(30, seed=7)
    write_fineweb_parquet(tmp_path, docs, n_files=3, row_group_size=4)
    data = DataConfig(source=str(tmp_path), val_fraction=0.0, shuffle_buffer=0)
    streams = []
    for rank in range(2):
        ds = make_dataset(data, bpe, "train", rank=rank, world_size=2, loop=False)
        for worker in range(2):
            s = ds.stream(worker, 2)
            streams.append([item[1] for item in iter(s.reader.next_doc, None)])
    sets = [set(s) for s in streams]
    assert all(len(s) >= 5 for s in sets)
    assert sum(len(s) for s in sets) == len(set().union(*sets)) == 30
