"""`sunfish runs`: the run registry as a table or JSON (sunfish_lib/runs/registry.py does the work)."""

from __future__ import annotations

import json
from pathlib import Path

from sunfish_lib.errors import SunfishError
from sunfish_lib.runs.registry import format_table, list_runs


def add_parser(sub) -> None:
    p = sub.add_parser("runs", help="list run folders: status (running/finished/interrupted/failed/killed), objective, steps, "
                                    "last metrics, wall time, path")
    p.add_argument("roots", nargs="*", type=Path, metavar="ROOT", help="folders to search (default: runs/)")
    p.add_argument("--status", action="append", default=[], metavar="S",
                   help="only runs in this state (running, finished, interrupted, failed, killed, unknown); repeatable or "
                        "comma-separated")
    p.add_argument("--stale-minutes", type=float, default=10.0,
                   help="a run on another host counts as killed when not updated for this long (default 10)")
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per run")
    p.set_defaults(func=run)


def run(args) -> int:
    states = [s.strip() for arg in args.status for s in arg.split(",") if s.strip()]
    if not 0 < args.stale_minutes < float("inf"):  # NaN and inf too
        raise SunfishError(f"--stale-minutes {args.stale_minutes:g} must be > 0")
    records = list_runs(args.roots or None, status=states or None, stale_s=args.stale_minutes * 60)
    if args.json:
        print(json.dumps([r.to_dict() for r in records]))
        return 0
    if not records:
        print("no run folders" + (f" with status {', '.join(states)}" if states else "") + " found")
        return 0
    print(format_table(records, relative_to=Path.cwd()))
    return 0
