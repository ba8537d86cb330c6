"""Text sources: FineWeb on the hub, local files, the embedded corpus — all through `datasets`.

`data.source` is one of

- `shakespeare`: the embedded corpus (`corpus.py`), read with the `text` builder, one document per file;
- `fineweb[:CONFIG]`, `fineweb-edu[:CONFIG]` (e.g. `fineweb:sample-10BT`), or `hf:OWNER/NAME[:CONFIG]`:
  streamed from the hub with `load_dataset(..., streaming=True)`;
- a local path, folder or glob of `.txt` (one document per file), `.jsonl`/`.json` (one per
  record, text in `data.text_field`) or `.parquet` (FineWeb's schema: `text`, `id`, `url`, ...).

Every source becomes a streaming `datasets.IterableDataset`, so local files exercise the
hub path's code. The train/validation split is deterministic by document: sources whose
documents are files hold out the `ceil(val_fraction * n)` files with the smallest name
hash; record sources hold out records whose `id` (else text) hashes below `val_fraction`.
"""

from __future__ import annotations

import bz2
import glob
import gzip
import hashlib
import logging
import lzma
import math
import os
import traceback
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from sunfish_lib.data.corpus import shakespeare_files
from sunfish_lib.errors import SunfishError
from sunfish_lib.hf.hub import hub_offline, hub_unreachable

log = logging.getLogger(__name__)

HUB_ALIASES = {"fineweb": "HuggingFaceFW/fineweb", "fineweb-edu": "HuggingFaceFW/fineweb-edu"}
BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
_COMPRESSED = (".gz", ".bz2", ".xz", ".zst")
REMEDY = ("use data.source=shakespeare (embedded, offline) or local files "
          "(a .parquet/.jsonl/.txt path, folder or glob)")


@dataclass(frozen=True)
class SourceSpec:
    """A parsed `data.source`: where documents come from and how they are read."""

    source: str
    """The string as given."""
    kind: str
    """embedded, hub or local."""
    builder: str
    """The `datasets` builder: text, json or parquet (hub: the repository name)."""
    files: tuple[str, ...] = ()
    """Local files (embedded and local kinds), sorted."""
    repo: str | None = None
    """Hub dataset repository (hub kind)."""
    config: str | None = None
    """Hub dataset config name, e.g. sample-10BT."""
    text_field: str = "text"
    """Column holding the document text."""

    @property
    def documents_are_files(self) -> bool:
        return self.builder == "text"


def parse_source(source: str, text_field: str = "text") -> SourceSpec:
    """Turn `data.source` into a SourceSpec; raise SunfishError for unknown or missing sources."""
    source = source.strip()
    if source == "shakespeare":
        files = tuple(str(p) for p in shakespeare_files())
        return SourceSpec(source, "embedded", "text", files=files, text_field="text")
    head, _, config = source.partition(":")
    if head in HUB_ALIASES or head == "hf":
        repo = HUB_ALIASES.get(head)
        if head == "hf":
            repo, _, config = config.partition(":")
            if repo.count("/") != 1:
                raise SunfishError(f"data.source={source!r}: expected hf:OWNER/NAME[:CONFIG]")
        return SourceSpec(source, "hub", repo, repo=repo, config=config or None, text_field=text_field)
    files = _resolve_local(source)
    builder = _builder_for(source, files)
    return SourceSpec(source, "local", builder, files=tuple(_with_content(source, files, builder)),
                      text_field=text_field)


def _resolve_local(source: str) -> list[str]:
    path = Path(source).expanduser()
    if path.is_file():
        found = [str(path)]
    elif path.is_dir():
        found = sorted(str(p) for p in path.rglob("*") if p.is_file() and _suffix(p.name) in BUILDERS)
    elif glob.has_magic(source):
        found = sorted(p for p in glob.glob(os.path.expanduser(source), recursive=True) if os.path.isfile(p))
    else:
        raise SunfishError(
            f"data.source={source!r} is no file, folder or glob that exists; give shakespeare, fineweb[:CONFIG], "
            "fineweb-edu[:CONFIG] or a path to .txt/.jsonl/.json/.parquet files"
        )
    if not found:
        raise SunfishError(f"data.source={source!r} matches no .txt/.jsonl/.json/.parquet file; check the path or glob")
    return found


