"""Shared test setup: offline hub, deterministic torch, small thread counts, shared fixtures and
the one way tests run and read notebooks (`run_notebook`, `NotebookOutputs`).

Fixtures for every test file: `bpe` and `fineweb_dir` (tests/data_fixtures.py, registered below),
`tok` (the tiny preset's tokenizer; a file may define its own), `run_notebook` (papermill with
smoke parameters into tmp_path).
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

# Hub calls must fail fast (0.01 s) instead of waiting on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import nbformat  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

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


@dataclass
class NotebookOutputs:
    """What an executed notebook shows: its cells' outputs, read one way for every test."""

    nb: nbformat.NotebookNode

    @classmethod
    def read(cls, path: str | Path) -> "NotebookOutputs":
        return cls(nbformat.read(str(path), as_version=4))

    @property
    def outputs(self) -> list[dict]:
        return [o for c in self.nb.cells for o in c.get("outputs", [])]

    @property
    def text(self) -> str:
        """Streams, else the plain-text repr (JSON-quoted), one output a line."""
        return "\n".join(o.get("text", "") or json.dumps(o.get("data", {}).get("text/plain", ""))
                         for o in self.outputs)

    @property
    def streams(self) -> str:
        """What the cells printed (stdout/stderr streams), one output a line."""
        return "\n".join(o.get("text", "") for o in self.outputs if "text" in o)

    @property
    def markdown(self) -> str:
        return "\n".join(self.data("text/markdown"))

    @property
    def html(self) -> str:
        return "\n".join(self.data("text/html"))

    @property
    def kinds(self) -> list[str]:
        """The MIME type of every rich output, in order (an output with an image and its repr counts twice)."""
        return [k for o in self.outputs for k in o.get("data", {})]

    def data(self, mime: str) -> list[str]:
        """Each output's `mime` content (e.g. every text/markdown table), in order."""
        return ["".join(v) if isinstance(v, list) else v
                for o in self.outputs if (v := o.get("data", {}).get(mime)) is not None]

    def count(self, mime: str) -> int:
        """Outputs carrying `mime` (e.g. image/png)."""
        return sum(mime in o.get("data", {}) for o in self.outputs)


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
