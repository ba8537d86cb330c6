"""Where Sunfish keeps things: the download/tokenizer cache and the runs folder."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Cache for fetched corpora and trained tokenizers (never in git).

    `$SUNFISH_CACHE` if set, else `$XDG_CACHE_HOME/sunfish`, else `~/.cache/sunfish`.
    """
    env = os.environ.get("SUNFISH_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sunfish"


def repo_root() -> Path:
    """The checkout this package lives in (for runs/ and notebooks/ defaults)."""
    return Path(__file__).resolve().parent.parent


def runs_dir() -> Path:
    """Default parent of run folders: `$SUNFISH_RUNS` or `<repo>/runs`."""
    env = os.environ.get("SUNFISH_RUNS")
    return Path(env).expanduser() if env else repo_root() / "runs"
