"""`sunfish tasks make NAME --out DIR`: write a synthetic task's train/test JSONL and its tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

from sunfish_lib.errors import SunfishError

NAMES = ("reversal", "path_star", "sudoku", "countdown")


def add_parser(sub) -> None:
    p = sub.add_parser("tasks", help="synthetic reasoning tasks (reversal, path_star, sudoku, countdown) as SFT JSONL")
    verbs = p.add_subparsers(dest="verb", required=True)
    m = verbs.add_parser("make", help="write DIR/train.jsonl, DIR/test.jsonl, DIR/task.json and DIR/tokenizer/")
    m.add_argument("name", choices=NAMES, help="the task")
    m.add_argument("--out", type=Path, required=True, help="folder to write")
    m.add_argument("--seed", type=int, default=0, help="the one seed the rows follow")
    m.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="task parameter (e.g. n_facts=200, degree=2, size=9, givens=[30,40], reverse=true); repeatable")
    p.set_defaults(func=run)


def parse_params(items: list[str]) -> dict:
    """KEY=VALUE strings -> {key: JSON value (number, list, true/false) or the string}."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SunfishError(f"--set {item!r}: expected KEY=VALUE, e.g. --set n_facts=200")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def run(args) -> int:
    # lazy: tasks loads `tokenizers`; building the CLI parser (`sunfish --help`) stays free of it
    from sunfish_lib.tasks import make_task

    meta = make_task(args.name, args.out, seed=args.seed, **parse_params(args.set))
    print(f"wrote {meta['rows']} rows of {meta['task']} to {args.out} (tokenizer in {args.out / 'tokenizer'})")
    print(json.dumps(meta))
    return 0
