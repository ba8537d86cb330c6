"""Where fetched corpora and trained tokenizers are cached (outside git)."""

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
