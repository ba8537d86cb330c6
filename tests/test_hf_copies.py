"""The remote code's "# Copied from" blocks stay in step with their sources (diffusers' `make fix-copies` check).

A marker line `# Copied from sunfish_lib.module.Name[.method] [with A->B, C->D]` stands right above a `def` or
`class` of sunfish_lib/hf/remote. The check takes the source's text, applies the declared renames (whole names),
and compares the two as code: docstrings and annotations are dropped (the copy cannot import the library's types),
comments and whitespace never count (the AST has none); a class is compared whole, a function by its body (a
method may be copied as a function that takes its attributes as arguments).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import textwrap
from pathlib import Path

import pytest

from sunfish_lib.hf.folder import REMOTE_CODE

MARKER = re.compile(r"^\s*# Copied from (sunfish_lib[\w.]*)(?: with (.+))?$")


def _resolve(dotted: str):
    """sunfish_lib.a.b.Name.attr -> the object (the longest importable module prefix, then attributes)."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(dotted)


def _renamed(text: str, renames: str | None) -> str:
    for pair in (renames or "").split(","):
        if pair.strip():
            old, new = (s.strip() for s in pair.split("->"))
            text = re.sub(rf"(?<![\w]){re.escape(old)}(?!\w)", new, text)
    return text


class _Plain(ast.NodeTransformer):
    """Drops docstrings and annotations: what the copy may legitimately change."""

    def _strip_doc(self, node):
        body = node.body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
        return node

    def visit_FunctionDef(self, node):
        node.returns = None
        for a in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs, node.args.vararg, node.args.kwarg]:
            if a is not None:
                a.annotation = None
        return self.generic_visit(self._strip_doc(node))

    def visit_ClassDef(self, node):
        return self.generic_visit(self._strip_doc(node))


def _code(node) -> str:
    node = _Plain().visit(node)
    if isinstance(node, ast.FunctionDef):
        return "\n".join(ast.dump(stmt) for stmt in node.body)
    return ast.dump(node)


def _defined_after(tree: ast.Module, line: int):
    """The def/class whose first line (decorators included) is `line` (1-based)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            if first == line:
                return node
    return None


def copy_drifts(path: Path, text: str | None = None) -> list[str]:
    """One line per marked block of `path` that no longer matches its source (empty: all in step)."""
    text = path.read_text() if text is None else text
    tree, problems = ast.parse(text), []
    for i, line in enumerate(text.splitlines(), start=1):
        m = MARKER.match(line.rstrip())
        if not m:
            if line.lstrip().startswith("# Copied from"):
                problems.append(f"{path.name}:{i}: a marker must read '# Copied from sunfish_lib.x.Name [with A->B]'")
            continue
        node = _defined_after(tree, i + 1)
        if node is None:
            problems.append(f"{path.name}:{i}: the marker is not right above a def or class")
            continue
        source = textwrap.dedent(inspect.getsource(_resolve(m.group(1))))
        theirs = ast.parse(_renamed(source, m.group(2))).body[0]
        if _code(theirs) != _code(ast.parse(textwrap.dedent(ast.get_source_segment(text, node))).body[0]):
            problems.append(f"{path.name}:{i}: {node.name} differs from {m.group(1)} (with {m.group(2) or 'no renames'})")
    return problems


def markers() -> list[tuple[str, str]]:
    return [(p.name, m.group(1)) for p in sorted(REMOTE_CODE.glob("*.py"))
            for m in map(MARKER.match, p.read_text().splitlines()) if m]


def test_every_copied_block_matches_its_source():
    found = markers()
    sources = {src for _, src in found}
    # the backbone's sublayers and the samplers' step math are marked copies
    assert {"sunfish_lib.model.layers.MLP", "sunfish_lib.model.layers.rope_inv_freq", "sunfish_lib.model.Block.__init__",
            "sunfish_lib.sampling.filters.inverse_cdf", "sunfish_lib.sampling.filters.decide",
            "sunfish_lib.sampling.masked._topk_commit"} <= sources, sorted(sources)
    problems = [p for path in sorted(REMOTE_CODE.glob("*.py")) for p in copy_drifts(path)]
    assert problems == []


@pytest.mark.parametrize("edit", [
    ("inv_freq = 1.0 / (c.rope_theta", "inv_freq = 2.0 / (c.rope_theta"),  # a changed constant
    ("        return inv_freq\n", "        return inv_freq * 1\n"),
    ("        self.drop = nn.Dropout(c.dropout)\n        # Per-block", "        # Per-block"),  # a dropped line
])
def test_a_drifted_copy_is_reported(edit):
    path = REMOTE_CODE / "modeling_sunfish.py"
    text = path.read_text()
    old, new = edit
    assert old in text
    problems = copy_drifts(path, text.replace(old, new, 1))
    assert len(problems) == 1 and "differs from sunfish_lib." in problems[0], problems


def test_comments_docstrings_and_declared_renames_do_not_count():
    path = REMOTE_CODE / "sampling_sunfish.py"
    text = path.read_text()
    edited = text.replace('"""Pure step math', '"""Reworded step math', 1).replace(
        "    logits = logits.float()\n", "    logits = logits.float()  # a new comment\n\n", 1)
    assert edited != text and copy_drifts(path, edited) == []
    undeclared = text.replace(" with SunfishError->ValueError", "", 1)
    assert len(copy_drifts(path, undeclared)) == 1
