"""Fuzzing what users type (issue #31): `--set KEY=VALUE` for every config field, the numeric flags of every
command, and notebook parameters (`sunfish run NB -p NAME VALUE`), all judged by tests/fuzz_oracle.py.

Training and notebook execution are replaced by dry twins (`dry_train`: the trainer's own run-folder and
config checks, the tokenizer, the model built on the meta device; `checked_only`: `run_notebooks`' parameter checks),
so an accepted input costs milliseconds; everything a command checks before that work runs for real.
The default suite runs a few seeded examples per property; `bash scripts/test.sh -m fuzz` runs hundreds of random ones.
"""

import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from sunfish_lib.config import PRESETS
from sunfish_lib.data.tokenizer import get_tokenizer
from sunfish_lib.model import Backbone
from sunfish_lib.notebook.params import notebook_parameters
from sunfish_lib.notebook import runner as runs
from sunfish_lib.notebook.runner import workbook_notebooks
from sunfish_lib.train import trainer
from tests import fuzz_oracle as oracle
from tests.fuzz_strategies import any_text, numbers_as_text, set_pair

pytestmark = pytest.mark.fuzz
ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = {p.name: p for p in workbook_notebooks()}


def dry_train(cfg, run_dir, *, resume=False, fast_dev_run=False, **_):
    """`trainer.train` up to the first optimizer step: the folder and config checks, tokenizer, model shapes."""
    run_dir = Path(run_dir)
    trainer.check_run_dir_writable(run_dir)
    cfg = trainer.prepare_run(cfg.validate(), run_dir, resume).resolve_batch()
    if cfg.data.tokenizer != "bpe" or cfg.data.bpe_vocab_size == PRESETS["smoke"].data.bpe_vocab_size:
        get_tokenizer(cfg.data.tokenizer, cfg.data.bpe_vocab_size)  # (another BPE size would train and cache one)
    with torch.device("meta"):
        Backbone.from_config(cfg)
    return {"run_dir": str(run_dir), "global_step": 0, "metrics": {}, "is_global_zero": True}


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory):
    """A folder holding everything the commands are pointed at; the oracle hashes it before and after each call."""
    from tests.sampling_helpers import make_run

    root = tmp_path_factory.mktemp("fuzz_cli")
    make_run(root / "masked", "masked", ckpt=True)
    (root / "docs.jsonl").write_text("".join(f'{{"text": "document {i}: to be or not to be"}}\n' for i in range(20)))
    return root


@pytest.fixture
def dry(monkeypatch, sandbox):
    monkeypatch.setattr(trainer, "train", dry_train)
    monkeypatch.chdir(sandbox)
    monkeypatch.setenv("SUNFISH_RUNS", str(sandbox / "runs"))
    return sandbox


def _fresh(sandbox: Path) -> Path:
    """A run folder path of its own under the sandbox (not yet created)."""
    return Path(tempfile.mkdtemp(dir=sandbox, prefix="run-")) / "r"


def _then_resume(sandbox: Path, run_dir: Path) -> None:
    """A refused or finished run leaves nothing a later `--resume` trips over (success or one line, exit 2)."""
    if run_dir.exists():
        oracle.call("train --resume after", ["train", "--resume", run_dir, "--preset", "smoke"], sandbox,
                    run_dir=run_dir)
    shutil.rmtree(run_dir.parent, ignore_errors=True)


@oracle.examples(8, 2000)
@given(pairs=st.lists(set_pair(), min_size=1, max_size=3))
def test_set_overrides_estimate(pairs, dry):
    argv = ["estimate", "--preset", "smoke", "--json"]
    for p in pairs:
        argv += ["--set", p]
    oracle.call("--set (estimate)", argv, dry)


@oracle.examples(6, 1200)
@given(pairs=st.lists(set_pair(), min_size=1, max_size=3), preset=st.sampled_from(["smoke", "tiny", "1.4B"]))
def test_set_overrides_train(pairs, preset, dry):
    run_dir = _fresh(dry)
    argv = ["train", "--preset", preset, "--run-dir", run_dir, "--no-progress", "--data", dry / "docs.jsonl"]
    for p in pairs:
        argv += ["--set", p]
    oracle.call("--set (train)", argv, dry, run_dir=run_dir)
    _then_resume(dry, run_dir)


