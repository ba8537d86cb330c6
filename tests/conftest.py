"""Shared test setup: offline hub, deterministic torch, small thread counts, shared fixtures and
the one way tests run notebooks (`run_notebook`; they read them with `tests.notebook_display.NotebookOutputs`).

Fixtures for every test file: `bpe` and `fineweb_dir` (tests/data_fixtures.py, registered below),
`tok` (the tiny preset's tokenizer; a file may define its own), `run_notebook` (papermill with
smoke parameters into tmp_path).
"""

import os
from pathlib import Path

# Hub calls must fail fast (0.01 s) instead of waiting on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from tests.notebook_display import NotebookOutputs  # noqa: E402

pytest_plugins = ["tests.data_fixtures"]  # bpe, fineweb_dir: used without importing them by name


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _cleanup_process_group():
    yield
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


@pytest.fixture(scope="session")
def tok():
    """The smoke (and tiny) preset's tokenizer (the offline BPE-1024): what `train_helpers.small_config` runs use."""
    from sunfish_lib.config import PRESETS
    from sunfish_lib.data.tokenizer import get_tokenizer

    return get_tokenizer("bpe", PRESETS["smoke"].data.bpe_vocab_size)


@pytest.fixture
def run_notebook(tmp_path):
    """run_notebook(path, cwd=None, **params) -> NotebookOutputs: papermill with smoke=True into tmp_path."""
    import papermill

    def run(path: Path, cwd: Path | None = None, **params) -> NotebookOutputs:
        out = tmp_path / Path(path).name
        papermill.execute_notebook(str(path), str(out), parameters={"smoke": True, **params},
                                   kernel_name="python3", progress_bar=False, cwd=str(cwd or tmp_path))
        return NotebookOutputs.read(out)

    return run


def pytest_configure(config):
    """`-m fuzz` (the fuzz lane: bash scripts/test.sh -m fuzz) runs the generators at their large example counts."""
    expr = (config.option.markexpr or "").replace(" ", "")
    if "fuzz" in expr and "notfuzz" not in expr:
        os.environ["SUNFISH_FUZZ_LANE"] = "1"


def pytest_terminal_summary(terminalreporter):
    """The fuzz report: inputs tried and failures per surface (the lane also writes it as JSON)."""
    import sys

    oracle = sys.modules.get("tests.fuzz_oracle")
    if oracle is None or not oracle.tried:
        return
    rep = oracle.report()
    terminalreporter.section("fuzz report")
    for name, s in rep["surfaces"].items():
        terminalreporter.write_line(f"{name:<30} {s['inputs']:>6} inputs  {s['failures']:>3} failures  {s['seconds']:>7.1f} s")
    terminalreporter.write_line(f"{'total':<30} {rep['total_inputs']:>6} inputs  {rep['total_failures']:>3} failures")
    path = os.environ.get("SUNFISH_FUZZ_REPORT") or ("runs/fuzz-report.json" if oracle.in_lane() else "")
    if path:
        oracle.write_report(Path(path))
        terminalreporter.write_line(f"fuzz report written to {path}")
