"""Run folders and headless notebook execution (papermill).

A run folder `runs/<YYYYmmdd-HHMMSS>-<name>/` holds everything needed to see what
ran and rebuild it:

    <notebook>.ipynb     executed copy (with the traceback if a cell failed)
    params.json          the parameters injected, per notebook
    run.json             git commit (and whether the tree was dirty), command, start/end, status, pid/host
    pip-freeze.txt       installed packages, `name==version` per line
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping

from sunfish_lib.errors import SunfishError, is_user_error_name
from sunfish_lib.io.files import write_json as _write_json
from sunfish_lib.notebook.interrupt import KernelInterrupt
from sunfish_lib.notebook.params import check_params
from sunfish_lib.runs.paths import new_run_dir, repo_root
from sunfish_lib.runs.registry import process_identity, read_notebook_run
from sunfish_lib.runs.lock import RunLock
from sunfish_lib.runs.progress import TrainingWatch, notebook_line


class NotebookFailed(Exception):
    """A notebook cell raised; the executed copy with the traceback is at `.output`.

    `user_error` is True when the cell raised a SunfishError (a mistake in the input, told
    in one line), False for anything else (a bug, or a failed check such as an assert).
    """

    def __init__(self, notebook: Path, output: Path, reason: str, *, user_error: bool = False, evalue: str = ""):
        self.notebook, self.output, self.reason, self.user_error, self.evalue = notebook, output, reason, user_error, evalue
        super().__init__(f"{notebook.name} failed: {reason}; executed copy with the traceback: {output}")


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


class _RulesAreNotTypes(logging.Filter):
    """Drops papermill's two warnings about annotated parameters.

    papermill reads a parameters cell with a regex that takes an annotation for a type name, so a declared
    rule (`max_steps: "> 0" = 1500`, `seed: ">= 0" = 0`; see notebook_params) makes it warn "Unable to parse
    line" and "Passed unknown parameter". `check_params` has already checked every name and value before the
    kernel starts; those warnings would only be noise on stderr."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(("Unable to parse line", "Passed unknown parameter"))


_RULES_ARE_NOT_TYPES = _RulesAreNotTypes()

KERNEL_QUIET = ["--IPKernelApp.log_level=ERROR"]
"""Kernel arguments: ipykernel's start-up warnings ("Kernel is running over TCP without encryption", once per
notebook) stay off the console; its errors still reach it."""


def execute_notebook(
    notebook: str | Path, run_dir: Path, params: Mapping[str, Any] | None = None, *, log_output: bool = False,
    on_cell_execute=None,
) -> Path:
    """Execute `notebook` with papermill into `run_dir`; raise NotebookFailed if a cell fails.

    When the notebook declares a `run_dir` parameter and none is given, it receives this
    run folder, so its outputs land next to the executed copy. `on_cell_execute(cell=, cell_index=)`
    runs before each cell (nbclient's hook).
    """
    import papermill as pm  # lazy: optional (the GPU image lacks it), and 1.9 s to import

    for name in ("papermill", "papermill.translators"):  # the loggers of papermill's execute and inspection
        logging.getLogger(name).addFilter(_RULES_ARE_NOT_TYPES)  # the same object: added once
    nb_path = Path(notebook)
    params = _resolved_params(nb_path, run_dir, params)
    out = run_dir / nb_path.name
    all_params = _read_json(run_dir / "params.json")
    all_params[nb_path.name] = params
    _write_json(run_dir / "params.json", all_params)
    try:
        pm.execute_notebook(
            str(nb_path), str(out), parameters=params, kernel_name="python3",
            cwd=str(nb_path.resolve().parent), log_output=log_output, progress_bar=False,
            extra_arguments=KERNEL_QUIET,
            **({"on_cell_execute": on_cell_execute} if on_cell_execute else {}),
        )
    except pm.PapermillExecutionError as e:
        raise NotebookFailed(nb_path, out, f"cell {e.exec_count}: {e.ename}: {e.evalue}",
                             user_error=is_user_error_name(e.ename), evalue=e.evalue) from None
    finally:
        _static_outputs(out)
    return out


