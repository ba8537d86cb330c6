"""Reading through transient failures: retries with exponential backoff, then a one-line error.

A read that fails with an I/O or connection error — a file that vanished or is briefly
unreadable on a network mount, a hub connection dropped mid-stream — is retried up to
`data.read_retries` times, sleeping `data.retry_backoff_s * 2**(attempt - 1)` seconds
(capped at 60) before each. `BlockReader` re-opens the `datasets` stream at the state
after the last rows it received, so a successful retry neither repeats nor skips a
document. Bad input (a malformed record, text that is not UTF-8) is not retried: it
fails the same way every time. When the retries are spent, `DataStreamError` names the
source, the file when known, the attempts and the fix; training checkpoints first
(`sunfish_lib/train/faults.py`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from sunfish_lib.errors import DataStreamError, SunfishError

log = logging.getLogger(__name__)

MAX_SLEEP_S = 60.0
# Exceptions from these packages are network/transport failures (requests' are OSErrors already).
TRANSIENT_PACKAGES = ("requests", "urllib3", "httpx", "httpcore", "aiohttp", "fsspec", "huggingface_hub")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a failing read is retried."""

    retries: int = 5
    """Retries after the first failure (0: fail at once)."""
    backoff_s: float = 1.0
    """Sleep before the first retry; doubles for each further one (capped at 60 s)."""

    def delay(self, attempt: int) -> float:
        """Seconds to sleep before retry `attempt` (1-based)."""
        return min(self.backoff_s * 2.0 ** (attempt - 1), MAX_SLEEP_S)


def sleep(seconds: float) -> None:
    """time.sleep; a module function so tests can observe the backoff."""
    time.sleep(seconds)


def _chain(err: BaseException):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        yield err
        err = err.__cause__ or err.__context__


def is_transient(err: BaseException) -> bool:
    """True for I/O and connection failures that may pass (retry them); False for bad input and bugs."""
    if isinstance(err, (SunfishError, UnicodeError)):
        return False
    for e in _chain(err):
        if isinstance(e, OSError):
            return True
        if any(c.__module__.split(".")[0] in TRANSIENT_PACKAGES for c in type(e).__mro__):
            return True
    return False


def failed_file(err: BaseException) -> str | None:
    """The file an OSError in the chain names, if any (`datasets` raises FileNotFoundError(path))."""
    for e in _chain(err):
        if isinstance(e, OSError) and e.filename:
            return str(e.filename)
        if isinstance(e, FileNotFoundError) and len(e.args) == 1 and isinstance(e.args[0], str):
            return e.args[0]
    return None


def exhausted_error(source: str, hub: bool, err: BaseException, attempts: int, waited_s: float) -> DataStreamError:
    """The one-line error once `attempts` reads have failed."""
    what = failed_file(err)
    where = f"reading {what}" if what else ("streaming from the hub" if hub else "reading it")
    msg = " ".join(str(err).split())[:160] or type(err).__name__
    fix = ("check the network connection" if hub and not what else
           "check that the file exists and is readable (restore it, or remove it from the source)")
    return DataStreamError(
        f"data.source={source!r}: {where} failed {attempts} times over {waited_s:.1f} s "
        f"({type(err).__name__}: {msg}); {fix}, or raise data.read_retries / data.retry_backoff_s for a flaky source")


def log_retry(source: str, err: BaseException, attempt: int, retries: int, delay: float) -> None:
    log.warning("data.source=%r: read failed (%s: %s); retry %d/%d in %.2f s", source, type(err).__name__,
                " ".join(str(err).split())[:160], attempt, retries, delay)
