"""Fuzzing what users hand in (issue #31): data files, prompts and `--prompts` files, run folders and checkpoints
(missing, truncated, corrupted, another objective's, an export without its tokenizer) and `sunfish convert`
parents (config fields missing or contradictory, shapes that do not fit the weights); judged by tests/fuzz_oracle.py.

Every generated file lives in the module's sandbox; the oracle checks that nothing else there changed.
"""

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests import fuzz_oracle as oracle
from tests.fuzz_strategies import any_text, hostile_text

pytestmark = pytest.mark.fuzz


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """Two tiny runs (masked with last.ckpt, ar) and a tiny GPT-2 / Llama parent, made once."""
    from tests.convert_helpers import save_hf_model, save_tokenizer_without_mask
    from tests.sampling_helpers import make_run

    root = tmp_path_factory.mktemp("fuzz_files")
    make_run(root / "masked", "masked", ckpt=True)
    make_run(root / "ar", "ar")
    save_tokenizer_without_mask(root / "parent-tok", vocab_size=280)
    for family in ("gpt2", "llama"):
        save_hf_model(root / f"parent-{family}", family, root / "parent-tok")
    return root


@pytest.fixture
def box(sandbox, monkeypatch):
    """Each example's own folder: `with box() as (sandbox, work):` (a fixture would serve every example of a test)."""
    monkeypatch.chdir(sandbox)
    monkeypatch.setenv("SUNFISH_RUNS", str(sandbox / "runs"))

    @contextlib.contextmanager
    def case():
        work = Path(tempfile.mkdtemp(dir=sandbox, prefix="case-"))
        try:
            yield sandbox, work
        finally:
            shutil.rmtree(work, ignore_errors=True)

    return case


# -- data files -------------------------------------------------------------------------------------------

records = st.one_of(
    st.fixed_dictionaries({"text": st.one_of(any_text, st.text(max_size=200))}),
    st.fixed_dictionaries({"text": st.one_of(st.none(), st.integers(), st.floats(), st.lists(st.integers(), max_size=3),
                                             st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                                             st.booleans())}),
    st.fixed_dictionaries({"body": any_text}),
    st.fixed_dictionaries({"text": any_text, "id": st.one_of(st.integers(), st.none(), any_text),
                           "meta": st.dictionaries(st.text(max_size=4), st.text(max_size=4), max_size=2)}),
)


def _jsonl(recs) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in recs).encode("utf-8", "surrogatepass")


