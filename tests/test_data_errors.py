"""Bad input: each case is a one-line SunfishError or a counted, logged skip — never a hang."""

import logging

import pytest

from sunfish_lib.config import DataConfig
from sunfish_lib.data.datamodule import SunfishDataModule
from sunfish_lib.data.pipeline import check_fits_model, make_loader
from sunfish_lib.data.sources import iter_documents, parse_source
from sunfish_lib.data.summary import summarize_source
from sunfish_lib.errors import SunfishError
from tests.data_fixtures import deadline, make_docs, write_fineweb_parquet, write_jsonl


def _one_line_error(fn, *match):
    with deadline(60), pytest.raises(SunfishError) as err:
        fn()
    msg = str(err.value)
    assert "\n" not in msg and "Traceback" not in msg, msg
    for m in match:
        assert m in msg, msg
    return msg


def _first_batch(data, tok, n=1, **kw):
    """A callable taking n batches (n > 1 lets every worker of a 2-worker loader deliver)."""
    def take():
        it = iter(make_loader(data, tok, **kw))
        return [next(it) for _ in range(n)]
    return take


@pytest.mark.parametrize("workers", [0, 2])
def test_empty_file_source_is_an_error_not_an_endless_loop(tmp_path, bpe, workers):
    (tmp_path / "empty.txt").write_text("")
    data = DataConfig(source=str(tmp_path / "empty.txt"), val_fraction=0.0, num_workers=workers)
    _one_line_error(_first_batch(data, bpe), "no documents", "empty.txt")
    _one_line_error(lambda: summarize_source(str(tmp_path / "empty.txt")), "no documents")


def test_empty_file_among_others_is_a_counted_logged_skip(tmp_path, bpe, caplog):
    for name, text in (("a.txt", "first document"), ("b.txt", ""), ("c.txt", "third document")):
        (tmp_path / name).write_text(text)
    data = DataConfig(source=str(tmp_path), val_fraction=0.0, seq_len=4, micro_batch_size=1, shuffle_buffer=0)
    loader = make_loader(data, bpe, loop=False)
    with caplog.at_level(logging.WARNING, logger="sunfish_lib.data"):
        batches = list(loader)
    assert loader.dataset.rows.skipped == {"empty": 1, "missing_text": 0}
    assert "skipped documents: 1 empty" in caplog.text
    tokens = [t for b in batches for t in b["input_ids"].flatten().tolist()]
    assert bpe.decode(tokens).startswith("first document<|endoftext|>third")
    summary = summarize_source(str(tmp_path), seq_len=4, batch_size=1, val_fraction=0.0)
    assert summary["skipped_documents"] == {"empty": 1} and summary["documents"] == 2


@pytest.mark.parametrize("workers", [0, 2])
def test_non_utf8_bytes_name_the_file(tmp_path, bpe, workers):
    (tmp_path / "good.txt").write_text("fine text " * 20)
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    data = DataConfig(source=str(tmp_path), val_fraction=0.0, num_workers=workers)
    _one_line_error(_first_batch(data, bpe, n=4), "latin1.txt", "not valid UTF-8", "iconv")
    _one_line_error(lambda: list(iter_documents(parse_source(str(tmp_path)))), "latin1.txt", "not valid UTF-8")


def test_jsonl_line_without_the_text_field_is_skipped_and_counted(tmp_path, bpe, caplog):
    records = [{"text": "alpha"}, {"body": "no text here"}, {"text": "gamma"}, {"text": None}]
    write_jsonl(tmp_path / "m.jsonl", records)
    data = DataConfig(source=str(tmp_path / "m.jsonl"), val_fraction=0.0, seq_len=2, micro_batch_size=1,
                      shuffle_buffer=0)
    loader = make_loader(data, bpe, loop=False)
    with caplog.at_level(logging.WARNING, logger="sunfish_lib.data"):
        text = bpe.decode([t for b in loader for t in b["input_ids"].flatten().tolist()])
    assert text.startswith("alpha<|endoftext|>gamma")
    assert loader.dataset.rows.skipped["missing_text"] == 2
    assert "2 missing text" in caplog.text


def test_text_field_absent_everywhere_is_an_error(tmp_path, bpe):
    write_jsonl(tmp_path / "m.jsonl", [{"body": "x"}, {"body": "y"}])
    data = DataConfig(source=str(tmp_path / "m.jsonl"), val_fraction=0.0)
    _one_line_error(_first_batch(data, bpe), "data.text_field='text'", "body")
    write_fineweb_parquet(tmp_path / "pq", make_docs(5), n_files=1)
    _one_line_error(_first_batch(DataConfig(source=str(tmp_path / "pq"), text_field="content"), bpe),
                    "data.text_field='content'", "columns: text, id")


def test_malformed_json_is_an_error(tmp_path, bpe):
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n{"text": broken\n')
    _one_line_error(_first_batch(DataConfig(source=str(tmp_path / "bad.jsonl")), bpe), "unreadable record")


def test_missing_paths_and_unsupported_files(tmp_path, bpe):
    _one_line_error(lambda: parse_source(str(tmp_path / "nope.parquet")), "no file, folder or glob", "shakespeare")
    _one_line_error(lambda: parse_source(str(tmp_path / "*.jsonl")), "matches no")
    (tmp_path / "a.csv").write_text("x")
    _one_line_error(lambda: parse_source(str(tmp_path / "a.csv")), ".csv", "supported")
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "a.txt").write_text("x")
    write_jsonl(tmp_path / "mixed" / "b.jsonl", [{"text": "y"}])
    _one_line_error(lambda: parse_source(str(tmp_path / "mixed")), "mixes")
    _one_line_error(lambda: parse_source("hf:not-a-repo"), "hf:OWNER/NAME")


def test_seq_len_beyond_the_model_is_an_error(bpe):
    data = DataConfig(seq_len=512)
    _one_line_error(lambda: SunfishDataModule(data, max_seq_len=256), "data.seq_len=512", "model.max_seq_len=256")
    _one_line_error(lambda: check_fits_model(DataConfig(), bpe, vocab_size=1000), "4096 tokens", "vocab_size=1000")
    from sunfish_lib.config import get_config

    _one_line_error(lambda: get_config("tiny", {"data.seq_len": 1024}), "data.seq_len=1024", "max_seq_len")
    dm = SunfishDataModule.from_config(get_config("tiny", {"bpe_vocab_size": 4096, "vocab_size": 4096}), tokenizer=bpe)
    dm.setup()
    assert dm.max_seq_len == 256 and dm.vocab_size >= len(bpe)


def test_more_streams_than_documents_is_an_error(tmp_path, bpe):
    (tmp_path / "only.txt").write_text("the one document " * 10)
    data = DataConfig(source=str(tmp_path / "only.txt"), val_fraction=0.0, num_workers=2)
    _one_line_error(_first_batch(data, bpe, n=4), "no documents", "num_workers")