_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}
_PEEK = 1 << 20


def _blank(path: str) -> bool:
    """A file of 0 bytes, or (its first MiB, decompressed) only whitespace: it holds no document or record."""
    if os.path.getsize(path) == 0:
        return True
    opener = next((o for suffix, o in _OPENERS.items() if path.endswith(suffix)), None)
    if path.endswith(".zst") or (opener is None and os.path.getsize(path) > _PEEK):
        return False
    try:
        with (opener or open)(path, "rb") as f:
            head = f.read(_PEEK + 1)
    except (OSError, EOFError, lzma.LZMAError, zlib.error):
        return False  # unreadable: the reader says so in one line (input_error)
    return len(head) <= _PEEK and not head.strip()


def _head(path: str, n: int = 1 << 16) -> bytes:
    """The first `n` bytes of a file, decompressed (b"" when it cannot be read: the reader reports that)."""
    opener = next((o for suffix, o in _OPENERS.items() if path.endswith(suffix)), open)
    try:
        with opener(path, "rb") as f:
            return f.read(n)
    except (OSError, EOFError, lzma.LZMAError, zlib.error):
        return b""


def _check_records(source: str, files: list[str]) -> None:
    """JSON files must hold objects ({...} per line, or a [...] of them): a bare `null` or number crashes
    pyarrow's JSON reader with a segmentation fault (the fuzz lane found it: issue #31)."""
    for path in files:
        if path.endswith(".zst"):
            continue
        head = _head(path).lstrip(b"\xef\xbb\xbf \t\r\n")
        if head and head[:1] not in (b"{", b"["):
            shown = head.split(b"\n", 1)[0][:20].decode("utf-8", "replace")
            raise SunfishError(f"data.source={source!r}: {path} does not hold JSON records (it starts with {shown!r}); "
                               'write one JSON object per line, e.g. {"text": "..."}')


def _with_content(source: str, files: list[str], builder: str) -> list[str]:
    """`files` less the blank ones for record builders (the json builder stops on an empty file: issue #31);
    a source whose every file is blank is refused here, before a run folder or a model exists."""
    kept = [f for f in files if not _blank(f)]
    if not kept:
        which = f"{files[0]} is" if len(files) == 1 else f"all {len(files)} files of it are"
        raise SunfishError(f"data.source={source!r} holds no documents: {which} empty or whitespace only; "
                           "point it at files with documents (e.g. a .jsonl of {\"text\": ...} lines)")
    if builder == "json":
        _check_records(source, kept)
    return files if builder == "text" else kept  # text: file names fix the val split, so keep them all


def _suffix(name: str) -> str:
    """`.jsonl` for both `a.jsonl` and `a.jsonl.gz`."""
    base = name
    for comp in _COMPRESSED:
        if base.endswith(comp):
            base = base[: -len(comp)]
    return os.path.splitext(base)[1].lower()


def _builder_for(source: str, files: list[str]) -> str:
    kinds = {_suffix(f) for f in files}
    unknown = sorted(k or "(none)" for k in kinds if k not in BUILDERS)
    if unknown:
        raise SunfishError(f"data.source={source!r} has files of type {', '.join(unknown)}; "
                           "supported: .txt, .jsonl, .json, .parquet (optionally .gz)")
    builders = {BUILDERS[k] for k in kinds}
    if len(builders) > 1:
        raise SunfishError(f"data.source={source!r} mixes {', '.join(sorted(kinds))} files; point it at one kind")
    return builders.pop()


# -- the train/validation split -----------------------------------------------------------

