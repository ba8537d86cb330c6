"""runs.discovery: the one answer to "which model does this run, workbook or runs tree hold"."""

from __future__ import annotations

import json
import os
from pathlib import Path

from sunfish_lib.runs.discovery import (
    BASELINES, MAIN_RUN, find_checkpoints, find_model, has_model, model_stamp, run_objective, workbook_checkpoint,
    workbook_folder, workbook_model,
)


def _run(folder: Path, objective: str, *, export: bool = True, ckpt: bool = False, mtime: float | None = None,
         overfit: int = 0) -> Path:
    """A run folder as discovery sees it: config.json, and export/ weights and/or checkpoints/last.ckpt."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"diffusion": {"objective": objective}}))
    if export:
        (folder / "export").mkdir()
        (folder / "export" / "model.safetensors").write_bytes(b"w")
    if ckpt:
        (folder / "checkpoints").mkdir()
        (folder / "checkpoints" / "last.ckpt").write_bytes(b"c")
    if overfit:
        (folder / "status.json").write_text(json.dumps({"overfit_batches": overfit}))
    if mtime is not None:
        os.utime(folder, (mtime, mtime))
    return folder


def test_find_checkpoints_sees_exports_and_checkpoints_newest_first_within_depth(tmp_path):
    old = _run(tmp_path / "a", "masked", mtime=1_000)
    new = _run(tmp_path / "b", "ar", export=False, ckpt=True, mtime=2_000)
    _run(tmp_path / "c", "masked", export=False)  # config only: no model
    nested = _run(tmp_path / "wb" / MAIN_RUN, "masked", mtime=500)
    os.utime(new, (2_000, 2_000))  # writing last.ckpt touched it
    assert find_checkpoints(tmp_path, depth=1) == [new, old]
    assert find_checkpoints(tmp_path, depth=2) == [new, old, nested]
    assert find_checkpoints(tmp_path / "missing") == []
    assert [has_model(p) for p in (old, new, tmp_path / "c")] == [True, True, False]


def test_find_model_takes_the_shallowest_of_the_objective_never_excluded_or_overfit(tmp_path):
    wb = tmp_path / "wb"
    (wb).mkdir()
    (wb / "run.json").write_text("{}")
    deep = _run(wb / BASELINES / "ar", "ar")
    assert find_model([wb], "ar") == deep
    overfit = _run(wb / "03_overfit", "ar", overfit=3)
    assert find_model([wb], "ar") == deep  # an overfit check memorised a few batches
    top = _run(wb / "ar-parent", "ar")
    assert find_model([wb], "ar") == top
    assert find_model([wb], "ar", exclude=top) == deep
    assert find_model([None, tmp_path / "none", wb], "masked") is None
    assert workbook_folder(deep / "export") == wb and workbook_folder(tmp_path) is None
    assert run_objective(overfit) == "ar" and run_objective(tmp_path) is None


def test_workbook_model_and_checkpoint_follow_04(tmp_path):
    wb = tmp_path / "wb"
    assert workbook_model(wb, "masked") is None and workbook_checkpoint(None, wb) is None
    main = _run(wb / MAIN_RUN, "masked")
    ar = _run(wb / BASELINES / "ar", "ar", export=False, ckpt=True)  # not exported yet
    assert workbook_model(wb, "masked") == main
    assert workbook_model(wb, "ar") is None
    (ar / "export").mkdir()
    (ar / "export" / "model.safetensors").write_bytes(b"w")
    assert workbook_model(wb, "ar") == ar
    assert workbook_checkpoint(None, wb) == str(main)
    assert workbook_checkpoint("given", wb) == "given"
    assert workbook_model(None, "ar") is None


def test_model_stamp_changes_when_the_weights_are_rewritten(tmp_path):
    run = _run(tmp_path / "r", "masked")
    weights = run / "export" / "model.safetensors"
    os.utime(weights, ns=(10**18, 10**18))
    first = model_stamp(run)
    os.utime(weights, ns=(2 * 10**18, 2 * 10**18))
    assert model_stamp(run) != first and model_stamp(run)[1] == 2 * 10**18
    assert model_stamp(tmp_path / "none") == (str(tmp_path / "none"), None)
