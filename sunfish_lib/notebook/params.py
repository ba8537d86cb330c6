"""Notebook parameters: read the `parameters` cell, check what `sunfish run -p NAME VALUE` sets.

Everything here runs before a kernel starts, so a typo costs milliseconds, not a kernel
start and a failed notebook:

- names: only the names the `parameters` cell declares;
- types: a value must have the type of the declared default (an int where the default
  is a float is fine; anything goes where the default is None);
- values: the rule a parameter declares as its annotation, beside its default, so a renamed
  parameter keeps its check (a parameter without one is type-checked only):

      max_steps: "> 0" = 1500                           # numbers (each item of a list): > N, >= N
      noise_t: "[0, 1]" = [0.05, 0.5]                   # in an interval: [LO, HI], (LO, HI], ...
      checkpoint: "path" = None                         # an existing file or folder (relative: from the notebook)
      mode: "uncond | infill" = "uncond"                # one of these words
      objective: "config:diffusion.objective" = "ar"    # one of the config's allowed values for that key
      preset: "config:preset" = "tiny"                  # a preset name
      overrides: "config" = {}                          # config overrides, checked by Config.override
      sampling: "config:sample" = {}                    # SampleConfig fields, checked by `sampling.settings`

  The config's allowed values come from `validation.CHOICES` (one map, also what the config's own
  checks read). A rule that is none of these is refused in one line.
"""

from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping

from sunfish_lib.config import Config, PRESETS
from sunfish_lib.errors import SunfishError
from sunfish_lib.sampling.settings import check_settings
from sunfish_lib.config.validation import CHOICES

Check = Callable[[Path, str, Any], None]
"""(notebook, parameter name, value) -> None, or a one-line SunfishError naming the parameter."""

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?"
_BOUND = re.compile(rf"^(>=|>)\s*({_NUMBER})$")
_INTERVAL = re.compile(rf"^([\[(])\s*({_NUMBER})\s*,\s*({_NUMBER})\s*([\])])$")
_WORDS = re.compile(r"^[\w.\-]+(?:\s*\|\s*[\w.\-]+)+$")
RULE_FORMS = "'> N', '>= N', '[LO, HI]', 'path', 'A | B | ...', 'config', 'config:sample' or 'config:KEY'"


def parse_param_value(text: str, default: Any = None) -> Any:
    """`-p NAME VALUE` value: a Python literal (1, 0.5, True, None, [48, 20], 'x') or else a plain string.

    Where the declared default is a string, text that is not a string literal (or None) is taken
    as it is: `-p prompt 42` is '42'.
    """
    try:
        value = ast.literal_eval(text)
        return text if isinstance(default, str) and value is not None and not isinstance(value, str) else value
    except (ValueError, SyntaxError):
        low = text.strip().lower()
        if low in ("true", "false"):
            return low == "true"
        if low in ("none", "null"):
            return None
        return text


