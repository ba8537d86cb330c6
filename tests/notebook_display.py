"""What a reader of an executed notebook sees: figures rendered as images, no broken widgets.

`smoke_workbook()` runs every numbered notebook with smoke parameters into one run folder,
once per test session (`sunfish workbook --smoke`); set SUNFISH_SMOKE_WORKBOOK to an executed
workbook folder to check that one instead (e.g. a full run's).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import nbformat

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


FIGURE_TEXT = ("<Figure size", "<matplotlib.figure.Figure")


def figures_without_images(nb) -> list[str]:
    """'cell N: <Figure size ...>' for each output that is a Figure's text with no image/png beside it."""
    bad = []
    for i, cell in enumerate(nb.cells):
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            text = data.get("text/plain", "")
            text = "".join(text) if isinstance(text, list) else text
            if any(text.startswith(f) for f in FIGURE_TEXT) and "image/png" not in data:
                bad.append(f"cell {i}: {text.strip()[:60]}")
    return bad


def _is_figure(out) -> bool:
    data = out.get("data", {})
    text = data.get("text/plain", "")
    text = "".join(text) if isinstance(text, list) else text
    return "image/png" in data or any(text.startswith(f) for f in FIGURE_TEXT)


def figure_cells(nb) -> list[int]:
    """Indexes of the figure cells: outputs with an image, or a Figure's text (the browser must show an image)."""
    return [i for i, c in enumerate(nb.cells) if any(_is_figure(o) for o in c.get("outputs", []))]


def executed_notebooks(run_dir: Path) -> list[Path]:
    return sorted(p for p in Path(run_dir).glob("[0-9][0-9]_*.ipynb") if ".attempt" not in p.name)


_RUN: dict[str, Path] = {}


def smoke_workbook(tmp_parent: Path) -> Path:
    """The executed smoke workbook (run once per session, or SUNFISH_SMOKE_WORKBOOK)."""
    given = os.environ.get("SUNFISH_SMOKE_WORKBOOK")
    if given:
        return Path(given)
    if "run" not in _RUN:
        from sunfish_lib.notebook.runner import run_notebooks, workbook_notebooks

        nbs = workbook_notebooks()
        _RUN["run"] = run_notebooks(nbs, {n.name: {"smoke": True} for n in nbs}, name="workbook",
                                    runs_parent=tmp_parent)
    return _RUN["run"]


def read(path: Path):
    return NotebookOutputs.read(path).nb
