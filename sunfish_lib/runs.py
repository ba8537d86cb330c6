"""Run folders and headless notebook execution (papermill).

A run folder `runs/<YYYYmmdd-HHMMSS>-<name>/` holds everything needed to see what
ran and rebuild it:

    <notebook>.ipynb     executed copy (with the traceback if a cell failed)
    params.json          the parameters injected, per notebook
    run.json             git commit (and whether the tree was dirty), command, start/end, status, pid/host
    pip-freeze.txt       installed packages, `name==version` per line
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import time
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

from sunfish_lib.errors import SunfishError
from sunfish_lib.paths import repo_root, runs_dir
from sunfish_lib.registry import process_identity, write_json as _write_json


class NotebookFailed(Exception):
    """A notebook cell raised; the executed copy with the traceback is at `.output`."""

    def __init__(self, notebook: Path, output: Path, reason: str):
        self.notebook, self.output, self.reason = notebook, output, reason
        super().__init__(f"{notebook.name} failed: {reason}; executed copy with the traceback: {output}")


def parse_param_value(text: str) -> Any:
    """`-p NAME VALUE` value: a Python literal (1, 0.5, True, None, [48, 20], 'x') or else a plain string."""
    try:
        return ast.literal_eval(text)
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

    nb = nbformat.read(str(path), as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise SunfishError(f"{path} has {len(cells)} cells tagged 'parameters'; it needs exactly one")
    params: dict[str, Any] = {}
    for node in ast.parse(cells[0].source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            params[node.targets[0].id] = ast.literal_eval(node.value)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            params[node.target.id] = ast.literal_eval(node.value)
    return params


def new_run_dir(name: str, parent: Path | None = None) -> Path:
    """Create and return a fresh `runs/<timestamp>-<name>/` (a suffix keeps it unique)."""
    parent = Path(parent) if parent is not None else runs_dir()
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SunfishError(f"cannot create the runs folder {parent} ({e.strerror}); pass --runs-dir to a writable place") from None
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        path = parent / (f"{stamp}-{name}" if i == 0 else f"{stamp}-{name}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
        except OSError as e:
            raise SunfishError(f"cannot create run folder {path} ({e.strerror}); check permissions and free space") from None
    raise SunfishError(f"could not find a free run folder name under {parent}")


def git_info(cwd: Path | None = None) -> dict[str, Any]:
    """Commit hash and dirty flag of the checkout (None when not a git checkout)."""
    cwd = cwd or repo_root()

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def pip_freeze() -> str:
    """Installed distributions as `name==version` lines (what `pip freeze` lists, without spawning pip)."""
    dists = {(d.metadata["Name"] or "?"): d.version for d in metadata.distributions()}
    return "".join(f"{n}=={v}\n" for n, v in sorted(dists.items(), key=lambda kv: kv[0].lower()))


def record_environment(run_dir: Path, command: list[str] | None = None) -> dict[str, Any]:
    """Write run.json (git, command, python) and pip-freeze.txt into the run folder."""
    info = {
        **process_identity(),  # pid, pid_created, hostname: `sunfish runs` tells a killed run from a live one
        "git": git_info(),
        "command": command if command is not None else sys.argv,
        "python": sys.version.split()[0],
        "started": datetime.now().isoformat(timespec="seconds"),
        "status": "running",
        "notebooks": [],
    }
    (run_dir / "pip-freeze.txt").write_text(pip_freeze())
    _write_json(run_dir / "run.json", info)
    return info


def _check_params(notebook: Path, params: Mapping[str, Any]) -> dict[str, Any]:
    declared = notebook_parameters(notebook)
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise SunfishError(
            f"{notebook.name} has no parameter {unknown[0]!r}; its parameters are: {', '.join(declared) or '(none)'}"
        )
    return declared


def execute_notebook(
    notebook: str | Path, run_dir: Path, params: Mapping[str, Any] | None = None, *, log_output: bool = False
) -> Path:
    """Execute `notebook` with papermill into `run_dir`; raise NotebookFailed if a cell fails.

    When the notebook declares a `run_dir` parameter and none is given, it receives this
    run folder, so its outputs land next to the executed copy.
    """
    import papermill as pm

    nb_path = Path(notebook)
    if not nb_path.is_file():
        raise SunfishError(f"notebook {nb_path} does not exist; see notebooks/ for the workbook")
    params = dict(params or {})
    declared = _check_params(nb_path, params)
    if "run_dir" in declared and "run_dir" not in params:
        params["run_dir"] = str(run_dir)
    out = run_dir / nb_path.name
    all_params = _read_json(run_dir / "params.json")
    all_params[nb_path.name] = params
    _write_json(run_dir / "params.json", all_params)
    try:
        pm.execute_notebook(
            str(nb_path), str(out), parameters=params, kernel_name="python3",
            cwd=str(nb_path.resolve().parent), log_output=log_output, progress_bar=False,
        )
    except pm.PapermillExecutionError as e:
        raise NotebookFailed(nb_path, out, f"cell {e.exec_count}: {e.ename}: {e.evalue}") from None
    return out


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def run_notebooks(
    notebooks: list[str | Path],
    params: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    name: str | None = None,
    runs_parent: Path | None = None,
    log_output: bool = False,
) -> Path:
    """Execute notebooks in order into one fresh run folder; return it.

    `params` maps a notebook's file name to its parameters. On the first failing
    notebook, run.json records status 'failed' and NotebookFailed propagates.
    """
    paths = [Path(n) for n in notebooks]
    for p in paths:
        if not p.is_file():
            raise SunfishError(f"notebook {p} does not exist; see notebooks/ for the workbook")
    run_dir = new_run_dir(name or (paths[0].stem if len(paths) == 1 else "workbook"), runs_parent)
    info = record_environment(run_dir)
    params = params or {}
    t0 = time.perf_counter()
    try:
        for p in paths:
            t1 = time.perf_counter()
            execute_notebook(p, run_dir, params.get(p.name, {}), log_output=log_output)
            info["notebooks"].append({"notebook": p.name, "seconds": round(time.perf_counter() - t1, 2), "status": "ok"})
            _write_json(run_dir / "run.json", info)
    except NotebookFailed as e:
        info["notebooks"].append({"notebook": e.notebook.name, "status": "failed", "reason": e.reason})
        info.update(status="failed", ended=datetime.now().isoformat(timespec="seconds"))
        _write_json(run_dir / "run.json", info)
        raise
    info.update(status="finished", ended=datetime.now().isoformat(timespec="seconds"),
                seconds=round(time.perf_counter() - t0, 2))
    _write_json(run_dir / "run.json", info)
    return run_dir


def workbook_notebooks(folder: Path | None = None) -> list[Path]:
    """The numbered notebooks (`NN_*.ipynb`) in order."""
    folder = Path(folder) if folder is not None else repo_root() / "notebooks"
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))
