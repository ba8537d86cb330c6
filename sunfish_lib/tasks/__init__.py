"""Synthetic reasoning tasks with exact scorers: where masked diffusion and AR part ways.

Each task module has `make(seed, **params) -> {"train": rows, "test": rows}` (deterministic from the seed,
no download), `words(**params)` (its vocabulary) and `score(row, generated) -> bool`. A row is
`{"prompt", "completion", ...}`: the SFT format of `data/pairs.py`, plus `direction` on test rows (the
split accuracy is reported by) and, for reversal, `infill` (the statement and the answer span a masked
model fills). `make_task(name, out_dir)` writes train.jsonl, test.jsonl, task.json and tokenizer/.
"""

from __future__ import annotations

import json
from pathlib import Path

from sunfish_lib.errors import SunfishError
from sunfish_lib.tasks import countdown, path_star, reversal, sudoku
from sunfish_lib.tasks.base import accuracy, exact_match, read_rows, write_rows
from sunfish_lib.tasks.vocab import load_task_tokenizer, save_task_tokenizer, task_tokenizer

TASKS = {"reversal": reversal, "path_star": path_star, "sudoku": sudoku, "countdown": countdown}

__all__ = ["TASKS", "accuracy", "exact_match", "load_task", "make_task", "read_rows", "task_module",
           "task_tokenizer", "write_rows"]


def task_module(name: str):
    if name not in TASKS:
        raise SunfishError(f"unknown task {name!r}; choose one of {', '.join(TASKS)}")
    return TASKS[name]


def make_task(name: str, out_dir: str | Path, *, seed: int = 0, **params) -> dict:
    """Write `out_dir/{train,test}.jsonl`, `task.json` (name, seed, params, counts) and `tokenizer/`; return task.json."""
    mod = task_module(name)
    unknown = sorted(set(params) - set(mod.DEFAULTS) - {"reverse"})
    if unknown:
        raise SunfishError(f"task {name}: unknown parameter {unknown[0]!r}; allowed: {', '.join(mod.DEFAULTS)}")
    rows = mod.make(seed=seed, **params)
    out = Path(out_dir)
    for split, r in rows.items():
        write_rows(out / f"{split}.jsonl", [{**x, "task": name} for x in r])
    save_task_tokenizer(task_tokenizer(mod.words(**params)), out / "tokenizer")
    meta = {"task": name, "seed": seed, "params": {**mod.DEFAULTS, **params},
            "rows": {split: len(r) for split, r in rows.items()}}
    (out / "task.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    return meta


def load_task(folder: str | Path) -> tuple[dict, list[dict], object]:
    """(task.json, test rows, the task module) of a folder `make_task` wrote."""
    folder = Path(folder)
    if not (folder / "task.json").is_file():
        raise SunfishError(f"{folder} is not a task folder (no task.json); make one with `sunfish tasks make NAME --out DIR`")
    meta = json.loads((folder / "task.json").read_text(encoding="utf-8"))
    return meta, read_rows(folder / "test.jsonl"), task_module(meta["task"])
