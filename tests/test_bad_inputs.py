"""The bad-input table: every command and the notebooks' parameters, each mistake refused in one line.

Each case: argv (with {placeholders} for files the fixture makes) and a distinctive piece of
the message. Expected: exit code 2, exactly one line on stderr, no traceback. Cases run
in-process (milliseconds); a few run as subprocesses to prove no traceback reaches stderr.
"""

import gzip
import json
import os
import re
import shutil
import socket

import nbformat
import pytest

from sunfish_lib.cli import main
from sunfish_lib.config import PRESETS
from sunfish_lib.notebook.params import check_params, notebook_parameters, parse_cli_params
from sunfish_lib.notebook.runner import workbook_notebooks
from tests.helpers import run_cli

NB = {p.name[:2]: f"notebooks/{p.name}" for p in workbook_notebooks()}


def _run(nb: str, *params: str) -> list[str]:
    """`run NB -p NAME VALUE ...` argv."""
    argv = ["run", NB[nb]]
    for name, value in zip(params[::2], params[1::2]):
        argv += ["-p", name, value]
    return argv


CASES = [
    # subcommands and argparse
    ([], "the following arguments are required: command"),
    (["bogus"], "invalid choice: 'bogus'"),
    (["check", "--bogus"], "unrecognized arguments: --bogus"),
    # sunfish run: paths, notebook files, resume
    (["run"], "sunfish run needs a notebook"),
    (["run", "missing.ipynb"], "notebook missing.ipynb does not exist"),
    (["run", "README.md"], "is not a notebook (.ipynb)"),
    (["run", "{two_params_nb}"], "has 2 cells tagged 'parameters'; it needs exactly one"),
    (["run", "{corrupt_nb}"], "cannot be read as a notebook"),
    (["run", "--resume", "{tmp}/nowhere"], "is not a notebook run folder (no run.json)"),
    (["run", "--resume", "{bad_json_run}"], "run.json is not valid JSON"),
    (["run", "--resume", "{old_run}"], "records no notebook plan"),
    (["run", NB["00"], "--resume", "{old_run}"], "drop the notebook"),
    (["run", "--resume", "{old_run}", "-p", "smoke", "True"], "drop -p"),
    (["workbook", "--resume", "{live_run}"], "is still running (pid"),
    (["workbook", "--only", "99"], "--only 99 matches no notebook"),
    (["workbook", "--only"], "argument --only: expected at least one argument"),
    (["run", NB["00"], "-p", "smoke"], "argument -p/--parameter: expected 2 arguments"),
    (["workbook", "--resume", "{old_run}", "--smoke"], "drop --smoke"),
    (["workbook", "--resume", "{old_run}", "--only", "00"], "drop --only"),
    # notebook parameters: names, types, values (all refused before a kernel starts)
    (_run("00", "nonsense", "1"), "has no parameter 'nonsense'; its parameters are: smoke"),
    (_run("00", "smoke", "3"), "parameter smoke=3 is an int, but its default False is a bool"),
    (_run("04", "max_steps", "abc"), f"parameter max_steps='abc' is a string, but its default {PRESETS['tiny'].train.max_steps} is an int"),
    (_run("04", "max_steps", "-5"), "parameter max_steps=-5 must be > 0"),
    (_run("04", "objective", "diffusion"), "'diffusion' is not allowed; choose one of continuous, masked, ar"),
    (_run("04", "strategy", "tpu"), "'tpu' is not allowed; choose one of auto, single, ddp, fsdp"),
    (_run("04", "poll_seconds", "'fast'"), "parameter poll_seconds='fast' is a string"),
    (_run("01", "preset", "7B"), "'7B' is not allowed; choose one of tiny, 125M, 350M, 1.4B"),
    (_run("01", "precision", "fp8"), "'fp8' is not allowed; choose one of auto, 32-true"),
    (_run("01", "overrides", "{'model.nlayers': 2}"), "parameter overrides: unknown config key 'model.nlayers'"),
    (_run("01", "gpus", "['a', 'b']"), "is a list of str, but its default [48, 20] is a list of int"),
    (_run("01", "gpus", "48"), "parameter gpus=48 is an int, but its default [48, 20] is a list of int"),
    (_run("02", "random_length_fraction", "1.5"), "random_length_fraction=1.5 must be in [0, 1]"),
    (_run("02", "seq_len", "0"), "parameter seq_len=0 must be > 0"),
    (_run("03", "lr", "0"), "parameter lr=0 must be > 0"),
    (_run("03", "overrides", "{'n_layers': 'two'}"), "model.n_layers='two' is not a valid int"),
    (_run("05", "schedules", "['linear', 'quadratic']"), "'quadratic' is not allowed; choose one of linear"),
    (_run("05", "noise_t", "[0.5, 2.0]"), "parameter noise_t=[0.5, 2.0] must be in [0, 1]"),
    (_run("06", "mode", "sideways"), "'sideways' is not allowed; choose one of uncond, infill"),
    (_run("06", "seed", "-1"), "parameter seed=-1 must be >= 0"),
    (_run("07", "checkpoint", "/nonexistent/run"), "checkpoint='/nonexistent/run': no such file or folder"),
    (_run("06", "checkpoint", "5"), "parameter checkpoint=5: 5 is not a path"),
    (_run("09", "runs", "[1]"), "parameter runs=[1]: 1 is not a path"),
    (_run("08", "hf_families", "['gpt3']"), "'gpt3' is not allowed; choose one of gpt2, llama"),
    (_run("09", "runs", "['/nonexistent/run']"), "'/nonexistent/run': no such file or folder"),
    (_run("09", "sample_steps", "0"), "parameter sample_steps=0 must be > 0"),
    (_run("10", "parallel", "0"), "parameter parallel=0 must be > 0"),
    # sunfish data
    (["data", "--seq-len", "0"], "--seq-len must be > 0"),
    (["data", "--seq-len", "abc"], "argument --seq-len: invalid int value: 'abc'"),
    (["data", "--max-docs", "-1"], "--max-docs >= 0"),
    (["data", "--source", "/nonexistent/file.txt"], "is no file, folder or glob that exists"),
    (["data", "--source", "fineweb"], "offline mode is on"),
    (["data", "--source", "{empty}"], "matches no .txt/.jsonl/.json/.parquet file"),
    (["data", "--source", "{docs_jsonl}", "--text-field", "body"], "data.text_field='body' is in no record"),
    (["data", "--tokenizer", "/nonexistent-tokenizer"], "data.tokenizer='/nonexistent-tokenizer': no such folder"),
    # sunfish estimate
    (["estimate"], "the following arguments are required: --preset"),
    (["estimate", "--preset", "7B"], "preset='7B' is not allowed"),
    (["estimate", "--preset", "tiny", "--objective", "diffusion"], "objective='diffusion' is not allowed"),
    (["estimate", "--preset", "tiny", "--strategy", "tpu"], "strategy='tpu' is not allowed"),
    (["estimate", "--preset", "tiny", "--precision", "fp8"], "precision='fp8' is not allowed"),
    (["estimate", "--preset", "tiny", "--gpus", "48,abc"], "gpus='48,abc' must be GPU memory sizes in GB"),
    (["estimate", "--preset", "tiny", "--micro-batch", "0"], "micro_batch=0 must be a positive integer"),
    (["estimate", "--preset", "tiny", "--seq-len", "0"], "seq_len=0 must be a positive integer"),
    (["estimate", "--preset", "tiny", "--seq-len", "100000"], "seq_len=100000 exceeds model.max_seq_len=256"),
    (["estimate", "--preset", "tiny", "--set", "nlayers=2"], "unknown config key 'nlayers'; did you mean n_layers"),
    (["estimate", "--preset", "tiny", "--set", "model.n_layers=two"], "model.n_layers='two' is not a valid int"),
    (["estimate", "--preset", "tiny", "--set", "n_layers"], "--set 'n_layers' is not key=value"),
    (["estimate", "--preset", "tiny", "--set", "model.n_heads=5"], "is not divisible by model.n_heads=5"),
    (["estimate", "--preset", "tiny", "--objective", "block", "--set", "block_size=5"],
     "diffusion.block_size=5 does not divide data.seq_len=64; pick a divisor of seq_len"),
    (["estimate", "--preset", "tiny", "--objective", "block", "--set", "t_clip=0.9"],
     "diffusion.t_clip='0.9' must be a list of 2 values"),
    (["estimate", "--preset", "tiny", "--cpu-offload", "--strategy", "ddp"], "cpu_offload=True needs strategy='fsdp'"),
    # sunfish train (all refused before a run folder or a model exists)
    (["train", "--preset", "7B"], "unknown preset '7B'; choose one of tiny"),
    (["train", "--objective", "foo"], "diffusion.objective='foo' is not allowed"),
    (["train", "--config", "{tmp}/missing.json"], "missing.json does not exist"),
    (["train", "--config", "{corrupt_json}"], "config JSON is not valid JSON"),
    (["train", "--config", "{unknown_key_json}"], "unknown config key 'model.bogus'"),
    (["train", "--config", "{list_json}"], "config section <root> must be an object, got list"),
    (["train", "--config", "{run}/config.json", "--preset", "350M"], "both choose the starting config"),
    (["train", "--resume"], "--resume needs the run folder: --resume RUN_DIR"),
    (["train", "--max-steps", "-1"], "train.max_steps=-1 must be > 0"),
    (["train", "--max-steps", "100", "--stop-at-step", "2000"], "--stop-at-step=2000 is beyond train.max_steps=100"),
    (["train", "--stop-at-step", "0"], "--stop-at-step=0 must be >= 1"),
    (["train", "--overfit-batches", "-1"], "--overfit-batches=-1 must be >= 0"),
    (["train", "--set", "train.lr=-1"], "train.lr=-1.0 must be > 0"),
    (["train", "--set", "train.compile=maybe"], "train.compile='maybe' is not a valid true, false or auto"),
    (["train", "--set", "warmup_steps=500", "--max-steps", "100"], "is longer than train.max_steps=100"),
    (["train", "--strategy", "tpu"], "train.strategy='tpu' is not allowed"),
    (["train", "--devices", "0"], "train.devices=0 must be > 0"),
    (["train", "--set", "seed=-1"], "seed=-1 must be in [0, 2**32 - 1]"),
    (["train", "--objective", "masked", "--set", "sample.sampler=ddpm"], "'ddpm' does not fit objective 'masked'"),
    (["train", "--data", "/nonexistent.txt", "--run-dir", "{tmp}/t"], "is no file, folder or glob that exists"),
    # sunfish sample
    (["sample", "{tmp}/nowhere"], "nowhere does not exist; pass a run folder"),
    (["sample", "{empty}"], "is not a Sunfish run or model folder"),
    (["sample", "{run}", "--sampler", "bogus"], "sample.sampler='bogus' does not fit objective 'masked'"),
    (["sample", "{run}", "--sampler", "ddim"], "sample.sampler='ddim' does not fit objective 'masked'"),
    (["sample", "{run}", "--trajectory", "out.txt"], "--trajectory out.txt must end in .safetensors"),
    (["sample", "{run}", "--mode", "sideways"], "argument --mode: invalid choice: 'sideways'"),
    (["sample", "{run}", "--steps", "0"], "sample.steps=0 must be > 0"),
    (["sample", "{run}", "--seed", str(2**70)], f"seed={2**70} must be an integer in [0, 2**32 - 1]"),
    (["sample", "{run}", "--trajectory", "/proc/sunfish/t.safetensors"], "--trajectory: cannot write into /proc"),
    (["sample", "{run}", "--top-p", "2"], "sample.top_p=2.0 must be in (0, 1]"),
    (["sample", "{run}", "--length", "100000"], "sample.length=100000 exceeds model.max_seq_len"),
    (["sample", "{run}", "--progress", "--no-progress"], "argument --no-progress: not allowed with argument --progress"),
    (["sample", "{run}", "--mode", "infill", "--prompt", "no mask"], "infill mode needs a prompt with [MASK]"),
    # sunfish convert
    (["convert"], "the following arguments are required: --from, --out"),
    (["convert", "--from", "{tmp}/nowhere", "--out", "{tmp}/c"], "nowhere: no such folder"),
    (["convert", "--from", "{run}", "--out", "{tmp}/c", "--tol", "0"], "--tol=0.0 must be > 0"),
    (["convert", "--from", "{run}", "--out", "{tmp}/c", "--set", "lr"], "--set 'lr' is not key=value"),
    (["convert", "--from", "{run}", "--out", "{tmp}/c", "--objective", "continuous"], "'continuous' is not allowed"),
    (["convert", "--from", "nobody/no-model", "--out", "{tmp}/c"], "the hub is offline"),
    (["convert", "--from", "{hf_bad_config}", "--out", "{tmp}/c"], "config.json is not a readable Hugging Face config"),
    (["convert", "--from", "{run}", "--out", "{tmp}/c"], "is a Sunfish masked model; convert takes a run trained"),
    # sunfish evaluate
    (["evaluate", "{tmp}/nowhere"], "nowhere does not exist"),
    (["evaluate", "{empty}"], "is not a Sunfish run or model folder"),
    (["evaluate", "{run}", "--batches", "0"], "val_batches=0 and t_samples=16 must both be >= 1"),
    (["evaluate", "{run}", "--t-samples", "0"], "val_batches=20 and t_samples=0 must both be >= 1"),
    (["evaluate", "{run}", "--t-samples", "abc"], "argument --t-samples: invalid int value: 'abc'"),
    # found by the fuzz lane (tests/test_fuzz_*.py, issue #31)
    (["train", "--preset", "smoke", "--data", "{empty_jsonl}"], "holds no documents"),
    (["data", "--source", "{blank_txt}"], "is empty or whitespace only"),
    (["estimate", "--preset", "tiny", "--set", "data.bpe_vocab_size="], "is not a valid int; give one, e.g."),
    (["convert", "--from", "{run}", "--out", "{tmp}/c", "--tol", "nan"], "--tol=nan must be > 0"),
    (["runs", "{tmp}", "--stale-minutes", "nan"], "--stale-minutes nan must be > 0"),
    (["eval-harness", "{run}", "--tasks", "x", "--draws", "0"], "--draws=0 must be >= 1"),
    (["eval-harness", "{run}", "--tasks", "x", "--limit", "-1"], "--limit=-1.0 must be a positive number"),
    (["evaluate", "{run}", "--seed", "-1"], "seed=-1 must be an integer in [0, 2**32 - 1]"),
    (["data", "--source", "{not_gzip}"], "has a compressed file that cannot be read (BadGzipFile"),
    (["data", "--source", "{empty_gzip}"], "is empty or whitespace only"),
    (["data", "--source", "{null_jsonl}"], "does not hold JSON records (it starts with 'null')"),
    (["data", "--source", "{gzip_not_json}"], "does not hold JSON records (it starts with 'not json')"),
    (["estimate", "--preset", "tiny", "--set", f"micro_batch_size={2**64}"], "is out of range; give an integer below 2**63"),
    (["sample", "{ar_run}", "--mode", "infill", "--prompt", "a [MASK] b"], "put every [MASK] at the end"),
    (["estimate", "--preset", "smoke", "--set", "model.max_seq_len=32"], "lower sample.length or raise model.max_seq_len"),
    (["sample", "{run}", "--mask-length", "1", "--threshold", "0"], "sample.threshold=0.0 must be in (0, 1]"),  # no note
    (["sample", "{run}", "--prompt=\ud800"], "the prompt holds U+D800 at position 0, which is not valid Unicode"),
    (["sample", "{run}", "--prompts", "{surrogate_jsonl}"], "prompt 2 holds U+DC00 at position 1"),
    (["estimate", "--preset", "smoke", "--micro-batch", str(2**70)], f"micro_batch={2**70} is out of range"),
    (["train", "--preset", "smoke", "--set", "model.n_layers=2000000000", "--run-dir", "{tmp}/huge"],
     "GiB of fp32 weights), more than this machine's"),
    (["sample", "{junk_tokenizer_run}"], "holds damaged files (AttributeError"),
    (["evaluate", "{list_tokenizer_run}"], "holds damaged files (TypeError"),
    (["export", "{flipped_tokenizer_run}", "--out", "{tmp}/e"], "cannot be read ("),
]


