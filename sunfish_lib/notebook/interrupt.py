"""SIGINT or SIGTERM to `sunfish run` / `sunfish workbook`: stop the notebook the way Jupyter does.

`KernelInterrupt` (a context manager around the notebooks' execution) answers either signal by
interrupting the kernel as Jupyter's interrupt button does: SIGINT to the kernel's process group
(jupyter_client starts each kernel in its own session). The running cell stops through its own
path: a cell following a training subprocess stops it with a checkpoint (train/launch.py
`follow`). `check`, run by papermill before each cell, keeps further cells from starting. The
caller then records the run as interrupted, and `sunfish workbook --resume RUN` continues it.

Without a handler, SIGTERM would end the driver at once and papermill's cleanup would shut the
kernel down, leaving a training subprocess running with nobody to report it.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

import psutil

from sunfish_lib.errors import Interrupted


class StopRequested(Exception):
    """Raised by `check` before a cell starts once a signal came in."""


class KernelInterrupt:
    """Turns SIGINT/SIGTERM into a kernel interrupt for the duration of a `with` block."""

    def __init__(self):
        self.signum = 0
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "KernelInterrupt":
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._previous = {}

    def _handle(self, signum, frame) -> None:
        self.signum = self.signum or signum
        for kernel in kernels():
            try:
                os.killpg(os.getpgid(kernel.pid), signal.SIGINT)
            except (ProcessLookupError, PermissionError):
                pass  # ended meanwhile

    def check(self, **_) -> None:
        """papermill's (nbclient's) `on_cell_execute` hook: no new cell after a signal."""
        if self.signum:
            raise StopRequested(signal.Signals(self.signum).name)

    def interrupted(self, run_dir: Path, notebook: str) -> Interrupted:
        name = signal.Signals(self.signum).name
        return Interrupted(f"{name}: notebook run stopped in {notebook} (recorded as interrupted in "
                           f"{Path(run_dir) / 'run.json'}); resume with: sunfish workbook --resume {run_dir}",
                           self.signum)


def kernels() -> list[psutil.Process]:
    """This process's Jupyter kernels (papermill starts them as direct children)."""
    found = []
    for child in psutil.Process().children():
        try:
            if any("ipykernel" in part for part in child.cmdline()):
                found.append(child)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found
