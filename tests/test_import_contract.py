"""The layer contract (pyproject.toml, [tool.importlinter]) holds, and it catches an upward import.

`lint-imports` (import-linter) reads every import in sunfish_lib/, those inside functions too,
and checks two contracts: one-way layers (README, "Where things live") and no cycles between
sibling modules. These run in the README's test command like any other test.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import ROOT

LINT = Path(sys.executable).parent / "lint-imports"


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(cwd)}  # the copy under test, not the installed checkout
    return subprocess.run([str(LINT), "--no-cache", str(cwd / "pyproject.toml")], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(ROOT / "sunfish_lib", root / "sunfish_lib", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def test_layers_and_no_cycles_hold():
    r = _lint(ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken." in r.stdout


@pytest.mark.parametrize("module, line, arrow", [
    ("config/__init__.py", "from sunfish_lib.cli import main", "sunfish_lib.config is not allowed to import sunfish_lib.cli"),
    ("train/samples.py", "    from sunfish_lib.sampling.session import sample",  # inside a function counts too
     "sunfish_lib.train is not allowed to import sunfish_lib.sampling"),
    ("io/export.py", "from sunfish_lib.train.trainer import train",
     "sunfish_lib.io is not allowed to import sunfish_lib.train"),
])
def test_an_upward_import_breaks_the_contract(tmp_path, module, line, arrow):
    root = _copy(tmp_path)
    path = root / "sunfish_lib" / module
    text = path.read_text()
    if line.startswith(" "):  # into the body of the first function or method
        m = re.search(r"^( *)def [^\n]*:\n", text, re.M)
        text = f"{text[:m.end()]}{m.group(1)}    {line.strip()}  # noqa\n{text[m.end():]}"
    else:
        text += f"\n{line}  # noqa\n"
    path.write_text(text)
    r = _lint(root)
    assert r.returncode == 1 and "BROKEN" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]
    assert arrow in " ".join(r.stdout.split())


def test_a_cycle_breaks_the_contract(tmp_path):
    root = _copy(tmp_path)
    path = root / "sunfish_lib" / "train" / "batches.py"  # trainer imports batches; batches back: a cycle
    path.write_text(path.read_text() + "\nfrom sunfish_lib.train import trainer  # noqa\n")
    r = _lint(root)
    assert r.returncode == 1, r.stdout[-3000:]
    assert "no import cycles between sibling modules (any depth) BROKEN" in " ".join(r.stdout.split())


def test_no_module_over_500_lines():
    """Modules stay one concept each (STYLE.md): none of sunfish_lib/ grows past 500 lines."""
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in (ROOT / "sunfish_lib").rglob("*.py")}
    assert len(sizes) > 90
    assert {p: n for p, n in sizes.items() if n > 500} == {}
