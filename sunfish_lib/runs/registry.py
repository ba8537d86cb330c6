"""The run registry: every run folder under a root, what state it is in and how far it got.

Two kinds of folder are listed:

- training runs (`config.json` plus `status.json`, `checkpoints/`, `logs/` or `train.log`),
  anywhere under the root, including those inside papermill run folders (notebook 04
  trains into `<run>/04_train`, 08 into `<run>/08_ar_to_diffusion/*`);
- papermill run folders (`run.json`, written by `sunfish run` / `sunfish workbook`).

Status (`STATES`):

- running / finished / failed: as recorded (`status.json` for training, `run.json` for notebooks);
- interrupted: as recorded, a run stopped by SIGINT, SIGTERM or SIGUSR1 after saving
  (`signal` names it; training's `checkpoint_step` is the step it saved, to resume from);
- killed: recorded as running, but the process is gone. On this host: the recorded pid is
  not alive, is a zombie, or is a different process that reused the pid (its creation time
  differs). On another host the pid cannot be checked, so a run counts as killed when its
  record has not been refreshed for `stale_s` seconds (default STALE_S = 10 minutes; a live
  training run refreshes status.json at least every 30 s while steps run, and papermill
  saves the executed notebook every 30 s while a cell runs);
- unknown: a training folder without status.json (written before the registry existed):
  `finished` when it has `export/`, else unknown.

Nothing here imports torch or Lightning.
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

import psutil

from sunfish_lib.errors import SunfishError
from sunfish_lib.io.files import read_json
from sunfish_lib.io.metrics import read_metrics
from sunfish_lib.runs.discovery import has_export
from sunfish_lib.runs.paths import runs_dir

STATUS_FILE = "status.json"
STATES = ("running", "finished", "interrupted", "failed", "killed", "unknown")
STALE_S = 600.0
_NOT_RUNS = {"checkpoints", "logs", "export", "tokenizer", "samples", "tensorboard", "__pycache__"}


def process_identity() -> dict[str, Any]:
    """pid, its creation time and the host name: enough to tell later whether this process still runs."""
    proc = psutil.Process()
    return {"pid": proc.pid, "pid_created": proc.create_time(), "hostname": socket.gethostname()}


def process_alive(pid: int | None, created: float | None = None) -> bool:
    """True when `pid` runs on this host (not a zombie) and, if `created` is given, is that same process."""
    if not pid:
        return False
    try:
        proc = psutil.Process(int(pid))
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return created is None or abs(proc.create_time() - float(created)) < 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False


def _parse_time(text: str | None) -> datetime | None:
    try:
        t = datetime.fromisoformat(text) if text else None
    except (TypeError, ValueError):
        return None
    return t.astimezone(timezone.utc) if t is not None else None  # naive = local time


def infer_state(record: dict, *, now: datetime | None = None, host: str | None = None,
                stale_s: float = STALE_S) -> str:
    """running / finished / failed as recorded, or killed (see the module docstring for the rule)."""
    state = record.get("state") or "unknown"
    if state != "running":
        return state if state in STATES else "unknown"
    host = host or socket.gethostname()
    if record.get("pid") and record.get("hostname") == host:
        return "running" if process_alive(record["pid"], record.get("pid_created")) else "killed"
    updated = _parse_time(record.get("updated"))
    now = now or datetime.now(timezone.utc)
    return "killed" if updated is None or (now - updated).total_seconds() > stale_s else "running"


@dataclass
class RunRecord:
    """One row of `sunfish runs`."""

    path: str
    kind: str  # "train" (a training run folder) or "notebooks" (a papermill run folder)
    status: str  # one of STATES
    objective: str | None = None
    step: int | None = None  # last optimizer step seen (status.json, or the last logged step)
    checkpoint_step: int | None = None  # step of the last checkpoint save
    max_steps: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)  # last train/ and val/ values
    wall_s: float | None = None
    started: str | None = None
    updated: str | None = None
    hostname: str | None = None
    pid: int | None = None
    error: str | None = None
    signal: str | None = None  # interrupted: SIGINT, SIGTERM or SIGUSR1
    notebooks: list[str] = field(default_factory=list)  # papermill: notebooks executed so far
    overfit_batches: int = 0  # > 0: an overfit check on that many fixed batches (03_overfit), not a real run

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_training_run(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(
        (folder / name).exists() for name in (STATUS_FILE, "checkpoints", "logs", "train.log", "export"))


def is_notebook_run(folder: Path) -> bool:
    return (folder / "run.json").is_file()


def discover(roots: Iterable[str | Path]) -> list[Path]:
    """Run folders (training and papermill) at or below each root, sorted by path."""
    found: set[Path] = set()
    for root in roots:
        for here, dirs, _ in os.walk(Path(root)):
            folder = Path(here)
            if is_notebook_run(folder) or is_training_run(folder):
                found.add(folder)
            if is_training_run(folder):
                dirs[:] = []  # a training run holds no further runs
            else:
                dirs[:] = sorted(d for d in dirs if d not in _NOT_RUNS and not d.startswith("."))
    return sorted(found)


def _last_metrics(folder: Path, status: dict) -> tuple[dict[str, float], int | None]:
    try:
        rows = read_metrics(folder)
    except (OSError, ValueError):
        rows = []
    last: dict[str, float] = {}
    for r in rows:
        last.update({k: v for k, v in r.items() if k.startswith(("train/", "val/", "time/"))})
    # Lightning logs each row with the 0-based index of the step just taken: + 1 = steps done
    logged = int(max(r["step"] for r in rows if "step" in r)) + 1 if any("step" in r for r in rows) else None
    if status.get("metrics") and (logged is None or (status.get("step") or 0) >= logged):
        last.update(status["metrics"])  # fresher than metrics.csv, which Lightning flushes every 100 steps
    return last, logged


def read_training_run(folder: Path, *, now: datetime | None = None, stale_s: float = STALE_S) -> RunRecord:
    """The record of one training run folder."""
    status = read_json(folder / STATUS_FILE)
    cfg = read_json(folder / "config.json")
    metrics, logged = _last_metrics(folder, status)
    if status:
        state = infer_state(status, now=now, stale_s=stale_s)
    else:
        state = "finished" if has_export(folder) else "unknown"
    wall = status.get("elapsed_s", metrics.get("time/elapsed_s"))
    return RunRecord(
        path=str(folder), kind="train", status=state,
        objective=status.get("objective") or cfg.get("diffusion", {}).get("objective"),
        step=status.get("step", logged), checkpoint_step=status.get("checkpoint_step"),
        max_steps=cfg.get("train", {}).get("max_steps", status.get("max_steps")),
        metrics=metrics, wall_s=wall, started=status.get("started"), updated=status.get("updated"),
        hostname=status.get("hostname"), pid=status.get("pid"), error=status.get("error"),
        signal=status.get("signal"), overfit_batches=int(status.get("overfit_batches") or 0))


def read_notebook_run(folder: Path, *, now: datetime | None = None, stale_s: float = STALE_S) -> RunRecord:
    """The record of one papermill run folder; `updated` is its newest run.json / executed notebook."""
    info = read_json(folder / "run.json")
    mtimes = [p.stat().st_mtime for p in [folder / "run.json", *folder.glob("*.ipynb")] if p.exists()]
    updated = datetime.fromtimestamp(max(mtimes), timezone.utc).isoformat(timespec="seconds") if mtimes else None
    state = infer_state({**info, "state": info.get("status"), "updated": updated}, now=now, stale_s=stale_s)
    started, ended = _parse_time(info.get("started")), _parse_time(info.get("ended") or updated)
    wall = info.get("seconds") or ((ended - started).total_seconds() if started and ended else None)
    failed = [n.get("reason") for n in info.get("notebooks", []) if n.get("status") == "failed"]
    return RunRecord(path=str(folder), kind="notebooks", status=state, wall_s=wall, started=info.get("started"),
                     updated=updated, hostname=info.get("hostname"), pid=info.get("pid"),
                     error=failed[0] if failed else None, signal=info.get("signal"),
                     notebooks=[n.get("notebook", "?") for n in info.get("notebooks", [])])


def list_runs(roots: Iterable[str | Path] | None = None, *, status: Iterable[str] | None = None,
              stale_s: float = STALE_S) -> list[RunRecord]:
    """Records of every run folder under `roots` (default: the runs folder), optionally only some states."""
    roots = [Path(r).resolve() for r in (roots or [runs_dir()])]
    for r in roots:
        if not r.is_dir():
            raise SunfishError(f"runs root {r} is not a folder; pass a folder that holds run folders (default: runs/)")
    wanted = set(status or STATES)
    bad = sorted(wanted - set(STATES))
    if bad:
        raise SunfishError(f"status {bad[0]!r} is not allowed; choose from {', '.join(STATES)}")
    if stale_s <= 0:
        raise SunfishError(f"stale time {stale_s:g} s must be > 0")
    now = datetime.now(timezone.utc)
    records = [read_training_run(f, now=now, stale_s=stale_s) if is_training_run(f)
               else read_notebook_run(f, now=now, stale_s=stale_s) for f in discover(roots)]
    return [r for r in records if r.status in wanted]


# -- the table ------------------------------------------------------------------------------

def _fmt_duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _fmt_steps(r: RunRecord) -> str:
    if r.kind == "notebooks":
        return f"{len(r.notebooks)} nb"
    text = f"{r.step if r.step is not None else '?'}/{r.max_steps if r.max_steps is not None else '?'}"
    return text + (f" (ckpt {r.checkpoint_step})" if r.checkpoint_step is not None else "")


def _fmt_metric(r: RunRecord, key: str) -> str:
    v = r.metrics.get(key)
    return f"{v:.4f}" if v is not None else "-"


TABLE_COLUMNS = ("status", "objective", "steps", "train/loss", "val/loss", "wall", "path")


def table_rows(records: Iterable[RunRecord], relative_to: Path | None = None) -> list[list[str]]:
    """Cells of the table, one list per record, in TABLE_COLUMNS order (paths relative when possible)."""
    rows = []
    for r in records:
        path = Path(r.path)
        if relative_to is not None and path.is_relative_to(relative_to):
            path = path.relative_to(relative_to)
        objective = r.objective or ("notebooks" if r.kind == "notebooks" else "-")
        note = r.error or (r.signal if r.status == "interrupted" else None)
        rows.append([r.status, objective, _fmt_steps(r), _fmt_metric(r, "train/loss"), _fmt_metric(r, "val/loss"),
                     _fmt_duration(r.wall_s), str(path) + (f"  ({note})" if note else "")])
    return rows


def aligned(rows: list[list[str]]) -> str:
    """Rows of cells as plain text: left-aligned columns, two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def format_table(records: Iterable[RunRecord], relative_to: Path | None = None) -> str:
    """The `sunfish runs` table; a failed run's reason follows its path."""
    return aligned([list(TABLE_COLUMNS)] + table_rows(records, relative_to))