def doc_hash(key: str) -> float:
    """A deterministic hash of a document key in [0, 1)."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def split_files(files: tuple[str, ...], split: str, val_fraction: float) -> list[str]:
    """Files of `split` when documents are files: the val set is the smallest-hash names."""
    n_val = min(len(files) - 1, math.ceil(val_fraction * len(files))) if val_fraction > 0 else 0
    ranked = sorted(files, key=lambda f: (doc_hash(os.path.basename(f)), f))
    val = set(ranked[:n_val])
    return [f for f in files if (f in val) == (split == "validation")]


@dataclass
class RowFilter:
    """Turns rows from `datasets` into document texts: split by hash, skip empty or missing text."""

    text_field: str
    split: str
    val_fraction: float
    by_hash: bool
    skipped: dict = field(default_factory=lambda: {"empty": 0, "missing_text": 0})

    def __call__(self, batch: dict[str, list]) -> list[str]:
        texts = batch.get(self.text_field)
        if texts is None:
            raise SunfishError(f"data.text_field={self.text_field!r} is not a field of these records "
                               f"(fields: {', '.join(sorted(batch)) or 'none'}); set data.text_field")
        ids = batch.get("id") or [None] * len(texts)
        docs = []
        for text, doc_id in zip(texts, ids):
            if text is None or not isinstance(text, str):
                self.skipped["missing_text"] += 1
                continue
            if self.by_hash and (doc_hash(str(doc_id) if doc_id is not None else text) < self.val_fraction) != (
                    self.split == "validation"):
                continue
            if not text:
                self.skipped["empty"] += 1
                continue
            docs.append(text)
        return docs


# -- opening a source ---------------------------------------------------------------------

def open_source(spec: SourceSpec, split: str = "train", val_fraction: float = 0.0):
    """The split's rows as a streaming `datasets.IterableDataset`, plus the RowFilter that makes them documents."""
    if split not in ("train", "validation"):
        raise ValueError(f"split must be train or validation, got {split!r}")
    rows = RowFilter(spec.text_field, split, val_fraction, by_hash=not spec.documents_are_files)
    if spec.kind == "hub":
        return _open_hub(spec), rows
    files = split_files(spec.files, split, val_fraction) if spec.documents_are_files else list(spec.files)
    return _open_local(spec, files), rows


def _open_local(spec: SourceSpec, files: list[str]):
    # lazy: datasets is optional: the GPU image lacks it (tests/test_data_imports.py)
    import datasets

    kwargs = {}
    if spec.builder == "text":
        kwargs["sample_by"] = "document"
    elif spec.builder == "parquet":
        kwargs["columns"] = _parquet_columns(spec, files)
    if not files:
        return None
    _quiet(datasets)
    try:
        ds = datasets.load_dataset(spec.builder, data_files=files, split="train", streaming=True, **kwargs)
    except FileNotFoundError as e:
        raise SunfishError(f"data.source={spec.source!r}: {e}; check the path") from None
    except Exception as e:
        raise (input_error(spec, e) or e) from None
    if spec.builder == "json" and ds.features is not None and spec.text_field not in ds.features:
        raise SunfishError(f"data.text_field={spec.text_field!r} is in no record of {spec.source!r} "
                           f"(fields: {', '.join(ds.features)}); set data.text_field")
    return ds


def _parquet_columns(spec: SourceSpec, files: list[str]) -> list[str]:
    import pyarrow.parquet as pq  # lazy: the data package imports with torch alone (tests/test_data_imports.py)

    try:
        names = pq.read_schema(files[0]).names
    except Exception as e:  # pyarrow raises several types for a bad file
        raise SunfishError(f"{files[0]} is not a readable parquet file ({type(e).__name__}); check the file") from None
    if spec.text_field not in names:
        raise SunfishError(f"data.text_field={spec.text_field!r} is not a column of {files[0]} "
                           f"(columns: {', '.join(names)}); set data.text_field")
    return [spec.text_field] + (["id"] if "id" in names and spec.text_field != "id" else [])


def _quiet(datasets) -> None:
    """No per-call progress bars or logs from `datasets` (sources are opened often; errors become SunfishErrors)."""
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # a bad record is our one line, not its log too
    datasets.disable_progress_bars()


