"""Every notebook: one literal-only `parameters` cell with `smoke`, committed clean, runs headlessly."""

import ast
import json
import re

import pytest

from sunfish_lib.config import get_config
from sunfish_lib.notebook.params import notebook_rules
from sunfish_lib.notebook.report import closing_text
from sunfish_lib.notebook.runner import run_notebooks, workbook_notebooks
from sunfish_lib.sizing.counts import num_params
from tests.notebook_display import NotebookOutputs
from tests.helpers import NOTEBOOKS

pytestmark = pytest.mark.slow  # runs notebooks through papermill: outside the fast lane (-m 'not slow')

ALL = sorted(NOTEBOOKS.glob("*.ipynb"))


def test_there_are_notebooks():
    names = [p.name for p in ALL]
    assert "00_setup_check.ipynb" in names
    assert [p.name for p in workbook_notebooks()] == sorted(n for n in names if n[:2].isdigit())


@pytest.mark.parametrize("path", ALL, ids=[p.name for p in ALL])
def test_structure(path):
    nb = NotebookOutputs.read(path).nb
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one parameters cell"
    tree = ast.parse(params[0].source)
    names = set()
    for node in tree.body:
        assert isinstance(node, (ast.Assign, ast.AnnAssign)), "parameters cell holds assignments only"
        ast.literal_eval(node.value)  # literals only
        if isinstance(node, ast.AnnAssign):  # `name: "RULE" = default`: the rule is a string (notebook_params)
            assert isinstance(node.annotation, ast.Constant) and isinstance(node.annotation.value, str)
        names.add(node.target.id if isinstance(node, ast.AnnAssign) else node.targets[0].id)
    assert "smoke" in names
    notebook_rules(path)  # every declared rule is one notebook_params knows
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), "opens with a title"
    raw = json.loads(path.read_text())
    for c in raw["cells"]:
        if c["cell_type"] == "code":
            assert c["outputs"] == [] and c["execution_count"] is None, "committed without outputs"


def _code(source: str) -> ast.Module:
    return ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))))


@pytest.mark.parametrize("path", ALL, ids=[p.name for p in ALL])
def test_reads_as_a_story(path):
    """Imports and smoke handling in the code cell after the parameters (smoke otherwise only handed to a library
    helper as `smoke=smoke`), no heading without text, and a last cell saying what the run showed (#29 item 8)."""
    cells = NotebookOutputs.read(path).nb.cells
    params = next(i for i, c in enumerate(cells) if "parameters" in c.metadata.get("tags", []))
    top = next(i for i in range(params + 1, len(cells)) if cells[i].cell_type == "code")
    for i, c in enumerate(cells[1:], 1):
        if c.cell_type == "markdown":
            assert not all(line.startswith("#") for line in c.source.splitlines() if line.strip()), f"cell {i}: heading only"
        elif i > top:
            tree = _code(c.source)
            assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))], f"cell {i} imports"
            passed = {id(k.value) for n in ast.walk(tree) if isinstance(n, ast.Call) for k in n.keywords if k.arg == "smoke"}
            uses = [n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == "smoke" and id(n) not in passed]
            assert not uses, f"cell {i} branches on smoke: move it to cell {top}"
    assert cells[-1].cell_type == "code" and cells[-1].source.startswith("# What this showed")


def _text_outputs(nb) -> str:
    return NotebookOutputs(nb).text


def test_setup_check_notebook_smoke(tmp_path):
    nb_path = NOTEBOOKS / "00_setup_check.ipynb"
    run_dir = run_notebooks([nb_path], {nb_path.name: {"smoke": True}}, runs_parent=tmp_path)
    text = NotebookOutputs.read(run_dir / nb_path.name).text
    assert "all checks passed" in text and "ready" in text
    assert f"{num_params(get_config('tiny')):,} params" in text  # the exact, torch-free count of what check built
    closing = closing_text(run_dir / nb_path.name).splitlines()  # the closing cell counts the table's checks
    rows = re.findall(r"^(ok  |FAIL)  ", NotebookOutputs.read(run_dir / nb_path.name).streams, re.M)
    assert closing[0] == f"- {rows.count('ok  ')} of {len(rows)} installation checks pass" and len(rows) > 10
    assert closing[1].startswith("- tiny model fwd+bwd: ") and closing[1][2:].split(": ", 1)[1] in text