def _static_outputs(path: Path) -> None:
    """Rewrite an executed copy without widget views (`report.static_copy`): their static twins stay."""
    import nbformat  # lazy: it comes with papermill, which is optional (the GPU image lacks both)

    from sunfish_lib.notebook.report import WIDGET_VIEW, static_copy  # imports nbformat at its top

    try:
        nb = nbformat.read(str(path), as_version=4)
    except (OSError, ValueError):  # not written (papermill failed before the first cell) or cut: left as it is
        return
    if any(WIDGET_VIEW in o.get("data", {}) for c in nb.cells for o in c.get("outputs", [])):
        nbformat.write(static_copy(nb), str(path))


def _resolved_params(nb_path: Path, run_dir: Path, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """The parameters checked against the notebook's `parameters` cell, with `run_dir` filled in."""
    if not nb_path.is_file():
        raise SunfishError(f"notebook {nb_path} does not exist; see notebooks/ for the workbook")
    params = dict(params or {})
    declared = check_params(nb_path, params)
    if "run_dir" in declared and "run_dir" not in params:
        params["run_dir"] = str(run_dir)
    return params


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

    `params` maps a notebook's file name to its parameters; every notebook's parameters are
    checked before the folder is made. On the first failing notebook, run.json records status
    'failed' and NotebookFailed propagates; `resume_run` continues from there.
    """
    paths = [Path(n) for n in notebooks]
    params = params or {}
    for p in paths:  # a typo in any notebook's parameters costs milliseconds, not a kernel start
        _resolved_params(p, Path("."), params.get(p.name, {}))
    run_dir = new_run_dir(name or (paths[0].stem if len(paths) == 1 else "workbook"), runs_parent)
    with RunLock(run_dir, "sunfish run"):
        info = record_environment(run_dir)
        info.update(attempt=1, plan=[{"notebook": p.name, "path": str(p.resolve())} for p in paths])
        _write_json(run_dir / "params.json",
                    {p.name: _resolved_params(p, run_dir, params.get(p.name, {})) for p in paths})
        _execute_plan(run_dir, info, paths, log_output)
    return run_dir


def _execute_plan(run_dir: Path, info: dict, paths: list[Path], log_output: bool) -> list[str]:
    """Execute `paths` in order with their params.json parameters, recording each attempt in run.json.

    An attempt is written as 'running' before its kernel starts, so a killed run leaves a
    record that `resume_run` reads as interrupted. SIGINT/SIGTERM interrupt the kernel
    (notebook_interrupt.py) and record the run as interrupted; `Interrupted` propagates.
    """
    params = _read_json(run_dir / "params.json")
    t0, executed = time.perf_counter(), []
    plan = [e["notebook"] for e in info.get("plan", [])] or [p.name for p in paths]
    with KernelInterrupt() as stop:
        for p in paths:
            index = plan.index(p.name) + 1 if p.name in plan else len(executed) + 1
            records = _start_attempt(run_dir, info, p.name)
            t1 = time.perf_counter()
            print(notebook_line(index, len(plan), p.name, "started", elapsed=t1 - t0), flush=True)
            try:
                with TrainingWatch(run_dir):
                    execute_notebook(p, run_dir, params.get(p.name, {}), log_output=log_output,
                                     on_cell_execute=stop.check)
            except BaseException as e:
                status = "interrupted" if stop.signum else "failed"
                print(notebook_line(index, len(plan), p.name, status, seconds=time.perf_counter() - t1), flush=True)
                if stop.signum:
                    _end_run(run_dir, info, records, "interrupted", signal=signal.Signals(stop.signum).name)
                    raise stop.interrupted(run_dir, p.name) from None
                if isinstance(e, NotebookFailed):
                    _end_run(run_dir, info, records, "failed", reason=e.reason)
                raise
            for record in records:
                record.update(status="ok", seconds=round(time.perf_counter() - t1, 2))
            print(notebook_line(index, len(plan), p.name, "ok", seconds=time.perf_counter() - t1,
                                elapsed=time.perf_counter() - t0), flush=True)
            executed.append(p.name)
            _write_json(run_dir / "run.json", info)
            if stop.signum and p != paths[-1]:
                info.update(status="interrupted", signal=signal.Signals(stop.signum).name,
                            ended=datetime.now().isoformat(timespec="seconds"))
                _write_json(run_dir / "run.json", info)
                raise stop.interrupted(run_dir, p.name)
    info.update(status="finished", ended=datetime.now().isoformat(timespec="seconds"),
                seconds=round(time.perf_counter() - t0, 2))
    _write_json(run_dir / "run.json", info)
    return executed


def _start_attempt(run_dir: Path, info: dict, name: str) -> tuple[dict, dict]:
    """(the notebook's entry, its new attempt), recorded as running in run.json."""
    entry = next((e for e in info["notebooks"] if e["notebook"] == name), None)
    if entry is None:
        entry = {"notebook": name, "attempts": []}
        info["notebooks"].append(entry)
    _keep_previous_attempt(run_dir / name, entry)
    attempt = {"attempt": info["attempt"], "status": "running"}
    entry["attempts"].append(attempt)
    entry["status"] = "running"
    entry.pop("reason", None)
    _write_json(run_dir / "run.json", info)
    return entry, attempt


def _end_run(run_dir: Path, info: dict, records: tuple[dict, dict], status: str, **details) -> None:
    """The notebook's entry and attempt, and the run, end as `status` (failed or interrupted)."""
    for record in records:
        record.update(status=status, **details)
    info.update(status=status, ended=datetime.now().isoformat(timespec="seconds"),
                **{k: v for k, v in details.items() if k == "signal"})
    _write_json(run_dir / "run.json", info)


def _keep_previous_attempt(out: Path, entry: dict) -> None:
    """Rename the executed copy the last attempt left (failed, or interrupted: still 'running') to
    `<stem>.attemptN.ipynb`, so the next attempt does not overwrite it."""
    last = entry["attempts"][-1] if entry["attempts"] else None
    if last is None or last.get("executed") or not out.is_file():
        return
    if last["status"] == "running":
        last["status"] = "interrupted"
    kept = out.with_name(f"{out.stem}.attempt{last['attempt']}{out.suffix}")
    out.replace(kept)
    last["executed"] = kept.name


def resume_run(run_dir: str | Path, *, log_output: bool = False) -> tuple[Path, list[str]]:
    """Re-run a failed or interrupted run folder in place: (run folder, notebooks executed now).

    Notebooks that finished ok (per run.json) are skipped; the failed one and those after it
    run again with their params.json parameters. The failed attempt's executed copy is kept
    as `<notebook>.attemptN.ipynb`, and run.json records every attempt.
    """
    run_dir = Path(run_dir)
    info = _resumable_info(run_dir)
    done = {e["notebook"] for e in info["notebooks"] if e.get("status") == "ok"}
    todo = [Path(e["path"]) for e in info["plan"] if e["notebook"] not in done]
    params = _read_json(run_dir / "params.json")
    for p in todo:
        _resolved_params(p, run_dir, params.get(p.name, {}))  # the notebook may have changed since
    if not todo:
        return run_dir, []
    with RunLock(run_dir, "sunfish workbook --resume"):  # one writer: a second resume is refused here
        info = _resumable_info(run_dir)  # read again under the lock
        info.update(process_identity(), status="running", attempt=info.get("attempt", 1) + 1)
        for key in ("ended", "signal"):
            info.pop(key, None)
        info.setdefault("resumed", []).append({"started": datetime.now().isoformat(timespec="seconds"),
                                               "command": sys.argv, "git": git_info()})
        _write_json(run_dir / "run.json", info)
        return run_dir, _execute_plan(run_dir, info, todo, log_output)


def _resumable_info(run_dir: Path) -> dict:
    """run.json of a run folder that can be resumed, or a one-line SunfishError saying why not."""
    path = run_dir / "run.json"
    if not path.is_file():
        raise SunfishError(f"{run_dir} is not a notebook run folder (no run.json); give a folder made by "
                           "`sunfish run` or `sunfish workbook`")
    try:
        info = json.loads(path.read_text())
    except ValueError as e:
        raise SunfishError(f"{path} is not valid JSON ({e}); it cannot be resumed, start a new run") from None
    if not isinstance(info, dict) or not isinstance(info.get("plan"), list) or "notebooks" not in info:
        raise SunfishError(f"{path} records no notebook plan (made by an older sunfish or by hand); start a new run")
    if read_notebook_run(run_dir).status == "running":  # same rule as `sunfish runs`, files' age included
        raise SunfishError(f"{run_dir} is still running (pid {info.get('pid')} on {info.get('hostname')}); "
                           "wait for it to end or stop it, then resume")
    return info


def workbook_notebooks(folder: Path | None = None) -> list[Path]:
    """The numbered notebooks (`NN_*.ipynb`) in order."""
    folder = Path(folder) if folder is not None else repo_root() / "notebooks"
    return sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))
