"""What a notebook run prints while it runs: one line per notebook as it starts and ends, and, while a
notebook trains, one line per training run (step/total, tokens/s, loss, ETA).

Training runs are found by their `status.json` (train/status.py keeps it current: every `log_every`
steps and at least every 30 s) anywhere under the run folder, so the notebook that launched them
needs no hook: 04's three models, 08's runs and any later notebook's show up the same way.
On a terminal the training lines are a live display (rich); to a file or under CI they are plain
lines, printed every `every` seconds when a run moved.
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from rich.console import Console
from rich.live import Live
from rich.table import Table

from sunfish_lib.io.files import read_json
from sunfish_lib.runs.registry import STATUS_FILE

_LOSS_KEYS = ("train/loss", "train/loss_step", "train/loss_epoch")


def duration(seconds: float) -> str:
    """`42 s`, `4 min 10 s`, `1 h 02 min`: a wait in the units a person reads."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


@dataclass(frozen=True)
class TrainingLine:
    """One training run's progress, as read from its status.json."""

    name: str  # the run folder relative to the watched root
    state: str
    step: int
    max_steps: int
    tokens_per_s: float | None
    loss: float | None
    eta_s: float | None  # seconds left at the rate so far (None before the first step)

    def text(self) -> str:
        parts = [f"step {self.step:,}/{self.max_steps:,}"]
        if self.tokens_per_s:
            parts.append(f"{self.tokens_per_s:,.0f} tok/s")
        if self.loss is not None:
            parts.append(f"loss {self.loss:.3f}")
        if self.state != "running":
            parts.append(self.state)
        elif self.eta_s is not None:
            parts.append(f"ETA {duration(self.eta_s)}")
        return f"  training {self.name}: " + " · ".join(parts)


def training_lines(root: Path, since: float = 0.0) -> list[TrainingLine]:
    """Progress of every training run under `root` whose status.json changed at or after `since` (epoch s)."""
    lines = []
    for path in sorted(Path(root).rglob(STATUS_FILE)):
        try:
            if path.stat().st_mtime < since:
                continue
            info = read_json(path)
        except (OSError, ValueError):  # being replaced this instant, or not ours: the next look reads it
            continue
        if not isinstance(info, dict) or "max_steps" not in info:
            continue
        step, total = int(info.get("step") or 0), int(info.get("max_steps") or 0)
        metrics = info.get("metrics") or {}
        elapsed = float(info.get("elapsed_s") or 0.0)
        eta = elapsed / step * (total - step) if step > 0 and elapsed > 0 else None
        loss = next((float(metrics[k]) for k in _LOSS_KEYS if k in metrics), None)
        name = str(path.parent.relative_to(root)) if path.parent != Path(root) else Path(root).name
        lines.append(TrainingLine(name, str(info.get("state", "?")), step, total,
                                  metrics.get("perf/tokens_per_s"), loss, eta))
    return lines


def _table(lines: list[TrainingLine]) -> Table:
    table = Table(box=None, show_header=True, header_style="bold")
    for col in ("training", "step", "tok/s", "loss", "ETA"):
        table.add_column(col)
    for t in lines:
        table.add_row(t.name, f"{t.step:,}/{t.max_steps:,}", f"{t.tokens_per_s:,.0f}" if t.tokens_per_s else "-",
                      f"{t.loss:.3f}" if t.loss is not None else "-",
                      duration(t.eta_s) if t.state == "running" and t.eta_s is not None else t.state)
    return table


class TrainingWatch:
    """While the block runs, report the training runs under `root` that move (a context manager).

    Plain mode prints a run's line when its step changed since the last print, at most every `every`
    seconds; live mode (a terminal) redraws a table. Reading status files never stops the notebook run.
    """

    def __init__(self, root: Path, *, every: float = 30.0, out: IO[str] | None = None, live: bool | None = None):
        self.root, self.every = Path(root), every
        self.out = out or sys.stdout
        self.live = self.out.isatty() if live is None else live
        self._since = time.time()
        self._stop = threading.Event()
        self._shown: dict[str, int] = {}
        self._thread = threading.Thread(target=self._loop, name="sunfish-training-watch", daemon=True)

    def __enter__(self) -> "TrainingWatch":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def poll(self) -> list[str]:
        """The lines to print now: runs whose step moved (or state changed) since they were last shown."""
        out = []
        for line in training_lines(self.root, self._since):
            key = (line.step, line.state)
            if self._shown.get(line.name) != key:
                self._shown[line.name] = key
                out.append(line.text())
        return out

    def _loop(self) -> None:
        if self.live:
            console = Console(file=self.out)
            with Live(_table([]), console=console, refresh_per_second=1, transient=True) as live:
                while not self._stop.wait(1.0):
                    live.update(_table(training_lines(self.root, self._since)))
            return
        while not self._stop.wait(self.every):
            for text in self.poll():
                print(text, file=self.out, flush=True)


def notebook_line(index: int, total: int, name: str, status: str, *, seconds: float | None = None,
                  elapsed: float | None = None) -> str:
    """`[4/10] 04_train.ipynb started` / `[4/10] 04_train.ipynb ok in 10 min 42 s (elapsed 13 min 05 s)`."""
    text = f"[{index}/{total}] {name} {status}"
    if seconds is not None:
        text += f" in {duration(seconds)}"
    if elapsed is not None:
        text += f" (elapsed {duration(elapsed)})"
    return text
