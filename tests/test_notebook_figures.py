"""Every figure of the executed smoke workbook is an image, not `<Figure size ...>` text (issue 20, item 1)."""

import os

import pytest

from sunfish_lib.notebook.runner import workbook_notebooks
from tests.notebook_display import executed_notebooks, figures_without_images, read, smoke_workbook

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workbook(tmp_path_factory):
    return smoke_workbook(tmp_path_factory.mktemp("workbook"))


def test_every_figure_of_the_smoke_workbook_renders(workbook):
    notebooks = executed_notebooks(workbook)
    assert len(notebooks) == len(workbook_notebooks()) or os.environ.get("SUNFISH_SMOKE_WORKBOOK"), [p.name for p in notebooks]
    bad = {p.name: figures_without_images(read(p)) for p in notebooks}
    assert {k: v for k, v in bad.items() if v} == {}


def test_the_check_fails_on_a_figure_shown_as_text():
    import nbformat

    nb = nbformat.v4.new_notebook()
    shown = nbformat.v4.new_code_cell(outputs=[nbformat.v4.new_output(
        "display_data", {"text/plain": "<Figure size 640x480 with 1 Axes>", "image/png": "iVBOR"})])
    text_only = nbformat.v4.new_code_cell(outputs=[nbformat.v4.new_output(
        "execute_result", {"text/plain": "<Figure size 1600x320 with 4 Axes>"}, execution_count=1)])
    nb.cells = [shown, text_only]
    assert figures_without_images(nb) == ["cell 1: <Figure size 1600x320 with 4 Axes>"]
