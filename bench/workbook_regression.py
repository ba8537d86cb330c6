"""Same seeds, same numbers: compare two workbook runs' `09_compare_runs/compare.json`.

    .venv/bin/python bench/workbook_regression.py BEFORE_RUN AFTER_RUN

A refactor must not move a number: every metric of every compared run (losses, ELBO and its SE,
bits per byte, sample entropy, judge perplexity, ...) and every config difference must be equal,
exactly. Wall time is left out (it is not a number the seed fixes), and paths inside each run
folder are compared relative to it. Prints each difference; exit 1 if any. Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

IGNORED = ("wall_s",)
"""Metrics a fixed seed does not fix."""


def load(run: Path) -> tuple[dict, dict]:
    """(run name -> metrics, config_diff) of a workbook run folder, its own paths written `<run>`."""
    path = run / "09_compare_runs" / "compare.json"
    if not path.is_file():
        sys.exit(f"error: {path} does not exist; give a workbook run folder (sunfish workbook [--smoke])")
    text = path.read_text().replace(json.dumps(str(run.resolve()))[1:-1], "<run>")
    data = json.loads(text)
    metrics = {m["run"]: {k: v for k, v in m.items() if k not in IGNORED} for m in data["metrics"]}
    return metrics, data["config_diff"]


def differences(before: Path, after: Path) -> tuple[int, list[str]]:
    """(values compared, one line per value that differs)."""
    (a, ca), (b, cb) = load(before), load(after)
    out = []
    for run in sorted(set(a) | set(b)):
        for key in sorted(set(a.get(run, {})) | set(b.get(run, {}))):
            va, vb = a.get(run, {}).get(key, "<missing>"), b.get(run, {}).get(key, "<missing>")
            if va != vb:
                out.append(f"{run} {key}: {va!r} -> {vb!r}")
    out += [f"config_diff {k}: {ca.get(k)!r} -> {cb.get(k)!r}" for k in sorted(set(ca) | set(cb)) if ca.get(k) != cb.get(k)]
    return sum(len(m) for m in a.values()) + len(ca), out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("before", type=Path)
    ap.add_argument("after", type=Path)
    args = ap.parse_args(argv)
    n, diffs = differences(args.before, args.after)
    for line in diffs:
        print(line)
    print(f"{n} values compared, {len(diffs)} differ")
    print(json.dumps({"before": str(args.before), "after": str(args.after), "values": n, "differ": len(diffs)}))
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
