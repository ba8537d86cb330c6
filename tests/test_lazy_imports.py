"""Imports sit at the top of each module (README, "Where things live"); one inside a function names its reason.

The reason is a comment in one form, `# lazy: <why>`, on the import's own line or in the comment
block directly above it (one comment may cover a run of consecutive imports). A reason is one of:
a package that a supported install lacks (the GPU image has no `datasets`, `papermill` or `nbformat`;
`wandb` is not a dependency), a measured import time on a path that must stay light (the figure
in the comment; `test_modules_with_lazy_imports_stay_light` checks the promise), or a contract a
test checks (the data package imports with torch alone: tests/test_data_imports.py).
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

TAG = re.compile(r"#\s*lazy:\s*\S.{9,}")  # `# lazy:` and a reason of at least ten characters

EXEMPT: dict[str, str] = {}
"""Paths the check skips, each with its reason (none today)."""


def _bodies(node: ast.AST):
    """Every statement list directly inside `node` (a body, an else, a finally; except and case clauses are
    nodes of their own)."""
    for name in ("body", "orelse", "finalbody"):
        stmts = getattr(node, name, None)
        if isinstance(stmts, list) and stmts and isinstance(stmts[0], ast.stmt):
            yield stmts


def _comment_block_above(lines: list[str], lineno: int) -> list[str]:
    """The comment lines directly above line `lineno` (1-based), nearest first."""
    out, i = [], lineno - 2
    while i >= 0 and lines[i].lstrip().startswith("#"):
        out.append(lines[i])
        i -= 1
    return out


def _function_imports(tree: ast.Module):
    """(import statement, first import of its run of consecutive imports) for every import inside a function."""
    def visit(node: ast.AST, in_function: bool):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            in_function = True
        for stmts in _bodies(node):
            first = None
            for stmt in stmts:
                if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                    first = first or stmt
                    if in_function:
                        yield stmt, first
                else:
                    first = None
        for child in ast.iter_child_nodes(node):
            yield from visit(child, in_function)

    yield from visit(tree, False)


def untagged_imports(path: Path) -> tuple[list[str], int]:
    """(`file:line: import` for each import inside a function without a `# lazy:` reason, count of tagged ones)."""
    text = path.read_text()
    lines = text.splitlines()
    untagged, tagged = [], 0
    for stmt, first in _function_imports(ast.parse(text)):
        own = lines[stmt.lineno - 1 : stmt.end_lineno]
        above = _comment_block_above(lines, first.lineno) + lines[first.lineno - 1 : stmt.lineno - 1]
        if any(TAG.search(line) for line in own + above):
            tagged += 1
        else:
            where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
            untagged.append(f"{where}:{stmt.lineno}: {lines[stmt.lineno - 1].strip()}")
    return untagged, tagged


def _exempt(rel: str) -> bool:
    return any(rel == e or (e.endswith("/") and rel.startswith(e)) for e in EXEMPT)


def test_every_import_inside_a_function_names_its_reason():
    modules = sorted((ROOT / "sunfish_lib").rglob("*.py"))
    assert len(modules) > 90
    untagged, tagged = [], 0
    for path in modules:
        if _exempt(path.relative_to(ROOT).as_posix()):
            continue
        bad, ok = untagged_imports(path)
        untagged += bad
        tagged += ok
    assert untagged == [], "move these to the module top, or name the reason: `# lazy: <why>`\n" + "\n".join(untagged)
    assert tagged >= 10  # the walk does reach the lazy imports that are there


def test_the_check_finds_untagged_imports_and_accepts_tagged_ones(tmp_path):
    path = tmp_path / "m.py"
    path.write_text(
        "import os\n"
        "try:\n    import numpy\nexcept ImportError:\n    numpy = None\n"  # module level: fine
        "def f():\n    import json\n    return json\n"  # untagged: line 7
        "class C:\n    def g(self):\n        if True:\n"
        "            from pathlib import Path\n        return Path\n"  # a method, in a branch: line 12
        "def h():\n    try:\n        pass\n    except Exception:\n        import sys\n"  # in a handler: line 18
        "def t():\n    # lazy: numpy costs 0.1 s and this path must stay light\n    import math\n    import cmath\n"
        "    x = 1\n    import re\n"  # a statement between: the comment above no longer covers it (line 24)
        "def u():\n    import heapq  # lazy: heapq is optional on this made-up install\n"
        "def v():\n    import bisect  # lazy:\n"  # a tag without a reason (line 28)
    )
    untagged, tagged = untagged_imports(path)
    assert [u.split(":")[1] for u in untagged] == ["7", "12", "18", "24", "28"]
    assert tagged == 3


def test_exempt_paths_exist():
    """An exemption names a real file or folder (so one left behind after a move is noticed)."""
    for rel in EXEMPT:
        assert (ROOT / rel).exists(), rel


@pytest.mark.parametrize("modules, absent", [
    # torch-free: `sunfish --help`/`runs`/`estimate` and the notebooks' recipes and tables (the `# lazy:` reasons)
    (["check", "sizing.estimate", "sizing.counts", "notebook.runner", "notebook.params", "runs.registry", "hf.hub",
      "notebook.workbook"],
     ["torch", "pytorch_lightning", "transformers", "huggingface_hub", "papermill", "nbformat", "datasets"]),
    # sampling from an export: no DCP, no transformers (a Hugging Face judge or parent imports it when used)
    (["io.export", "sampling.session", "eval.quality", "convert"],
     ["torch.distributed.checkpoint", "transformers", "huggingface_hub", "pytorch_lightning", "datasets"]),
])
def test_modules_with_lazy_imports_stay_light(modules, absent):
    """What the `# lazy:` comments promise: importing these modules leaves the heavy or optional packages out."""
    code = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module('sunfish_lib.' + m)\n"
            f"print(sorted(m for m in {absent!r} if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split("\n")[-2] == "[]"
