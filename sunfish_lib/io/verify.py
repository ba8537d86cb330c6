"""Telling a bad checkpoint file apart from a good one before anything trusts it.

`safe_torch_load` (io/checkpoint.py) runs `verify_container` first: a `.ckpt` must be a
complete PyTorch zip archive whose every entry matches the CRC-32 that `torch.save`
recorded (PyTorch's own reader skips that check, so flipped bytes would load as silently
different weights). Files of another kind — empty, text, safetensors, a zip of something
else — are named as such. Unpickling is `weights_only=True`: a pickle that asks for a
callable (`os.system`, `exec`, any class) is refused before anything in it runs, and
`load_error` says so. Exported safetensors carry a CRC-32 of their tensors (`tensors_crc32`,
`check_crc32`); `tensor_mismatch` names the first key that does not fit a model.
"""

from __future__ import annotations

import re
import zlib
import zipfile
from pathlib import Path

import torch
from safetensors import safe_open

from sunfish_lib.errors import SunfishError

_verified: set[tuple[str, int, int]] = set()  # (path, size, mtime_ns) whose CRCs were checked in this process


def verify_container(path: Path) -> None:
    """Raise a one-line SunfishError unless `path` is an intact PyTorch checkpoint archive (reads the file once)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _verified:
        return
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        raise SunfishError(f"checkpoint {path} is empty (0 bytes): its write never completed; "
                           "use another checkpoint or retrain")
    if _is_safetensors(head):
        raise SunfishError(f"checkpoint {path} is a safetensors file, not a Sunfish .ckpt; "
                           "pass the folder that holds it with its config.json (an exported model)")
    if head[:2] != b"PK":
        if head[:1] == b"\x80":
            return  # torch's legacy (pre-zip) format: a bare pickle, loaded with weights_only
        raise SunfishError(f"checkpoint {path} is not a Sunfish checkpoint (no PyTorch archive: it starts with "
                           f"{head[:8]!r}); "
                           "pass a .ckpt written by `sunfish train`")
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
            if not any(n.endswith("/data.pkl") or n == "data.pkl" for n in names):
                raise SunfishError(f"checkpoint {path} is a zip archive but not a Sunfish checkpoint (no data.pkl); "
                                   "pass a .ckpt written by `sunfish train`")
            for info in z.infolist():
                if info.CRC or not info.file_size:  # CRC 0 on data: torch.save ran with CRC-32 turned off
                    _read_through(z, info)
    except zipfile.BadZipFile as e:
        what = "corrupt: a CRC-32 check failed" if "CRC" in str(e) else "truncated or corrupt"
        why = "; its bytes changed after it was written" if "CRC" in str(e) else ""
        raise SunfishError(f"checkpoint {path} is {what} ({e}){why}; use another checkpoint or retrain") from None
    except (OSError, EOFError, ValueError) as e:  # zipfile reports some truncations this way
        raise SunfishError(f"checkpoint {path} is truncated or corrupt ({type(e).__name__}: {e}); "
                           "use another checkpoint or retrain") from None
    _verified.add(key)


def mark_verified(path: Path) -> None:
    """Treat `path` as CRC-checked in this process (another rank checked it and said so)."""
    st = Path(path).stat()
    _verified.add((str(Path(path).resolve()), st.st_size, st.st_mtime_ns))


def _is_safetensors(head: bytes) -> bool:
    """8-byte little-endian header length, then the JSON header."""
    return len(head) > 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < 1 << 32


def _read_through(z: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
    """Read an entry to its end: zipfile compares the CRC-32 there and raises BadZipFile on a mismatch."""
    with z.open(info) as f:
        while f.read(1 << 24):
            pass


def load_error(path: Path, err: Exception) -> SunfishError:
    """The one-line error for a torch.load(weights_only=True) failure on `path`."""
    text = str(err)
    if "Weights only load failed" in text or "Unsupported global" in text:
        found = re.search(r"GLOBAL ([\w.]+)", text)
        what = f"it asks for {found.group(1)}" if found else "it holds objects other than tensors and plain data"
        return SunfishError(f"checkpoint {path} was refused: {what} when unpickled, which could run code; nothing "
                            "in it was executed. Use a checkpoint you trust (sunfish writes only tensors and plain data)")
    first = " ".join(text.split())[:160] or type(err).__name__
    return SunfishError(f"checkpoint {path} is unreadable ({type(err).__name__}: {first}); "
                        "it is corrupt, truncated or not a Sunfish checkpoint")


def tensor_mismatch(got, module: torch.nn.Module) -> str | None:
    """How a state dict fails to fit `module` (the first missing, unexpected or misshapen key); None if it fits."""
    if not isinstance(got, dict):
        return f"a {type(got).__name__}, not a dict of tensors"
    want = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    absent = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    bad = [k for k in want if k in got and (not isinstance(got[k], torch.Tensor) or tuple(got[k].shape) != want[k])]
    if absent:
        return f"missing {absent[0]}" + (f" and {len(absent) - 1} more" if len(absent) > 1 else "")
    if extra:
        return f"unexpected {extra[0]}" + (f" and {len(extra) - 1} more" if len(extra) > 1 else "")
    if bad:
        return f"{bad[0]} has shape {tuple(getattr(got[bad[0]], 'shape', ()))}, the model {want[bad[0]]}"
    return None


def safetensors_error(path: Path, err: Exception, fix: str, prefix: str = "") -> SunfishError:
    """The one-line error for a model.safetensors that safetensors could not read (never unpickled)."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        head = b"?"
    if head[:2] == b"PK" or head[:1] == b"\x80":
        return SunfishError(f"{prefix}{path} was refused: it is a pickle (a PyTorch .pt/.ckpt), not safetensors, and "
                            f"exported weights are read only as safetensors, so nothing in it was executed; {fix}")
    what = "is empty (0 bytes)" if not head else f"is unreadable ({' '.join(str(err).split())[:160]})"
    return SunfishError(f"{prefix}{path} {what}; {fix}")


def tensors_crc32(sd: dict[str, torch.Tensor]) -> str:
    """CRC-32 over names and raw bytes of a state dict (key order), stored in an export's metadata."""
    crc = 0
    for k in sorted(sd):
        crc = zlib.crc32(k.encode(), crc)
        t = sd[k].detach().to("cpu").contiguous().reshape(-1)
        crc = zlib.crc32(t.view(torch.uint8).numpy() if t.numel() else b"", crc)
    return f"{crc:08x}"


def check_crc32(path: Path, sd: dict[str, torch.Tensor], fix: str, prefix: str = "") -> None:
    """Raise a one-line SunfishError when a safetensors file's weights differ from the CRC-32 written at export."""
    with safe_open(str(path), "pt") as f:
        want = (f.metadata() or {}).get("crc32")
    if want is not None and tensors_crc32(sd) != want:
        raise SunfishError(f"{prefix}{path} is corrupt: its weights fail the CRC-32 written at export (its bytes "
                           f"changed after it was written); {fix}")
