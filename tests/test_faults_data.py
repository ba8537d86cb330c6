"""A data source failing mid-stream: retried with backoff from the same document, then a one-line error."""

import pathlib
import time

import datasets
import pytest
import requests
import torch

from sunfish_lib.config import ConfigError, DataConfig, get_config
from sunfish_lib.data import retry
from sunfish_lib.data.pipeline import make_loader
from sunfish_lib.data.retry import DataStreamError, exhausted_error, is_transient
from tests.data_fixtures import deadline, make_docs, write_jsonl

BATCHES = 24  # ~2.5 passes over the training files: retries near the start, in a block and at a wrap
VANISH_BATCHES = 80  # the stream reads up to 64 documents (~4.5 passes) ahead; a deleted file is missed after that


def _txt_docs(folder, n: int, seed: int):
    """n one-document .txt files (the text builder reads one file per document, lazily)."""
    folder.mkdir()
    for i, d in enumerate(make_docs(n, seed=seed, min_words=5, max_words=15)):
        (folder / f"doc{i:02d}.txt").write_text(d["text"], encoding="utf-8")
    return folder


@pytest.fixture
def txt_folder(tmp_path):
    return _txt_docs(tmp_path / "docs", 16, seed=3)


@pytest.fixture
def jsonl_folder(tmp_path):
    docs = make_docs(40, seed=4, min_words=3, max_words=30)
    write_jsonl(tmp_path / "j" / "a.jsonl", [{"text": d["text"], "id": d["id"]} for d in docs[:20]])
    write_jsonl(tmp_path / "j" / "b.jsonl", [{"text": d["text"], "id": d["id"]} for d in docs[20:]])
    return tmp_path / "j"


def _data(folder, **kw):
    return DataConfig(**{"source": str(folder), "seq_len": 32, "micro_batch_size": 2, "shuffle_buffer": 4,
                         "val_fraction": 0.1, "read_retries": 3, "retry_backoff_s": 0.01, **kw})


def _tokens(data, tok, n=BATCHES):
    it = iter(make_loader(data, tok, num_workers=0, seed=2))
    return torch.cat([next(it)["input_ids"].flatten() for _ in range(n)])


class Flaky:
    """Makes the `failures` reads after `pulls_before` successful ones raise `exc`; the rows of a
    failed read are taken from `datasets` first and then lost, as when a connection drops mid-response."""

    def __init__(self, monkeypatch, pulls_before: int, failures: int, exc: Exception):
        self.pulls, self.pulls_before, self.left, self.exc = 0, pulls_before, failures, exc
        self.sleeps: list[float] = []
        original = datasets.IterableDataset.iter

        def flaky_iter(ds, *args, **kwargs):
            for batch in original(ds, *args, **kwargs):
                if self.pulls == self.pulls_before and self.left > 0:
                    self.left -= 1
                    raise self.exc
                self.pulls += 1
                yield batch

        monkeypatch.setattr(datasets.IterableDataset, "iter", flaky_iter)
        monkeypatch.setattr(retry, "sleep", self.sleeps.append)


