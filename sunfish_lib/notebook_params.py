"""Notebook parameters: read the `parameters` cell, check what `sunfish run -p NAME VALUE` sets.

Everything here runs before a kernel starts, so a typo costs milliseconds, not a kernel
start and a failed notebook:

- names: only the names the `parameters` cell declares;
- types: a value must have the type of the declared default (an int where the default
  is a float is fine; anything goes where the default is None);
- values, for the workbook's own notebooks (`notebooks/NN_*.ipynb`): names that map onto
  config fields or choices (preset, objective, strategy, steps, fractions, overrides,
  checkpoint paths) are checked the way the config checks them; the sampling notebooks'
  `sampling` dict is checked against SampleConfig's fields and rules
  (`sampling.settings.check_settings`).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Mapping

from sunfish_lib.config import Config, NOISE_SCHEDULES, OBJECTIVES, PRECISIONS, PRESETS, ROUNDINGS, STRATEGIES
from sunfish_lib.errors import SunfishError
from sunfish_lib.paths import repo_root
from sunfish_lib.sampling.settings import check_settings

_POSITIVE = {"max_steps", "seq_len", "batch_size", "bpe_vocab_size", "num_timesteps", "n_batches", "mask_length",
             "steps", "ar_steps", "train_steps", "embed_dim", "recovery_points", "recovery_tokens", "val_batches",
             "t_samples", "devices", "lr", "poll_seconds", "threshold", "gpus", "seq_lens", "lr_ratios",
             "num_samples", "sample_length", "sample_steps"}
"""Numbers (or lists of numbers) that must be > 0."""
_NON_NEGATIVE = {"max_docs", "num_workers", "seed", "row"}
_FRACTIONS = {"random_length_fraction", "noise_t", "loss_t"}
"""Numbers (or lists of numbers) in [0, 1]."""
_PATHS = {"checkpoint", "other_checkpoint", "runs"}
"""Paths (or lists of paths) that must exist when given (relative ones from the notebook's folder, the kernel's working directory)."""


def _choices() -> dict[str, tuple]:
    return {"preset": tuple(PRESETS), "objective": OBJECTIVES, "strategy": STRATEGIES, "precision": PRECISIONS,
            "mode": ("uncond", "infill"), "rounding": ROUNDINGS, "schedules": NOISE_SCHEDULES,
            "hf_families": ("gpt2", "llama", "qwen2", "mistral")}


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


def notebook_parameters(path: Path) -> dict[str, Any]:
    """Name -> default value of the notebook's `parameters` cell (literals only)."""
    import nbformat

    try:
        nb = nbformat.read(str(path), as_version=4)
    except Exception as e:  # nbformat raises json, validation and reader errors of several kinds
        raise SunfishError(f"{path} cannot be read as a notebook ({type(e).__name__}: {str(e)[:120]})") from None
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise SunfishError(f"{path} has {len(cells)} cells tagged 'parameters'; it needs exactly one")
    params: dict[str, Any] = {}
    try:
        for node in ast.parse(cells[0].source).body:
            if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                params[node.targets[0].id] = ast.literal_eval(node.value)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
                params[node.target.id] = ast.literal_eval(node.value)
    except (ValueError, SyntaxError) as e:
        raise SunfishError(f"{path}: the parameters cell must hold literals only ({type(e).__name__}: {e})") from None
    return params


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


def _check_value(nb: Path, name: str, value: Any) -> None:
    """Range, choice and path checks of the workbook's parameters (one line naming the parameter)."""
    where = f"{nb.name}: parameter {name}={value!r}"
    allowed = _choices().get(name)
    if allowed is not None:
        bad = [v for v in _items(value) if v not in allowed]
        if bad:
            raise SunfishError(f"{where}: {bad[0]!r} is not allowed; choose one of {', '.join(allowed)}")
    numbers = [v for v in _items(value) if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if name in _POSITIVE and any(v <= 0 for v in numbers):
        raise SunfishError(f"{where} must be > 0")
    if name in _NON_NEGATIVE and any(v < 0 for v in numbers):
        raise SunfishError(f"{where} must be >= 0")
    if name in _FRACTIONS and any(not 0 <= v <= 1 for v in numbers):
        raise SunfishError(f"{where} must be in [0, 1]")
    not_paths = [p for p in _items(value) if name in _PATHS and p is not None and not isinstance(p, str)]
    if not_paths:
        raise SunfishError(f"{where}: {not_paths[0]!r} is not a path; give a run folder, an exported model "
                           "folder or a .ckpt, as a string")
    missing = [p for p in _items(value) if name in _PATHS and p is not None and not _exists(nb, p)]
    if missing:
        item = f" {missing[0]!r}:" if isinstance(value, (list, tuple)) else ""
        raise SunfishError(f"{where}:{item} no such file or folder (relative paths start in "
                           f"{nb.resolve().parent}); give a run folder, an exported model folder or a .ckpt")
    if name == "sampling":
        try:
            check_settings(value)
        except SunfishError as e:
            raise SunfishError(f"{nb.name}: parameter sampling: {e}") from None
    if name == "overrides" and value:
        try:
            Config().override(value)  # unknown keys and values of the wrong type
        except SunfishError as e:
            raise SunfishError(f"{nb.name}: parameter overrides: {e}") from None


def _exists(nb: Path, path: str) -> bool:
    p = Path(path).expanduser()
    return (p if p.is_absolute() else nb.resolve().parent / p).exists()


def _is_workbook_notebook(nb: Path) -> bool:
    return nb.resolve().parent == (repo_root() / "notebooks").resolve() and nb.name[:2].isdigit()


def check_params(notebook: Path, params: Mapping[str, Any]) -> dict[str, Any]:
    """Refuse unknown names, values of the wrong type and (workbook notebooks) out-of-range values; return
    the declared defaults."""
    notebook = Path(notebook)
    declared = notebook_parameters(notebook)
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
    if _is_workbook_notebook(notebook):
        for name, value in params.items():
            _check_value(notebook, name, value)
    return declared


def parse_cli_params(notebook: Path, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """`-p NAME VALUE` pairs -> typed parameters, read against the notebook's declared defaults."""
    declared = notebook_parameters(notebook) if Path(notebook).is_file() else {}
    return {name: parse_param_value(text, declared.get(name)) for name, text in pairs}