def _notebook(path, *param_cells: str):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src, metadata={"tags": ["parameters"]}) for src in param_cells]
    nbformat.write(nb, str(path))
    return str(path)


def _run_folder(path, info) -> str:
    path.mkdir()
    (path / "run.json").write_text(info if isinstance(info, str) else json.dumps(info))
    return str(path)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The files the cases point at: a tiny masked run, broken configs and notebooks, run folders."""
    from tests.sampling_helpers import make_run

    tmp = tmp_path_factory.mktemp("bad_inputs")
    (tmp / "corrupt.json").write_text('{"model": {"n_layers": 2,}')
    (tmp / "unknown.json").write_text('{"model": {"bogus": 1}}')
    (tmp / "list.json").write_text("[1, 2]")
    (tmp / "docs.jsonl").write_text('{"text": "To be, or not to be"}\n')
    (tmp / "empty").mkdir()
    (tmp / "hf-bad").mkdir()
    (tmp / "hf-bad" / "config.json").write_text("{not json")
    (tmp / "corrupt.ipynb").write_text("{ this is not a notebook")
    (tmp / "empty.jsonl").write_text("")
    (tmp / "blank.txt").write_text(" \n\t\n")
    (tmp / "not-gzip.jsonl.gz").write_bytes(b'{"text": "plain, not gzip"}\n')
    (tmp / "empty.jsonl.gz").write_bytes(gzip.compress(b""))
    (tmp / "surrogate.jsonl").write_text('"fine"\n"a\\udc00b"\n')  # a JSON escape that is no character
    (tmp / "null.jsonl").write_text("null")  # pyarrow's JSON reader segfaulted on it
    (tmp / "not-json.jsonl.gz").write_bytes(gzip.compress(b"not json\n"))
    run = make_run(tmp / "run", "masked")
    damaged = {}
    for name, junk in [("junk_tokenizer_run", "null"), ("list_tokenizer_run", "[]"),
                       ("flipped_tokenizer_run", b'{"version": "1.0", "truncation": null, \xd9\x00')]:
        shutil.copytree(run, tmp / name)
        for f in (tmp / name).rglob("tokenizer.json"):  # the run's tokenizer/ and its export's copy
            f.write_bytes(junk if isinstance(junk, bytes) else junk.encode())
        damaged[name] = str(tmp / name)
    return {
        **damaged, "tmp": str(tmp), "run": str(run), "empty": str(tmp / "empty"),
        "corrupt_json": str(tmp / "corrupt.json"), "unknown_key_json": str(tmp / "unknown.json"),
        "list_json": str(tmp / "list.json"), "docs_jsonl": str(tmp / "docs.jsonl"),
        "hf_bad_config": str(tmp / "hf-bad"), "corrupt_nb": str(tmp / "corrupt.ipynb"),
        "empty_jsonl": str(tmp / "empty.jsonl"), "blank_txt": str(tmp / "blank.txt"),
        "not_gzip": str(tmp / "not-gzip.jsonl.gz"), "empty_gzip": str(tmp / "empty.jsonl.gz"),
        "null_jsonl": str(tmp / "null.jsonl"), "surrogate_jsonl": str(tmp / "surrogate.jsonl"),
        "gzip_not_json": str(tmp / "not-json.jsonl.gz"), "ar_run": str(make_run(tmp / "ar-run", "ar")),
        "two_params_nb": _notebook(tmp / "two.ipynb", "x = 1", "y = 2"),
        "bad_json_run": _run_folder(tmp / "bad-json-run", "{"),
        "old_run": _run_folder(tmp / "old-run", {"status": "failed", "notebooks": []}),
        "live_run": _run_folder(tmp / "live-run", {"status": "running", "notebooks": [], "plan": [],
                                                   "pid": os.getpid(), "hostname": socket.gethostname()}),
    }


@pytest.mark.parametrize("argv,needle", CASES, ids=[" ".join(a)[:60] or "(none)" for a, _ in CASES])
def test_bad_input_one_line_exit_2(argv, needle, files, capsys, tmp_path):
    argv = [re.sub(r"\{(\w+)\}", lambda m: files.get(m[1], m[0]), a) for a in argv]
    if argv[:1] in (["run"], ["workbook"]) and "--resume" not in argv and len(argv) > 1:
        argv += ["--runs-dir", str(tmp_path / "runs")]
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert needle in err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir()), "no run folder for a typo"


def test_table_covers_every_command():
    commands = {argv[0] for argv, _ in CASES if argv}
    assert {"check", "run", "workbook", "data", "estimate", "train", "sample", "convert", "evaluate"} <= commands
    assert len(CASES) >= 40
    notebooks_in_cases = {a[1] for a, _ in CASES if a[:1] == ["run"] and a[1:2] and a[1].startswith("notebooks/")}
    assert notebooks_in_cases == set(NB.values()), "a parameter case for every workbook notebook"


@pytest.mark.slow
@pytest.mark.parametrize("argv,needle", [
    (["run", "nope.ipynb"], "error: notebook nope.ipynb does not exist; see notebooks/ for the workbook"),
    (["run", "notebooks/04_train.ipynb", "-p", "max_steps", "abc"], "parameter max_steps='abc' is a string"),
    (["train", "--set", "model.n_heads=5"], "is not divisible by model.n_heads=5"),
])
def test_bad_input_subprocess_no_traceback(argv, needle, tmp_path):
    r = run_cli(*argv, "--runs-dir", str(tmp_path)) if argv[0] == "run" else run_cli(*argv)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in r.stderr


def test_workbook_defaults_pass_their_own_checks():
    for nb in workbook_notebooks():
        assert check_params(nb, notebook_parameters(nb)) == notebook_parameters(nb)


def test_parameter_types_follow_the_declared_default(tmp_path):
    nb = _notebook(tmp_path / "nb.ipynb", "rate = 0.5\nname = 'x'\nckpt = None\nsizes = [1, 2]\nflag = False")
    ok = {"rate": 2, "name": "y", "ckpt": 3, "sizes": [], "flag": True}
    assert check_params(nb, ok)["rate"] == 0.5  # int for a float, anything for None, an empty list
    assert parse_cli_params(nb, [("name", "42"), ("rate", "1e-3"), ("ckpt", "None"), ("name", "'q'")]) == {
        "name": "q", "rate": 1e-3, "ckpt": None}
    assert parse_cli_params(nb, [("name", "42")]) == {"name": "42"}  # a string parameter keeps the text
    for name, value in [("rate", "0.1"), ("flag", 1), ("sizes", (1, "a")), ("name", None)]:
        with pytest.raises(Exception, match=f"parameter {name}="):
            check_params(nb, {name: value})