@pytest.mark.parametrize("exc", [ConnectionError("Connection reset by peer"), TimeoutError("read timed out"),
                                 requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead")],
                         ids=["ConnectionError", "TimeoutError", "requests"])
@pytest.mark.parametrize("source", ["txt", "jsonl"])
def test_read_failing_twice_then_succeeding_gives_the_same_tokens(txt_folder, jsonl_folder, bpe, monkeypatch,
                                                                  exc, source):
    data = _data(txt_folder if source == "txt" else jsonl_folder)
    reference = _tokens(data, bpe)
    flaky = Flaky(monkeypatch, pulls_before=5, failures=2, exc=exc)
    assert torch.equal(_tokens(data, bpe), reference)  # nothing repeated, nothing skipped
    assert flaky.left == 0 and flaky.sleeps == pytest.approx([0.01, 0.02])  # exponential backoff


def test_hub_stream_dropping_mid_iteration_is_retried_then_named(jsonl_folder, bpe, monkeypatch):
    """A hub source (its streaming dataset stood in by local JSONL: no network in tests) whose connection drops."""
    from sunfish_lib.data import sources

    local = sources.parse_source(str(jsonl_folder))
    monkeypatch.setattr(sources, "_open_hub", lambda spec: sources._open_local(local, list(local.files)))
    data = _data("hf:HuggingFaceFW/fineweb-edu")
    reference = _tokens(data, bpe)
    drop = requests.exceptions.ConnectionError("('Connection aborted.', RemoteDisconnected())")
    flaky = Flaky(monkeypatch, pulls_before=4, failures=2, exc=drop)
    assert torch.equal(_tokens(data, bpe), reference) and flaky.sleeps == [0.01, 0.02]
    flaky.pulls, flaky.left = 0, 10**9
    with pytest.raises(DataStreamError) as err:
        _tokens(data, bpe)
    assert str(err.value).startswith("data.source='hf:HuggingFaceFW/fineweb-edu': streaming from the hub failed "
                                     "4 times over 0.1 s (ConnectionError: ('Connection aborted.'")
    assert "check the network connection" in str(err.value)


def test_read_failing_forever_raises_one_line_error_in_bounded_time(txt_folder, bpe, monkeypatch):
    flaky = Flaky(monkeypatch, pulls_before=3, failures=10**9, exc=ConnectionError("Connection reset by peer"))
    t0 = time.perf_counter()
    with deadline(30), pytest.raises(DataStreamError) as err:
        _tokens(_data(txt_folder, read_retries=4, retry_backoff_s=0.5), bpe)
    msg = str(err.value)
    assert time.perf_counter() - t0 < 30 and "\n" not in msg
    assert flaky.sleeps == [0.5, 1.0, 2.0, 4.0] and flaky.pulls == 3
    assert msg.startswith(f"data.source={str(txt_folder)!r}: reading it failed 5 times over 7.5 s "
                          "(ConnectionError: Connection reset by peer)")
    assert "raise data.read_retries / data.retry_backoff_s" in msg


def test_zero_retries_fails_at_the_first_error(txt_folder, bpe, monkeypatch):
    flaky = Flaky(monkeypatch, pulls_before=0, failures=10**9, exc=TimeoutError("timed out"))
    with pytest.raises(DataStreamError, match="failed 1 times over 0.0 s"):
        _tokens(_data(txt_folder, read_retries=0), bpe)
    assert flaky.sleeps == []


def _vanish_after_start(folder, data, tok, restore_on_sleep: int | None, monkeypatch, workers: int = 0):
    """Start the stream, delete a training file (read again in the next pass), read on; optionally put it
    back during a backoff (in a DataLoader worker the backoff runs there: it is patched before the fork)."""
    victim = folder / "doc15.txt"
    content = victim.read_text(encoding="utf-8")
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        if len(sleeps) == restore_on_sleep:
            victim.write_text(content, encoding="utf-8")

    monkeypatch.setattr(retry, "sleep", sleep)
    it = iter(make_loader(data, tok, num_workers=workers, seed=2))
    first = [next(it)["input_ids"].flatten() for _ in range(2)]
    victim.unlink()
    rest = [next(it)["input_ids"].flatten() for _ in range(VANISH_BATCHES - 2)]
    return torch.cat(first + rest), sleeps


@pytest.mark.parametrize("workers", [0, 1])
def test_file_vanishing_mid_stream_and_coming_back_loses_nothing(txt_folder, bpe, monkeypatch, workers):
    data = _data(txt_folder, num_workers=workers)
    reference = _tokens(data, bpe, VANISH_BATCHES)
    tokens, sleeps = _vanish_after_start(txt_folder, data, bpe, 2, monkeypatch, workers)
    assert sleeps == ([0.01, 0.02] if workers == 0 else [])  # a worker sleeps in its own process
    assert torch.equal(tokens, reference)


@pytest.mark.parametrize("workers", [0, 1])
def test_file_vanishing_for_good_names_the_file(txt_folder, bpe, monkeypatch, workers):
    data = _data(txt_folder, read_retries=2, num_workers=workers)
    with pytest.raises(DataStreamError) as err:
        _vanish_after_start(txt_folder, data, bpe, None, monkeypatch, workers)
    assert f"reading {txt_folder / 'doc15.txt'} failed 3 times" in str(err.value)
    assert "FileNotFoundError" in str(err.value) and "check that the file exists" in str(err.value)


def test_bad_records_are_not_retried(tmp_path, bpe, monkeypatch):
    sleeps = []
    monkeypatch.setattr(retry, "sleep", sleeps.append)
    write_jsonl(tmp_path / "ok.jsonl", [{"text": f"fine {i}"} for i in range(30)])
    (tmp_path / "ok.jsonl").write_text((tmp_path / "ok.jsonl").read_text() + "{broken\n")
    with pytest.raises(DataStreamError, match="unreadable record"):
        _tokens(_data(tmp_path / "ok.jsonl", val_fraction=0.0), bpe, n=200)
    assert sleeps == []


def test_transient_classification_and_hub_message():
    assert is_transient(ConnectionError()) and is_transient(FileNotFoundError(2, "gone", "/x"))
    assert is_transient(requests.exceptions.ConnectionError("dns"))
    try:
        raise RuntimeError("wrapped") from OSError("disk")
    except RuntimeError as e:
        assert is_transient(e)
    assert not is_transient(ValueError("bad record")) and not is_transient(UnicodeDecodeError("utf-8", b"", 0, 1, "x"))
    msg = str(exhausted_error("fineweb:sample-10BT", True, ConnectionError("Read timed out"), 6, 31.0))
    assert msg == ("data.source='fineweb:sample-10BT': streaming from the hub failed 6 times over 31.0 s "
                   "(ConnectionError: Read timed out); check the network connection, or raise "
                   "data.read_retries / data.retry_backoff_s for a flaky source")


@pytest.mark.parametrize("field,value,message", [
    ("read_retries", -1, "data.read_retries=-1 must be >= 0"),
    ("retry_backoff_s", -0.5, "data.retry_backoff_s=-0.5 must be in [0, 3600] seconds"),
])
def test_retry_fields_are_validated(field, value, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        get_config("tiny", {field: value}).validate()


# -- training through a failing source ------------------------------------------------------

def _train_cfg(folder):
    from tests.train_helpers import small_config

    # no periodic checkpoints: the only checkpoint of the failing run is the one written on the way out
    return small_config("masked", source=str(folder), shuffle_buffer=4, micro_batch_size=16, accumulate_grad_batches=3,
                        ema_decay=0.9, max_steps=4, ckpt_every=100, val_every=100, keep_best=0, read_retries=2,
                        retry_backoff_s=0.01)


@pytest.fixture
def many_docs(tmp_path):
    return _txt_docs(tmp_path / "many", 60, seed=6)


@pytest.mark.slow
def test_source_failing_for_good_checkpoints_the_last_step_and_resume_matches(many_docs, tmp_path, monkeypatch,
                                                                              capsys):
    """Reads fail for good in the 2nd step's 2nd micro-batch: last.ckpt holds step 1 with the data position of
    step 1 (3 micro-batches, not the 4 taken), the CLI exits 2 with one line, and the command it names resumes
    to the uninterrupted run's weights, bit for bit."""
    from safetensors.torch import load_file

    from sunfish_lib.cli import main
    from sunfish_lib.train.trainer import train

    cfg = _train_cfg(many_docs)
    train(cfg, tmp_path / "straight", progress=False)
    cfg.save(tmp_path / "cfg.json")
    run = tmp_path / "run"
    flaky = Flaky(monkeypatch, pulls_before=17, failures=10**9, exc=ConnectionError("Connection reset by peer"))
    with deadline(60):
        code = main(["train", "--config", str(tmp_path / "cfg.json"), "--run-dir", str(run), "--no-progress"])
    monkeypatch.undo()
    out, err = capsys.readouterr()
    last = run / "checkpoints" / "last.ckpt"
    assert code == 2 and len(err.strip().splitlines()) == 1 and flaky.sleeps == [0.01, 0.02]
    assert err.startswith(f"error: data.source={str(many_docs)!r}: reading it failed 3 times over 0.0 s "
                          "(ConnectionError: Connection reset by peer)")
    resume = ["train", "--resume", str(run)]  # the run folder's own config.json (sunfish train --resume RUN)
    assert err.strip().endswith(f"training state saved at step 1 in {last}; once the source reads again, continue "
                                f"with `sunfish {' '.join(resume)}`")
    ckpt = torch.load(last, weights_only=True)
    assert ckpt["global_step"] == 1 and ckpt["SunfishDataModule"]["ranks"][0]["consumed"] == 3
    assert main([*resume, "--no-progress"]) == 0 and "trained to step 4" in capsys.readouterr().out
    a = load_file(str(tmp_path / "straight" / "export" / "model.safetensors"))
    b = load_file(str(run / "export" / "model.safetensors"))
    assert max((a[k] - b[k]).abs().max().item() for k in a) == 0.0


def test_fault_checkpoint_that_cannot_be_written_keeps_the_data_error():
    """The disk is full as well: the error still names the data failure, then what else failed."""
    from types import SimpleNamespace

    from sunfish_lib.data.loader import ResumeTracker
    from sunfish_lib.train.faults import DataFaultCheckpoint

    def save_checkpoint(path, weights_only=False):
        raise OSError(28, "No space left on device")

    tracker = ResumeTracker(1)
    trainer = SimpleNamespace(world_size=1, datamodule=SimpleNamespace(tracker=tracker), save_checkpoint=save_checkpoint)
    cb = DataFaultCheckpoint(pathlib.Path("/runs/x/checkpoints/last.ckpt"))
    cb._at_step = (3, {}, {**tracker.state_dict(), "consumed": 3})
    err = DataStreamError("data.source='d': reading d/a.txt failed 6 times over 31.0 s (FileNotFoundError: d/a.txt)")
    cb.on_exception(trainer, None, err)
    assert str(err) == ("data.source='d': reading d/a.txt failed 6 times over 31.0 s (FileNotFoundError: d/a.txt); "
                        "saving the training state failed as well ([Errno 28] No space left on device); the last "
                        "periodic checkpoint is in /runs/x/checkpoints")
    assert tracker.consumed == 0  # the live data position is put back
    cb.on_exception(trainer, None, ValueError("a bug"))  # other errors pass untouched