def _open_hub(spec: SourceSpec):
    if hub_offline():
        raise SunfishError(f"data.source={spec.source!r} needs the Hugging Face hub, but offline mode is on "
                           f"(HF_HUB_OFFLINE/HF_DATASETS_OFFLINE/TRANSFORMERS_OFFLINE); {REMEDY}")
    why = hub_unreachable()
    if why:
        raise SunfishError(f"data.source={spec.source!r} needs the Hugging Face hub, which is unreachable ({why}); "
                           f"{REMEDY}")
    # lazy: datasets is optional: the GPU image lacks it (tests/test_data_imports.py)
    import datasets

    _quiet(datasets)
    try:
        ds = datasets.load_dataset(spec.repo, name=spec.config, split="train", streaming=True)
    except (ConnectionError, OSError, ValueError) as e:
        first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise SunfishError(f"data.source={spec.source!r} could not be opened on the hub ({first}); {REMEDY}") from None
    if ds.features is not None:
        if spec.text_field not in ds.features:
            raise SunfishError(f"data.text_field={spec.text_field!r} is not a column of {spec.repo} "
                               f"(columns: {', '.join(ds.features)}); set data.text_field")
        ds = ds.select_columns([spec.text_field] + (["id"] if "id" in ds.features else []))
    return ds


def explain_decode_error(spec: SourceSpec, err: UnicodeDecodeError) -> SunfishError:
    """A one-line error naming the local file that is not UTF-8 (scans files only on this error path)."""
    culprit = None
    for f in spec.files:
        try:
            with open(f, encoding="utf-8") as fh:
                while fh.read(1 << 20):
                    pass
        except UnicodeDecodeError:
            culprit = f
            break
        except OSError:
            continue
    where = culprit or f"a file of {spec.source!r}"
    return SunfishError(f"{where} is not valid UTF-8 ({err.reason} at byte {err.start}); "
                        "convert it, e.g. iconv -f latin1 -t utf-8, or remove it from data.source")


def input_error(spec: SourceSpec, err: BaseException) -> SunfishError | None:
    """A one-line SunfishError for a bad-input exception raised while reading `spec`; None for bugs."""
    if isinstance(err, SunfishError):
        return err
    if isinstance(err, UnicodeDecodeError):
        return explain_decode_error(spec, err)
    if isinstance(err, RuntimeError) and isinstance(err.__cause__, StopIteration):  # the json builder on a file
        return SunfishError(f"data.source={spec.source!r} has a file with no records (empty or whitespace only?); "
                            "remove it or add documents")
    if isinstance(err, (gzip.BadGzipFile, zlib.error, lzma.LZMAError, EOFError)):  # a .gz that is not one, or cut short
        return SunfishError(f"data.source={spec.source!r} has a compressed file that cannot be read "
                            f"({type(err).__name__}: {' '.join(str(err).split())[:120]}); recompress or remove it")
    raised_in = traceback.extract_tb(err.__traceback__)[-1].filename if err.__traceback__ else ""
    from_reader = any(f"{os.sep}{lib}{os.sep}" in raised_in for lib in ("datasets", "pyarrow"))
    if type(err).__module__.split(".")[0] not in ("pyarrow", "datasets", "json") and not from_reader:
        return None  # a TypeError/ValueError raised by the reader on a record counts too (found by the fuzz lane)
    msg = " ".join(str(err).split())[:200] or type(err).__name__
    return SunfishError(f"data.source={spec.source!r} has an unreadable record ({msg}); fix or remove the file")


def iter_documents(spec: SourceSpec, split: str = "train", val_fraction: float = 0.0,
                   limit: int | None = None) -> Iterator[str]:
    """Documents of one split in source order (no shuffling, no sharding); for inspection and summaries."""
    ds, rows = open_source(spec, split, val_fraction)
    if ds is None:
        return
    n, it = 0, ds.iter(batch_size=16)
    while True:
        try:
            batch = next(it, None)
        except Exception as e:
            raise (input_error(spec, e) or e) from None
        if batch is None:
            return
        for doc in rows(batch):
            yield doc
            n += 1
            if limit is not None and n >= limit:
                return
