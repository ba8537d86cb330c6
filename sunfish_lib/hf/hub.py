"""The Hugging Face hub from Sunfish's side: whether it may be used, whether it answers, and quiet transformers.

`hub_offline` is the one reading of the offline switches (`HF_HUB_OFFLINE`, `HF_DATASETS_OFFLINE`,
`TRANSFORMERS_OFFLINE`); `hub_unreachable` probes the host so a machine without network fails in
seconds instead of waiting on retries. transformers is imported inside `quiet_transformers` only
(importing it takes seconds; the modules that import this one need only the standard library).
"""

from __future__ import annotations

import os
import socket
import threading
from contextlib import contextmanager
from urllib.parse import urlparse


def hub_offline() -> bool:
    """True when an offline switch is set (1/true/yes/on)."""
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_unreachable(timeout: float = 3.0) -> str | None:
    """None when the hub's host takes a TCP connection within `timeout` s (DNS included), else why not.

    Behind a proxy (HTTPS_PROXY, ALL_PROXY) a direct connection says nothing, so the answer is None
    and the library that uses the hub tries through the proxy.
    """
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or 443
    why: list[str] = [f"no answer from {host} within {timeout:g} s"]

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            why[0] = ""
        except OSError as e:
            why[0] = f"cannot connect to {host}: {e.strerror or e}"

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return why[0] or None


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub answers (`hub_unreachable` is None): fail fast without network."""
    return hub_unreachable(timeout) is None


@contextmanager
def quiet_transformers():
    """No progress bars and only errors from transformers inside (they clutter notebooks and logs)."""
    from transformers.utils import logging as hf_logging  # lazy: 2.4 s to import (see the module docstring)

    bars, level = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()
        hf_logging.set_verbosity(level)
