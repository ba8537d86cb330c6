"""Writing files so that a reader (or a kill) never sees half of one, and reading run-folder JSON back.

`atomic_write` is the one implementation: write `<tmp>`, fsync, rename over the target (POSIX
rename is atomic), fsync the folder. Checkpoints, exports, trajectories and the run folder's
JSON records all go through it. A write that fails for lack of space (or any OSError) removes
the partial file and becomes a one-line `SunfishError` naming the file, the reason and the
free space; the previous file stays intact.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from sunfish_lib.errors import SunfishError


def atomic_write(path: str | Path, write: Callable[[Path], None], *, tmp: Path | None = None,
                 fsync: bool = True, disk_errors: bool = True) -> Path:
    """Call `write(tmp)` to fill a temporary file, then rename it over `path`; returns `path`.

    tmp: the temporary file (default `<path>.tmp`, next to `path`). fsync: flush the file and the
    folder to disk (checkpoints, exports); off for small records rewritten often. disk_errors: an
    OSError behind the failure becomes the one-line SunfishError of `write_failed`; otherwise it is
    raised as is. Any failure or signal removes tmp and leaves `path` as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tmp) if tmp is not None else path.with_name(path.name + ".tmp")
    try:
        write(tmp)
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
    except Exception as e:  # torch.save reports a failed file write as a RuntimeError raised from it
        err = _disk_error(e) if disk_errors else None
        if err is None:
            tmp.unlink(missing_ok=True)
            raise
        raise write_failed(path, tmp, err) from None
    except BaseException:  # an aborting signal (train/interrupt.py): path keeps the previous file
        tmp.unlink(missing_ok=True)
        raise
    try:
        os.replace(tmp, path)
    except BaseException:  # e.g. path is a folder: tmp is never left behind
        tmp.unlink(missing_ok=True)
        raise
    if fsync:
        fsync_dir(path.parent)
    return path


def fsync_dir(folder: str | Path) -> None:
    """fsync a folder, so a rename inside it survives a power loss."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _disk_error(exc: BaseException) -> OSError | None:
    """The OSError behind a failed write; safetensors (Rust) reports a full disk only in its message."""
    err = os_error_of(exc)
    if err is None and "No space left" in str(exc):
        err = OSError(errno.ENOSPC, str(exc))
    return err


def read_json(path: Path) -> dict:
    """A JSON object from `path`, or {} when it is missing or unreadable (a registry never crashes on one folder)."""
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return obj if isinstance(obj, dict) else {}


def write_json(path: Path, obj: Any) -> None:
    """Write atomically: a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    text = json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text), tmp=path.with_name(f".{path.name}.{os.getpid()}.tmp"),
                 fsync=False, disk_errors=False)


def human_bytes(n: int) -> str:
    """'12.3 MB'."""
    value, unit = float(n), "B"
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            break
        value /= 1000
    return f"{value:.1f} {unit}"


def fmt_bytes(n: int) -> str:
    """'12,345,678 bytes (12.3 MB)': exact for tests and scripts, readable for people."""
    return f"{n:,} bytes ({human_bytes(n)})"


def os_error_of(exc: BaseException) -> OSError | None:
    """The OSError behind `exc` (torch.save reports a failed write as a RuntimeError raised from it)."""
    while exc is not None:
        if isinstance(exc, OSError):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def write_failed(path: Path, tmp: Path, err: OSError) -> SunfishError:
    """Remove the partial `tmp`; the one-line error naming the file, the reason and the free space."""
    tmp.unlink(missing_ok=True)
    try:
        free = fmt_bytes(shutil.disk_usage(path.parent).free)
    except OSError:
        free = "unknown"
    reason = os.strerror(err.errno) if err.errno else str(err)
    hint = "free space, then resume with --resume" if err.errno in (errno.ENOSPC, errno.EDQUOT) \
        else "check the folder, then resume with --resume"
    kept = f"the previous {path.name} is intact" if path.exists() else f"no {path.name} was written"
    return SunfishError(f"could not write {path}: {reason} ({free} free in {path.parent}); {kept}; {hint}")
