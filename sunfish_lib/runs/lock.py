"""One writer per run folder: an exclusive lock held for the run's life.

`RunLock(folder, "training").acquire()` takes `fcntl.flock(LOCK_EX | LOCK_NB)` on `<folder>/.lock`
before anything else is written there, and records in that file who holds it (host, pid, the
pid's creation time, start time, what runs). The kernel drops a flock when its process ends,
however it ends, so a killed run never blocks the next one.

- A second writer is refused in one line naming the holder (`sunfish train`, `sunfish run` and
  `workbook --resume` alike; a notebook's `launch` checks before it writes a file).
- A record whose holder ended without releasing it (killed) is taken over, and the takeover is
  logged. Whether that holder still runs is the registry's rule (`registry.process_alive`: same
  pid and creation time on this host); a live holder on this host refuses even where the
  filesystem grants the flock (some network filesystems do not share locks).
- `release()` marks the record released, so the next run takes over silently.

Nothing here imports torch.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

from sunfish_lib.errors import SunfishError
from sunfish_lib.runs.registry import process_alive, process_identity

LOCK_FILE = ".lock"
log = logging.getLogger(__name__)


class RunLock:
    """The writer's lock on one run folder (a context manager; `acquire`/`release` by hand too)."""

    def __init__(self, folder: str | Path, what: str = "training"):
        self.folder, self.what = Path(folder), what
        self.path = self.folder / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise SunfishError(f"run folder {self.folder} is not writable ({e.strerror}); "
                               "pick another --run-dir or free space") from None
        try:
            _flock(fd, self.folder)
            previous = _read(fd)
            self._check_record(previous)
            me = {**process_identity(), "what": self.what, "started": _now(), "command": " ".join(sys.argv)[:300]}
            _write(fd, me)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def _check_record(self, previous: dict) -> None:
        """Refuse a live holder the flock did not stop; log the takeover of a dead one."""
        if not previous or previous.get("released") or previous.get("pid") == os.getpid():
            return
        if _live_here(previous):
            raise SunfishError(refusal(self.folder, previous))
        log.warning("%s: took over the lock of %s (pid %s on %s, started %s), which ended without releasing it",
                    self.folder, previous.get("what", "a run"), previous.get("pid"), previous.get("hostname"),
                    previous.get("started"))

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            record = _read(self._fd)
            _write(self._fd, {**record, "released": _now()})
        except OSError:
            pass  # the flock goes with the descriptor; a stale record is only taken over later
        finally:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def check_unlocked(folder: str | Path) -> None:
    """Raise the one-line refusal when a writer holds `folder` (writes nothing)."""
    path = Path(folder) / LOCK_FILE
    if not path.is_file():
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            if holder.get("pid") == os.getpid():
                return  # this process holds it
            raise SunfishError(refusal(Path(folder), holder)) from None
        except OSError:
            return  # no locks on this filesystem: the writer's own acquire decides
        record = _read(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
    if record and not record.get("released") and record.get("pid") != os.getpid() and _live_here(record):
        raise SunfishError(refusal(Path(folder), record))


def _live_here(record: dict) -> bool:
    """The recorded holder runs on this host (the registry's rule: pid and its creation time)."""
    return record.get("hostname") == process_identity()["hostname"] and \
        process_alive(record.get("pid"), record.get("pid_created"))


def refusal(folder: Path, holder: dict) -> str:
    pid = holder.get("pid", "?")
    return (f"run folder {folder} is in use by {holder.get('what', 'another run')} (pid {pid} on "
            f"{holder.get('hostname', '?')}, since {holder.get('started', '?')}); one writer per run folder: "
            f"wait for it to end, stop it (`kill -INT {pid}` saves a checkpoint first), or pick another folder")


def _flock(fd: int, folder: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SunfishError(refusal(folder, _read(fd))) from None
    except OSError as e:
        if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        log.warning("%s: this filesystem has no file locks (%s); the lock record alone guards the folder",
                    folder, e.strerror)


def _read(fd: int) -> dict:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        obj = json.loads(os.read(fd, 1 << 16) or b"{}")
    except (OSError, ValueError):
        return {}
    return obj if isinstance(obj, dict) else {}


def _write(fd: int, record: dict) -> None:
    data = (json.dumps(record, sort_keys=True) + "\n").encode()
    os.lseek(fd, 0, os.SEEK_SET)
    os.ftruncate(fd, 0)
    os.write(fd, data)
    os.fsync(fd)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
