"""Sharded checkpoints of FSDP2 runs: torch.distributed.checkpoint (DCP) folders, safe and atomic.

`checkpoints/last.ckpt/` of a run trained with `train.strategy=fsdp` on several processes is a folder:

- `__<rank>_0.distcp`: each rank's own shards of the weights, AdamW moments and EMA (written by
  that rank; nothing is gathered);
- `.metadata`: DCP's index (which key, which slice, which file), written by rank 0;
- `meta.pt`: everything else Lightning checkpoints (loops, LR schedule, callbacks, data position,
  the `sunfish` config section), a `torch.save` archive read with `weights_only=True`;
- `crc32.json`: the CRC-32 of every file above. Each rank checksums the shard it wrote; rank 0
  records them. On resume rank 0 alone reads the folder to check them (train/dcp_strategy.py).

Written into `last.ckpt.tmp/`, then swapped in by two renames (`last.ckpt` -> `last.ckpt.old`,
`.tmp` -> `last.ckpt`), so a kill leaves either the previous or the new folder complete;
`recover_swap` finishes a swap a kill interrupted.

Reading never runs code from the folder: `.metadata` is a plain pickle, so `SafeReader` unpickles
it with an allow-list of DCP's own metadata classes, and `SafeLoadPlanner` (`_safe_io`) reads DCP's non-tensor
items with `torch.load(weights_only=True)` (DCP's default planner uses `weights_only=False`).

`load_sharded` consolidates a folder into full tensors in one process (no process group), which is
what `load_for_inference` and `sunfish export` use.
"""

from __future__ import annotations

import functools
import importlib
import io
import json
import os
import pickle
import shutil
import warnings
import zlib
from pathlib import Path

import torch

from sunfish_lib.config import Config
from sunfish_lib.errors import SunfishError
from sunfish_lib.io.files import fsync_dir
from sunfish_lib.io.verify import load_error, tensor_mismatch, verify_container
from sunfish_lib.model import Backbone

DCP_INDEX = ".metadata"
META_FILE = "meta.pt"
CRC_FILE = "crc32.json"
META_KEYS = ("loops", "global_step", "epoch", "lr_schedulers", "pytorch-lightning_version", "sunfish")
_CHUNK = 1 << 24


def is_sharded(path: str | Path) -> bool:
    """A DCP checkpoint folder (as opposed to a one-file full-state `.ckpt`)."""
    path = Path(path)
    return path.is_dir() and (path / DCP_INDEX).is_file()


# -- reading without running code -----------------------------------------------------------------
_ALLOWED = {  # harmless to construct: DCP's metadata records, sizes, paths, layout/dtype look-ups by name
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"), ("torch", "Size"),
    ("torch.serialization", "_get_layout"), ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath"),
    ("pathlib", "WindowsPath"), ("pathlib", "PureWindowsPath"), ("collections", "OrderedDict"),
}
_DCP_METADATA = "torch.distributed.checkpoint.metadata"  # its classes: dataclasses and enums of plain fields
_TORCH_VALUES = (torch.dtype, torch.layout, torch.memory_format)


class _MetadataUnpickler(pickle.Unpickler):
    """Only DCP's metadata classes and torch dtypes/layouts: a crafted `.metadata` cannot name a callable."""

    def find_class(self, module, name):
        if (module, name) in _ALLOWED or (module == _DCP_METADATA and isinstance(
                getattr(importlib.import_module(_DCP_METADATA), name, None), type)):
            return super().find_class(module, name)
        if module == "torch" and isinstance(getattr(torch, name, None), _TORCH_VALUES):
            return getattr(torch, name)
        raise pickle.UnpicklingError(f"GLOBAL {module}.{name}")


def read_index(path: Path):
    """DCP's `.metadata` of a checkpoint folder, unpickled with the allow-list (one-line error otherwise)."""
    file = Path(path) / DCP_INDEX
    try:
        with open(file, "rb") as f:
            return _MetadataUnpickler(f).load()
    except pickle.UnpicklingError as e:
        if str(e).startswith("GLOBAL "):
            raise SunfishError(f"checkpoint {file} was refused: it asks for {str(e)[7:]} when unpickled, which could "
                               "run code; nothing in it was executed. Use a checkpoint you trust") from None
        raise SunfishError(f"checkpoint {file} is unreadable ({e}); it is corrupt or truncated") from None
    except (OSError, EOFError, AttributeError, TypeError, ValueError) as e:
        raise SunfishError(f"checkpoint {file} is unreadable ({type(e).__name__}: {e}); "
                           "it is corrupt or truncated") from None