file_bytes = st.one_of(
    st.sampled_from([b"", b" ", b"\n\n\n", b"\t \r\n", b"\x00" * 64, b"\xff\xfe\x00t\x00e", b"{", b"[", b"null",
                     b'{"text": "a"}\n{broken\n', b'"just a string"\n', b"[1, 2, 3]", b"\xef\xbb\xbf{\"text\": \"bom\"}\n",
                     b"text\nhello\nworld\n", b"a,b\n1,2\n", "caf\u00e9 na\u00efve".encode("latin-1")]),
    st.binary(max_size=300),
    st.lists(records, max_size=6).map(_jsonl),
    st.lists(records, min_size=1, max_size=3).map(lambda r: json.dumps(r).encode("utf-8", "surrogatepass")),
    st.tuples(st.text(max_size=30), st.binary(max_size=30)).map(lambda t: t[0].encode("utf-8", "surrogatepass") + t[1]),
    st.integers(10_000, 400_000).map(lambda n: b"word " * (n // 5)),  # one huge line
)


def _parquet(path: Path, recs) -> None:
    try:
        pq.write_table(pa.Table.from_pylist(recs or [{"text": None}]), path)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, UnicodeEncodeError, TypeError):
        path.write_bytes(b"PAR1 not really parquet")


@st.composite
def data_source(draw, work: Path) -> str:
    """A `--source`/`--data` value: a generated file of any supported (or unsupported) type, a folder, a glob
    matching nothing, a FIFO (never opened for reading: it would block), a missing path."""
    kind = draw(st.sampled_from([".jsonl", ".json", ".txt", ".parquet", ".csv", ".jsonl.gz", "", "folder",
                                 "glob", "fifo", "missing", ".jsonl", ".txt"]))
    if kind == "glob":
        return str(work / draw(st.sampled_from(["*.nothing", "**/*.jsonl", "none-*.txt"])))
    if kind == "missing":
        return str(work / "missing" / "x.jsonl")
    if kind == "fifo":
        fifo = work / draw(st.sampled_from(["pipe.jsonl", "pipe.txt", "pipe"]))
        os.mkfifo(fifo)
        return str(fifo)
    if kind == "folder":
        folder = work / "folder"
        folder.mkdir()
        for i, suffix in enumerate(draw(st.lists(st.sampled_from([".jsonl", ".txt", ".md", ".json"]), max_size=3))):
            (folder / f"f{i}{suffix}").write_bytes(draw(file_bytes))
        return str(folder)
    path = work / f"data{kind}"
    if kind == ".parquet":
        _parquet(path, draw(st.lists(records, max_size=5)))
    elif kind == ".jsonl.gz":
        import gzip
        path.write_bytes(gzip.compress(draw(file_bytes)) if draw(st.booleans()) else draw(file_bytes))
    else:
        path.write_bytes(draw(file_bytes))
    return str(path)


@oracle.examples(6, 150)
@given(data=st.data())
def test_data_files(data, box):
    with box() as (sandbox, work):
        source = data.draw(data_source(work))
        field = data.draw(st.sampled_from(["text", "text", "body", "id", "", "no such"]))
        oracle.call("data files (data)", ["data", "--source", source, "--text-field", field, "--max-docs", "20",
                                          "--seq-len", "32", "--json"], sandbox, run_dir=work, timeout=120)
        run_dir = work / "run"
        oracle.call("data files (train)", ["train", "--preset", "smoke", "--data", source, "--set", f"text_field={field}",
                                           "--fast-dev-run", "--no-progress", "--run-dir", run_dir], sandbox,
                    run_dir=work, timeout=120) if data.draw(st.integers(0, 7)) == 0 else None


# -- prompts ----------------------------------------------------------------------------------------------

prompt_text = st.one_of(
    any_text, st.text(max_size=60),
    st.lists(st.sampled_from(["[MASK]", "[PAD]", "<|endoftext|>", "[MASK][MASK]", " ", "ROMEO:", "\n", "\x07", "é"]),
             max_size=8).map("".join),
    st.integers(50, 2000).map(lambda n: "to be " * n),  # longer than the context
)
prompt_file = st.one_of(
    st.lists(prompt_text, max_size=4).map(lambda ps: "\n".join(ps).encode("utf-8", "surrogatepass")),
    st.lists(st.one_of(prompt_text.map(json.dumps), prompt_text.map(lambda p: json.dumps({"prompt": p})),
                       st.sampled_from(['{"prompt": 3}', "{", '{"other": "x"}', "[1]"])),
             max_size=4).map(lambda ls: "\n".join(ls).encode("utf-8", "surrogatepass")),
    st.binary(max_size=80),
)


@oracle.examples(5, 120)
@given(data=st.data())
def test_prompts(data, box):
    with box() as (sandbox, work):
        run = sandbox / data.draw(st.sampled_from(["masked", "ar"]))
        argv = ["sample", run, "--no-save", "--no-quality", "--json", "--mode", data.draw(st.sampled_from(["uncond",
                                                                                                          "infill"]))]
        if data.draw(st.booleans()):
            prompt = data.draw(prompt_text)
            argv += [f"--prompt={prompt}"]
        else:
            path = work / data.draw(st.sampled_from(["prompts.txt", "prompts.jsonl", "p"]))
            path.write_bytes(data.draw(prompt_file))
            argv += ["--prompts", path]
        oracle.call("prompts (sample)", argv, sandbox, run_dir=work, timeout=120)


# -- run folders and checkpoints --------------------------------------------------------------------------

def _mutate(path: Path, how: str, data) -> None:
    if path.is_dir() and how != "delete":
        how = "delete"  # a folder (export/, tokenizer/) can only go missing
    if how == "delete":
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "truncate":
        raw = path.read_bytes()
        path.write_bytes(raw[: data.draw(st.integers(0, max(0, len(raw) - 1)))])
    elif how == "flip":
        raw = bytearray(path.read_bytes())
        for _ in range(data.draw(st.integers(1, 8))):
            if raw:
                i = data.draw(st.integers(0, len(raw) - 1))
                raw[i] ^= data.draw(st.integers(1, 255))
        path.write_bytes(bytes(raw))
    elif how == "junk json":
        path.write_text(data.draw(st.sampled_from(["{", "[]", "null", '{"model": 3}', '{"diffusion": {"objective": '
                                                   '"bogus"}}', json.dumps({"model": {"n_layers": -1}})])))


@oracle.examples(4, 80)
@given(data=st.data())
def test_run_folders(data, box):
    with box() as (sandbox, work):
        source = data.draw(st.sampled_from(["masked", "ar"]))
        run = work / "run"
        shutil.copytree(sandbox / source, run)
        files = sorted(p for p in run.rglob("*") if p.is_file())
        for _ in range(data.draw(st.integers(1, 2))):
            target = data.draw(st.sampled_from(files + [run / "export", run / "export" / "tokenizer.json",
                                                         run / "config.json", run / "tokenizer"]))
            if target.exists():
                how = data.draw(st.sampled_from(["delete", "empty", "truncate", "flip", "junk json"]))
                _mutate(target, how, data)
        if data.draw(st.integers(0, 4)) == 0:  # another objective's export in this folder
            other = "ar" if source == "masked" else "masked"
            shutil.rmtree(run / "export", ignore_errors=True)
            shutil.copytree(sandbox / other / "export", run / "export")
        path = data.draw(st.sampled_from([run, run / "export", run / "checkpoints" / "last.ckpt", work / "nowhere",
                                          run / "config.json"]))
        command = data.draw(st.sampled_from(["sample", "evaluate", "export", "train"]))
        argv = {"sample": ["sample", path, "--no-save", "--no-quality", "--json", "--steps", "2", "--length", "8"],
                "evaluate": ["evaluate", path, "--batches", "1", "--t-samples", "1", "--json"],
                "export": ["export", path, "--out", work / "exported", "--json"],
                "train": ["train", "--resume", path, "--max-steps", "1", "--fast-dev-run", "--no-progress"]}[command]
        oracle.call(f"run folders ({command})", argv, sandbox, run_dir=work, timeout=180)


# -- convert parents --------------------------------------------------------------------------------------

CONFIG_KEYS = ["vocab_size", "hidden_size", "n_embd", "num_hidden_layers", "n_layer", "num_attention_heads", "n_head",
               "num_key_value_heads", "intermediate_size", "max_position_embeddings", "n_positions", "rope_theta",
               "model_type", "architectures", "tie_word_embeddings", "head_dim", "rms_norm_eps", "hidden_act",
               "rope_scaling", "torch_dtype", "layer_norm_epsilon", "activation_function"]
config_value = st.one_of(st.integers(-2, 600), st.sampled_from([0, 1, 3, 7, 2**31, 10**9]), st.floats(allow_nan=True),
                         st.none(), st.booleans(), hostile_text, st.sampled_from(["gpt2", "llama", "bert", "t5", "qwen2",
                                                                                  "silu", "gelu_new", ["X"], {}]))


@oracle.examples(2, 40)
@given(data=st.data())
def test_convert_parents(data, box):
    with box() as (sandbox, work):
        family = data.draw(st.sampled_from(["gpt2", "llama"]))
        parent = work / "parent"
        shutil.copytree(sandbox / f"parent-{family}", parent)
        cfg_path = parent / "config.json"
        cfg = json.loads(cfg_path.read_text())
        for _ in range(data.draw(st.integers(1, 3))):
            key = data.draw(st.sampled_from(CONFIG_KEYS))
            if data.draw(st.booleans()) and key in cfg:
                del cfg[key]
            else:
                cfg[key] = data.draw(config_value)
        cfg_path.write_text(json.dumps(cfg))
        if data.draw(st.integers(0, 5)) == 0:
            _mutate(parent / "model.safetensors", data.draw(st.sampled_from(["delete", "truncate", "flip"])), data)
        if data.draw(st.integers(0, 5)) == 0:
            (parent / "tokenizer.json").unlink()
        argv = ["convert", "--from", parent, "--out", work / "out", "--json",
                "--objective", data.draw(st.sampled_from(["masked", "ar"]))]
        oracle.call("convert parents", argv, sandbox, run_dir=work, timeout=180)
