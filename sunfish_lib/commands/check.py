"""`sunfish check`: the installation check (imports, torch, devices, a tiny forward/backward) as a table or JSON."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from sunfish_lib.check import all_ok, run_checks


def add_parser(sub) -> None:
    p = sub.add_parser("check", help="installation check: imports, torch, devices, a tiny forward/backward")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    results = run_checks()
    ok = all_ok(results)
    if args.json:
        print(json.dumps({"ok": ok, "checks": [r.to_dict() for r in results]}))
        return 0 if ok else 1
    table = Table(title="sunfish check")
    for col in ("check", "status", "detail", "fix"):
        table.add_column(col)
    for r in results:
        table.add_row(r.name, "[green]ok[/]" if r.ok else "[red]FAIL[/]", r.detail, "" if r.ok else r.fix)
    Console(width=160).print(table)
    print("all checks passed" if ok else "some checks failed: see the fix column")
    return 0 if ok else 1
