"""Which model a run folder, a workbook or a runs tree holds: the one answer.

A run folder holds a model when it has an export (`export/model.safetensors`) or a last
checkpoint (`checkpoints/last.ckpt`). A workbook run (`sunfish workbook`) keeps its main model
in `04_train/` and the equal-budget models of the other objectives in `04_baselines/<objective>/`.
The sampling panel, the judge search, the workbook's train-or-reuse and notebooks 05-08 ask here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable, Sequence

from sunfish_lib.io.files import read_json

EXPORT_WEIGHTS = Path("export") / "model.safetensors"
"""An exported run's weights, relative to its folder (written by `io.export.export_model`)."""
LAST_CHECKPOINT = Path("checkpoints") / "last.ckpt"
"""The Lightning checkpoint a run resumes from, relative to its folder."""
BEST_CHECKPOINT = "best-step{step:06d}"
"""A checkpoint kept at a validation (`train.keep_best`), named by the optimizer steps trained, under checkpoints/."""
MAIN_RUN = "04_train"
"""The workbook's main training run (notebook 04), relative to the workbook's run folder."""
BASELINES = "04_baselines"
"""The workbook's equal-budget runs of the other objectives: `04_baselines/<objective>/`."""


def has_export(folder: str | Path) -> bool:
    """True when `folder` holds an exported model."""
    return (Path(folder) / EXPORT_WEIGHTS).is_file()


def has_model(folder: str | Path) -> bool:
    """True when `folder` holds an exported model or a last checkpoint."""
    return has_export(folder) or (Path(folder) / LAST_CHECKPOINT).is_file()


def model_stamp(path: str | Path) -> tuple[str, int | None]:
    """(path, newest mtime of the model files behind it): changes when the model is re-written.

    `path` is a run folder, an export folder or a checkpoint file; None when none of them exists.
    """
    p = Path(str(path).strip()).expanduser()
    files = [p, p / "model.safetensors", p / EXPORT_WEIGHTS, p / LAST_CHECKPOINT]
    return str(p), max((f.stat().st_mtime_ns for f in files if f.exists()), default=None)


def step_checkpoints(folder: str | Path) -> dict[int, Path]:
    """{optimizer steps trained: checkpoint} of the validation checkpoints a run kept (BEST_CHECKPOINT), by step."""
    pattern = re.compile(rf"^{re.escape(BEST_CHECKPOINT.split('{')[0])}(\d+)\.ckpt$")
    found = {}
    for f in (Path(folder) / "checkpoints").glob("*.ckpt"):
        m = pattern.match(f.name)
        if m:
            found[int(m.group(1))] = f
    return dict(sorted(found.items()))


def run_objective(folder: str | Path) -> str | None:
    """The objective of the model in `folder` (its export's config, else its own), or None."""
    for cfg in (Path(folder) / "export" / "config.json", Path(folder) / "config.json"):
        try:
            return json.loads(cfg.read_text())["diffusion"]["objective"]
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


def find_checkpoints(root: str | Path, depth: int = 2) -> list[Path]:
    """Folders under root, at most `depth` levels down (a workbook's 04_train/ is two), holding a model; newest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found, level = [], [root]
    for _ in range(depth):
        level = [c for d in level for c in _subdirs(d)]
        found += [d for d in level if has_model(d)]
    return sorted(found, key=lambda d: d.stat().st_mtime, reverse=True)


def _subdirs(d: Path) -> list[Path]:
    try:
        return [c for c in d.iterdir() if c.is_dir() and not c.name.startswith(".")]
    except OSError:
        return []


def find_model(roots: Sequence[str | Path | None], objective: str, exclude: str | Path | None = None,
               skip: Callable[[Path], bool] | None = None) -> Path | None:
    """A run folder with a model of `objective` under the first of `roots` that has one (nearest the top).

    Not `exclude`, nor a folder for which `skip(folder)` is true (the judge search skips the sampled
    model's relatives, `runs.lineage`). Overfit checks (notebook 03) are never found: they memorised a few batches.
    """
    left_out = Path(exclude).resolve() if exclude else None
    for root in (Path(r) for r in roots if r):
        found = [d for d in find_checkpoints(root, depth=3)
                 if run_objective(d) == objective and d.resolve() != left_out and not _overfit(d)
                 and not (skip and skip(d))]
        if found:
            return min(found, key=lambda d: len(d.relative_to(root).parts))  # stable: find_checkpoints sorts
    return None


def _overfit(run: Path) -> bool:
    return bool(read_json(run / "status.json").get("overfit_batches"))


def workbook_folder(path: str | Path | None) -> Path | None:
    """The notebook run folder (one with run.json) holding `path`, at most three levels up."""
    if not path:
        return None
    p = Path(path).resolve()
    for d in [p, *p.parents][:4]:
        if (d / "run.json").is_file():
            return d
    return None


def baseline_folder(run_dir: str | Path, objective: str) -> Path:
    """Where a workbook keeps its model of `objective`: 04's folder for its own, else 04_baselines/<objective>."""
    run_dir = Path(run_dir)
    main = run_dir / MAIN_RUN
    if (main / "config.json").is_file() and run_objective(main) == objective:
        return main
    return run_dir / BASELINES / objective


def workbook_model(run_dir: str | Path | None, objective: str) -> Path | None:
    """The workbook's exported model of `objective` under run_dir (04's or its baselines'), or None."""
    if not run_dir:
        return None
    folder = baseline_folder(run_dir, objective)
    return folder if has_export(folder) else None


def workbook_checkpoint(checkpoint: str | Path | None, run_dir: str | Path | None) -> str | None:
    """`checkpoint` if given, else the workbook's `run_dir/04_train` when it holds an exported model."""
    if checkpoint:
        return str(checkpoint)
    if run_dir and has_export(Path(run_dir) / MAIN_RUN):
        return str(Path(run_dir) / MAIN_RUN)
    return None