NUMERIC_FLAGS = {
    "estimate": (["estimate", "--preset", "smoke", "--json"], ["--micro-batch", "--seq-len", "--gpus"]),
    "data": (["data", "--source", "{sandbox}/docs.jsonl", "--json"], ["--seq-len", "--max-docs"]),
    "train": (["train", "--preset", "smoke", "--no-progress", "--data", "{sandbox}/docs.jsonl"],
              ["--max-steps", "--stop-at-step", "--overfit-batches", "--devices", "--num-nodes"]),
    "sample": (["sample", "{sandbox}/masked", "--no-save", "--no-quality", "--json"],
               ["--seed", "--steps", "--length", "--num-samples", "--top-k", "--top-p", "--temperature",
                "--mask-length", "--block-length", "--threshold"]),
    "evaluate": (["evaluate", "{sandbox}/masked", "--json", "--batches", "1", "--t-samples", "2"],
                 ["--batches", "--t-samples", "--seed"]),
    "runs": (["runs", "{sandbox}", "--json"], ["--stale-minutes"]),
    "convert": (["convert", "--from", "{sandbox}/nowhere", "--out", "{sandbox}/conv"], ["--tol"]),
    "eval-harness": (["eval-harness", "{sandbox}/masked", "--tasks", "no_such_task_xyz"],
                     ["--draws", "--num-fewshot", "--limit", "--batch-size", "--seed"]),
}
"""command -> (argv before the flags, its numeric flags); the fuzz gives each flag a value or leaves it out."""

LANE_EXAMPLES = {"sample": 60, "evaluate": 25, "eval-harness": 15}
"""Lane examples of the commands whose every call loads a model (eval-harness: lm_eval's task index too)."""

SMALL = {"--steps": 8, "--length": 16, "--num-samples": 4, "--batches": 2, "--t-samples": 4, "--mask-length": 8,
         "--max-docs": 50, "--max-steps": 50, "--block-length": 16, "--seq-len": 64}
"""Flags whose large values are real work (a user asking for 10**9 sampling steps waits for them): the fuzz
keeps their valid values small; zero, negative, NaN and junk values are still tried."""


def _numeric(flag: str):
    cap = SMALL.get(flag)
    if cap is None:
        return numbers_as_text()
    return st.one_of(st.integers(1, cap).map(str), numbers_as_text().filter(lambda v: not _large(v, cap)))


def _large(text: str, cap: int) -> bool:
    try:
        return float(text) > cap
    except ValueError:
        return False


@pytest.mark.parametrize("command", sorted(NUMERIC_FLAGS))
def test_numeric_flags(command, dry):
    if command == "eval-harness" and not oracle.in_lane():
        pytest.skip("lm_eval's import and task index take about a minute; the fuzz lane runs it "
                    "(its number checks are in tests/test_bad_inputs.py)")
    head, flags = NUMERIC_FLAGS[command]

    @oracle.examples(2, LANE_EXAMPLES.get(command, 150))
    @given(values=st.fixed_dictionaries({}, optional={f: _numeric(f) for f in flags}))
    def check(values):
        run_dir = _fresh(dry)
        argv = [a.replace("{sandbox}", str(dry)) for a in head]
        if command == "train":
            argv += ["--run-dir", run_dir]
        for flag, value in values.items():
            argv += [flag, value] if not value.startswith("-") else [f"{flag}={value}"]
        oracle.call(f"numeric flags ({command})", argv, dry, run_dir=run_dir if command == "train" else dry / "masked",
                    timeout=120)
        shutil.rmtree(run_dir.parent, ignore_errors=True)

    check()


def _param_value(default):
    """A `-p NAME VALUE` text for a parameter whose default is `default`: its own kind, a neighbour, or junk."""
    own = {bool: st.sampled_from(["True", "False"]), int: numbers_as_text(), float: numbers_as_text(),
           str: st.one_of(st.sampled_from(["masked", "ar", "tiny", "smoke", "auto", "linear"]), any_text)}
    kind = type(default)
    typed = own.get(kind, st.sampled_from(["[]", "[1, 2]", "['a']", "{}", "{'n_layers': 2}", "None", "[0.5, 2.0]",
                                           "{'sampler': 'threshold', 'steps': 0}", "{'bogus': 1}"]))
    return st.one_of(typed, typed, any_text, st.just(repr(default)))


@pytest.mark.parametrize("name", sorted(NOTEBOOKS))
def test_notebook_parameters(name, dry, monkeypatch):
    nb = NOTEBOOKS[name]
    defaults = notebook_parameters(nb)
    def checked_only(paths, params, **_):
        """`runs.run_notebooks` up to the kernel: every notebook's parameters resolved and checked."""
        for p in paths:
            runs._resolved_params(p, Path("."), params.get(p.name, {}))
        return dry

    monkeypatch.setattr("sunfish_lib.commands.run.run_notebooks", checked_only)
    names = sorted(defaults) + ["nonsense", "", "smoke "]

    @oracle.examples(2, 60)
    @given(params=st.lists(st.sampled_from(names).flatmap(
        lambda n: st.tuples(st.just(n), _param_value(defaults.get(n)))), min_size=1, max_size=3))
    def check(params):
        argv = ["run", str(ROOT / "notebooks" / name)]
        for n, v in params:
            argv += ["-p", n, v]
        oracle.call("notebook parameters", argv, dry)

    check()