def _parameters_cell(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """The notebook's `parameters` cell: name -> default (literals only), name -> declared rule text."""
    # lazy: nbformat is optional (the GPU image lacks it) and only notebooks need it
    import nbformat

    try:
        nb = nbformat.read(str(path), as_version=4)
    except Exception as e:  # nbformat raises json, validation and reader errors of several kinds
        raise SunfishError(f"{path} cannot be read as a notebook ({type(e).__name__}: {str(e)[:120]})") from None
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise SunfishError(f"{path} has {len(cells)} cells tagged 'parameters'; it needs exactly one")
    params: dict[str, Any] = {}
    rules: dict[str, str] = {}
    try:
        for node in ast.parse(cells[0].source).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                params[node.targets[0].id] = ast.literal_eval(node.value)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
                params[node.target.id] = ast.literal_eval(node.value)
                note = node.annotation
                rules[node.target.id] = note.value if isinstance(note, ast.Constant) else ast.unparse(note)
    except (ValueError, SyntaxError) as e:
        raise SunfishError(f"{path}: the parameters cell must hold literals only ({type(e).__name__}: {e})") from None
    return params, rules


def notebook_parameters(path: Path) -> dict[str, Any]:
    """Name -> default value of the notebook's `parameters` cell (literals only)."""
    return _parameters_cell(path)[0]


def notebook_rules(path: Path) -> dict[str, Check]:
    """Name -> the check its declared rule stands for (names without a rule are absent)."""
    return _checks(Path(path), _parameters_cell(path)[1])


def _checks(path: Path, texts: Mapping[str, Any]) -> dict[str, Check]:
    """The declared rules parsed; an unknown one is refused in one line naming the notebook and the parameter."""
    checks = {}
    for name, text in texts.items():
        check = parse_rule(text) if isinstance(text, str) else None
        if check is None:
            raise SunfishError(f"{path.name}: parameter {name} declares the rule {text!r}, which is not one; "
                               f"write {RULE_FORMS} (KEY: preset, {', '.join(CHOICES)})")
        checks[name] = check
    return checks


def _kind(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, bool):
        return "a bool (True or False)"
    if isinstance(value, (list, tuple)) and value and len({type(v) for v in value}) == 1:
        return f"a list of {type(value[0]).__name__}"
    return {int: "an int", float: "a number", str: "a string", dict: "a dict", list: "a list"}.get(
        type(value), f"a {type(value).__name__}")


def _type_ok(value: Any, default: Any) -> bool:
    """Does `value` fit the type of the declared default? (int for float; anything for a None default)"""
    if default is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            return False
        homogeneous = default and len({type(v) for v in default}) == 1
        return not homogeneous or all(_type_ok(v, default[0]) for v in value)
    return isinstance(value, type(default))


def _items(value: Any) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _where(nb: Path, name: str, value: Any) -> str:
    return f"{nb.name}: parameter {name}={value!r}"


def _numbers(value: Any) -> list:
    return [v for v in _items(value) if isinstance(v, (int, float)) and not isinstance(v, bool)]


def _one_of(allowed) -> Check:
    def check(nb: Path, name: str, value: Any) -> None:
        bad = [v for v in _items(value) if v not in allowed]
        if bad:
            raise SunfishError(f"{_where(nb, name, value)}: {bad[0]!r} is not allowed; choose one of {', '.join(allowed)}")
    return check


def _in_range(ok: Callable[[float], bool], says: str) -> Check:
    def check(nb: Path, name: str, value: Any) -> None:
        if any(not ok(v) for v in _numbers(value)):
            raise SunfishError(f"{_where(nb, name, value)} must be {says}")
    return check


def _path(nb: Path, name: str, value: Any) -> None:
    """Paths (or lists of paths) that must exist when given (relative ones from the notebook's folder, the kernel's
    working directory)."""
    where = _where(nb, name, value)
    not_paths = [p for p in _items(value) if p is not None and not isinstance(p, str)]
    if not_paths:
        raise SunfishError(f"{where}: {not_paths[0]!r} is not a path; give a run folder, an exported model "
                           "folder or a .ckpt, as a string")
    missing = [p for p in _items(value) if p is not None and not _exists(nb, p)]
    if missing:
        item = f" {missing[0]!r}:" if isinstance(value, (list, tuple)) else ""
        raise SunfishError(f"{where}:{item} no such file or folder (relative paths start in "
                           f"{nb.resolve().parent}); give a run folder, an exported model folder or a .ckpt")


def _config_overrides(nb: Path, name: str, value: Any) -> None:
    if value:
        try:
            Config().override(value)  # unknown keys and values of the wrong type
        except SunfishError as e:
            raise SunfishError(f"{nb.name}: parameter {name}: {e}") from None


def _sample_settings(nb: Path, name: str, value: Any) -> None:
    try:
        check_settings(value)
    except SunfishError as e:
        raise SunfishError(f"{nb.name}: parameter {name}: {e}") from None


@lru_cache(maxsize=None)
def parse_rule(text: str) -> Check | None:
    """The check a declared rule stands for (grammar: the module docstring), or None when it is no rule."""
    text = text.strip()
    if m := _BOUND.match(text):
        op, bound = m[1], float(m[2])
        return _in_range((lambda v: v > bound) if op == ">" else (lambda v: v >= bound), f"{op} {m[2]}")
    if m := _INTERVAL.match(text):
        lo, hi, closed_lo, closed_hi = float(m[2]), float(m[3]), m[1] == "[", m[4] == "]"
        return _in_range(lambda v: (lo <= v if closed_lo else lo < v) and (v <= hi if closed_hi else v < hi),
                         f"in {m[1]}{m[2]}, {m[3]}{m[4]}")
    if _WORDS.match(text):
        return _one_of(tuple(w.strip() for w in text.split("|")))
    named = {"path": _path, "config": _config_overrides, "config:sample": _sample_settings}
    if text in named:
        return named[text]
    key = text.removeprefix("config:")
    if text.startswith("config:") and (key == "preset" or key in CHOICES):
        return _one_of(tuple(PRESETS) if key == "preset" else CHOICES[key])
    return None


def _exists(nb: Path, path: str) -> bool:
    p = Path(path).expanduser()
    return (p if p.is_absolute() else nb.resolve().parent / p).exists()


def check_params(notebook: Path, params: Mapping[str, Any]) -> dict[str, Any]:
    """Refuse unknown names, values of the wrong type and values their declared rule refuses; return
    the declared defaults."""
    notebook = Path(notebook)
    declared, texts = _parameters_cell(notebook)
    rules = _checks(notebook, texts)
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise SunfishError(
            f"{notebook.name} has no parameter {unknown[0]!r}; its parameters are: {', '.join(declared) or '(none)'}"
        )
    for name, value in params.items():
        default = declared[name]
        if not _type_ok(value, default):
            raise SunfishError(f"{notebook.name}: parameter {name}={value!r} is {_kind(value)}, but its default "
                               f"{default!r} is {_kind(default)}; e.g. -p {name} {default!r}")
    for name, value in params.items():
        if name in rules:
            rules[name](notebook, name, value)
    return declared


def parse_cli_params(notebook: Path, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """`-p NAME VALUE` pairs -> typed parameters, read against the notebook's declared defaults."""
    declared = notebook_parameters(notebook) if Path(notebook).is_file() else {}
    return {name: parse_param_value(text, declared.get(name)) for name, text in pairs}
