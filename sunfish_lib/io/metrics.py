"""Reading a run's metrics back (for notebooks, the run registry and tests)."""

from __future__ import annotations

import csv
from pathlib import Path


def read_metrics(run_dir: str | Path) -> list[dict[str, float]]:
    """All logged rows of a run, attempts stitched in order (logs/00, logs/01, ...).

    Rows of an earlier attempt past the step the next attempt resumed from (steps that
    were lost to a kill and trained again) are dropped, so each step appears once.
    """
    parts = sorted((Path(run_dir) / "logs").glob("[0-9][0-9]/metrics.csv"))
    attempts = [_read_csv(p) for p in parts]
    rows: list[dict[str, float]] = []
    for i, part in enumerate(attempts):
        later = [r["step"] for a in attempts[i + 1:] for r in a if "step" in r]
        cutoff = min(later) if later else float("inf")
        rows += [r for r in part if r.get("step", -1) < cutoff]
    return rows


def _read_csv(path: Path) -> list[dict[str, float]]:
    with open(path, newline="") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(f)]


def series(rows: list[dict[str, float]], key: str) -> tuple[list[float], list[float]]:
    """(steps, values) of one metric."""
    pts = [(r["step"], r[key]) for r in rows if key in r and "step" in r]
    return [p[0] for p in pts], [p[1] for p in pts]
