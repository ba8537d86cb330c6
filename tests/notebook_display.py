"""What a reader of an executed notebook sees: figures rendered as images, no broken widgets.

`smoke_workbook()` runs every numbered notebook with smoke parameters into one run folder,
once per test session (`sunfish workbook --smoke`); set SUNFISH_SMOKE_WORKBOOK to an executed
workbook folder to check that one instead (e.g. a full run's).
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat

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
        from sunfish_lib.runs import run_notebooks, workbook_notebooks

        nbs = workbook_notebooks()
        _RUN["run"] = run_notebooks(nbs, {n.name: {"smoke": True} for n in nbs}, name="workbook",
                                    runs_parent=tmp_parent)
    return _RUN["run"]


def read(path: Path):
    return nbformat.read(str(path), as_version=4)