@functools.cache
def _safe_io():
    """(SafeReader, SafeLoadPlanner) classes."""
    # lazy: torch.distributed.checkpoint takes 4.4 s to import after io.export (shared 2-core CPU), and
    # sampling from an export (load_for_inference) never needs it
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint._traverse import set_element
    from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
    from torch.distributed.checkpoint.metadata import StorageMeta

    class SafeReader(FileSystemReader):
        """DCP's file reader with the allow-listed `.metadata` unpickler."""

        def read_metadata(self, *args, **kwargs):
            if kwargs.get("rank") is not None:  # per-rank metadata: not a layout Sunfish writes
                raise SunfishError(f"checkpoint {self.path} has per-rank metadata; it was not written by "
                                   "`sunfish train`")
            metadata = read_index(Path(self.path))
            if getattr(metadata, "storage_meta", None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

    class SafeLoadPlanner(DefaultLoadPlanner):
        """DCP's default planner, but non-tensor items (AdamW's param_groups) load with weights_only=True."""

        def load_bytes(self, read_item, value: io.BytesIO) -> None:
            obj = torch.load(value, weights_only=True)
            if self.flatten_state_dict:
                set_element(self.original_state_dict, self.mappings[read_item.dest_index.fqn], obj)
            else:
                self.state_dict[read_item.dest_index.fqn] = obj

    return SafeReader, SafeLoadPlanner


def load_into(state: dict, path: Path, *, no_dist: bool = False) -> None:
    """DCP load of `state` (tensors and DTensors filled in place) from a checkpoint folder."""
    import torch.distributed.checkpoint as dist_cp  # lazy: 4.4 s, as in _safe_io

    reader, planner = _safe_io()
    with warnings.catch_warnings():  # no_dist: DCP warns that it "assumes" one process, which is the point
        warnings.filterwarnings("ignore", message=r".*assuming the intent is to load in a single process.*")
        dist_cp.load(state, storage_reader=reader(str(path)), planner=planner(), no_dist=no_dist)


def read_meta(path: Path) -> dict:
    """meta.pt of a checkpoint folder: its archive's CRCs checked, unpickled with weights_only=True."""
    file = Path(path) / META_FILE
    if not file.is_file():
        raise SunfishError(f"checkpoint {path} lacks {META_FILE}: the sharded checkpoint is incomplete; "
                           "resume from another one or start a new run")
    verify_container(file)
    try:
        meta = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:
        raise load_error(file, e) from None
    if not isinstance(meta, dict):
        raise SunfishError(f"checkpoint {file} holds a {type(meta).__name__}, not a checkpoint dict")
    return meta


# -- checksums --------------------------------------------------------------------------------------
def file_crc32(path: Path) -> str:
    crc = 0
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            crc = zlib.crc32(chunk, crc)
    return f"{crc:08x}"


def rank_crcs(folder: Path, rank: int) -> dict[str, str]:
    """CRC-32 of the shard files this rank wrote (DCP names them `__<rank>_<n>.distcp`)."""
    return {p.name: file_crc32(p) for p in sorted(Path(folder).glob(f"__{rank}_*.distcp"))}


def write_manifest(folder: Path, shard_crcs: dict[str, str]) -> None:
    """crc32.json: the shards' CRCs (from their writers) plus `.metadata` and meta.pt (rank 0)."""
    crcs = {**shard_crcs, DCP_INDEX: file_crc32(folder / DCP_INDEX), META_FILE: file_crc32(folder / META_FILE)}
    _write_synced(folder / CRC_FILE, json.dumps(crcs, indent=1, sort_keys=True).encode())


def verify_folder(path: Path) -> None:
    """Raise a one-line SunfishError unless every file of the folder matches crc32.json (reads it all once)."""
    path = Path(path)
    try:
        want = json.loads((path / CRC_FILE).read_text())
    except (OSError, ValueError) as e:
        raise SunfishError(f"checkpoint {path} has no readable {CRC_FILE} ({type(e).__name__}); the sharded "
                           "checkpoint is incomplete or was not written by `sunfish train`") from None
    files = {p.name for p in path.iterdir() if p.is_file()} - {CRC_FILE}
    if not isinstance(want, dict) or files != set(want):
        missing, extra = sorted(set(want) - files), sorted(files - set(want))
        what = f"missing {missing[0]}" if missing else f"unexpected {extra[0]}"
        raise SunfishError(f"checkpoint {path} does not match its {CRC_FILE} ({what}); it is incomplete or was "
                           "tampered with: resume from another one or start a new run")
    for name in sorted(want):
        if file_crc32(path / name) != want[name]:
            raise SunfishError(f"checkpoint {path / name} is corrupt: a CRC-32 check failed (its bytes changed "
                               "after it was written); use another checkpoint or retrain")


def check_folder_fits(path: Path, module) -> int:
    """Check a DCP folder before resuming `module` from it (CRCs, parts, shapes); returns its global_step.

    Reads every file once: under several processes only rank 0 calls it (train/dcp_strategy.py).
    """
    verify_folder(path)
    meta = read_meta(path)
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise SunfishError(f"checkpoint {path} lacks {', '.join(missing)}: it is not a complete Sunfish training "
                           "checkpoint; resume from another one or start a new run")
    shapes = saved_shapes(path, "state_dict.")
    problem = tensor_mismatch({k: torch.empty(s, device="meta") for k, s in shapes.items()}, module)
    if problem:
        raise SunfishError(f"checkpoint {path} does not fit this run's model (state_dict: {problem}); "
                           "it was tampered with or comes from another run")
    return int(meta["global_step"])


def saved_shapes(path: Path, prefix: str) -> dict[str, tuple[int, ...]]:
    """{key without prefix: global shape} of the tensors saved under `prefix` (from `.metadata`)."""
    index = read_index(path)
    return {k[len(prefix):]: tuple(m.size) for k, m in index.state_dict_metadata.items()
            if k.startswith(prefix) and hasattr(m, "size")}


# -- writing ----------------------------------------------------------------------------------------
def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save_meta(folder: Path, meta: dict) -> None:
    buf = io.BytesIO()
    torch.save(meta, buf)
    _write_synced(Path(folder) / META_FILE, buf.getvalue())


def _old(path: Path) -> Path:
    return path.with_name(path.name + ".old")


def tmp_of(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def swap_in(tmp: Path, path: Path) -> None:
    """Replace `path` (a folder or a one-file checkpoint) by the complete folder `tmp`; a kill leaves one whole."""
    old = _old(path)
    remove_path(old)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    fsync_dir(path.parent)
    remove_path(old)


def recover_swap(path: Path) -> None:
    """A kill between swap_in's renames left only `<path>.old`: it is the last complete checkpoint."""
    path, old = Path(path), _old(Path(path))
    try:  # every rank may call this at once: the first rename wins, the others find nothing to do
        if not path.exists() and old.exists():
            os.replace(old, path)
        elif path.exists() and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    except FileNotFoundError:
        pass


def saved_step(path: Path) -> int | None:
    """global_step of a checkpoint folder from meta.pt (no shard read), or None."""
    try:
        return int(torch.load(Path(path) / META_FILE, map_location="cpu", weights_only=True)["global_step"])
    except Exception:  # missing or unreadable: the resume check names what is wrong
        return None


# -- one process: consolidate ---------------------------------------------------------------------
def load_sharded(path: str | Path, use_ema: bool = True):
    """(Backbone, Config) from a DCP folder, consolidated in this process (no process group, no gather)."""
    path = Path(path)
    verify_folder(path)
    meta = read_meta(path)
    section = meta.get("sunfish")
    if not isinstance(section, dict) or "config" not in section:
        raise SunfishError(f"{path} is not a Sunfish checkpoint (no 'sunfish' section in {META_FILE})")
    try:
        cfg = Config.from_dict(section["config"])
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        if isinstance(e, SunfishError):
            raise
        raise SunfishError(f"{path} has a malformed 'sunfish' config section ({type(e).__name__})") from None
    model = Backbone.from_config(cfg)
    want = {f"model.{k}": v for k, v in model.state_dict().items()}
    shapes = saved_shapes(path, "state_dict.")
    problem = tensor_mismatch({k: torch.empty(s, device="meta") for k, s in shapes.items() if k.startswith("model.")},
                              _Prefixed(want))
    if problem:
        raise SunfishError(f"{path} does not match its config ({problem}); it is from another model or was tampered with")
    load_into({"state_dict": want}, path, no_dist=True)  # fills the model's own tensors in place
    params = list(model.parameters())
    if use_ema and saved_shapes(path, "ema."):
        ema = {str(i): torch.empty_like(p) for i, p in enumerate(params)}
        load_into({"ema": ema}, path, no_dist=True)
        with torch.no_grad():
            for i, p in enumerate(params):
                p.copy_(ema[str(i)])
    return model.eval(), cfg


class _Prefixed(torch.nn.Module):
    """A stand-in whose state_dict() is the given dict (tensor_mismatch compares against a module)."""

    def __init__(self, sd: dict):
        super().__init__()
        self._sd = sd

    def state_dict(self, *args, **kwargs):  # noqa: D102
        return self._sd
