"""`sunfish data`: a summary of what the pipeline yields, as text or one JSON object."""

import json
import time

import pytest

from sunfish_lib.cli import main
from tests.helpers import run_cli


def test_data_json_on_the_embedded_corpus(capsys):
    assert main(["data", "--source", "shakespeare", "--max-docs", "3", "--seq-len", "64", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["documents"] == 3 and out["seq_len"] == 64 and out["tokenizer"] == "bpe"
    assert out["tokens"] > 50_000 and 2.5 < out["chars_per_token"] < 4.0
    assert out["packing_efficiency"] == 1.0 and out["sequences"] >= out["tokens"] // 64
    assert out["pipeline_tokens_per_s"] > 10_000


def test_data_text_on_fineweb_parquet(fineweb_dir, capsys):
    folder, docs = fineweb_dir
    assert main(["data", "--source", str(folder / "*.parquet"), "--max-docs", "0", "--seq-len", "32"]) == 0
    out = capsys.readouterr().out
    lines = dict(line.strip().split(": ", 1) for line in out.strip().splitlines())
    assert 45 < int(lines["documents"]) < 60  # all training documents (5% held out by id hash)
    assert lines["seq len"] == "32" and float(lines["packing efficiency"]) == 1.0


@pytest.mark.slow
def test_data_hub_offline_is_a_fast_one_line_error():
    t0 = time.perf_counter()
    r = run_cli("data", "--source", "fineweb:sample-10BT", "--json")
    assert time.perf_counter() - t0 < 20  # interpreter start + imports; the hub is never waited on
    assert r.returncode == 2 and r.stdout == ""
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("error: data.source='fineweb:sample-10BT' needs the Hugging Face hub")
    assert "shakespeare" in line and "local files" in line


def test_data_bad_arguments(capsys, tmp_path):
    assert main(["data", "--source", str(tmp_path / "missing.jsonl")]) == 2
    assert "is no file, folder or glob that exists" in capsys.readouterr().err
    assert main(["data", "--seq-len", "0"]) == 2
    assert "--seq-len must be > 0" in capsys.readouterr().err
