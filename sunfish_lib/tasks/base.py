"""What every task shares: rows as JSONL, exact-match scoring, accuracy with its standard error."""

from __future__ import annotations

import json
import math
from pathlib import Path

from sunfish_lib.errors import SunfishError


def exact_match(row: dict, generated: str) -> bool:
    """The generated completion equals the expected one, word for word."""
    return generated.split() == row["completion"].split()


def accuracy(correct: list[bool]) -> tuple[float, float]:
    """(share correct, its binomial standard error sqrt(p (1 - p) / n))."""
    n = len(correct)
    if n == 0:
        return float("nan"), float("nan")
    p = sum(correct) / n
    return p, math.sqrt(p * (1 - p) / n)


def write_rows(path: str | Path, rows: list[dict]) -> Path:
    """One JSON object per line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_rows(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        raise SunfishError(f"task file {path} does not exist; make it with `sunfish tasks make NAME --out DIR`")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
