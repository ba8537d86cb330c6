"""Where Sunfish keeps runs: the checkout, the runs folder, a fresh run folder."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from sunfish_lib.errors import SunfishError


def repo_root() -> Path:
    """The checkout this package lives in (for runs/ and notebooks/ defaults)."""
    return Path(__file__).resolve().parents[2]


def from_repo_root(path: str | Path) -> str:
    """`path` as a command typed at the checkout's root takes it: relative to the root when inside it, else absolute.

    A notebook runs in notebooks/, so its own relative paths (`../runs/...`) are wrong at the root.
    """
    p = Path(path).expanduser().resolve()
    try:
        return str(p.relative_to(repo_root()))
    except ValueError:
        return str(p)


def runs_dir() -> Path:
    """Default parent of run folders: `$SUNFISH_RUNS` or `<repo>/runs`."""
    env = os.environ.get("SUNFISH_RUNS")
    return Path(env).expanduser() if env else repo_root() / "runs"


def new_run_dir(name: str, parent: Path | None = None) -> Path:
    """Create and return a fresh `runs/<timestamp>-<name>/` (a suffix keeps it unique)."""
    parent = Path(parent) if parent is not None else runs_dir()
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SunfishError(f"cannot create the runs folder {parent} ({e.strerror}); pass --runs-dir to a writable place") from None
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    for i in range(1000):
        path = parent / (f"{stamp}-{name}" if i == 0 else f"{stamp}-{name}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
        except OSError as e:
            raise SunfishError(f"cannot create run folder {path} ({e.strerror}); check permissions and free space") from None
    raise SunfishError(f"could not find a free run folder name under {parent}")
