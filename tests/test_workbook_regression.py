"""bench/workbook_regression.py: two workbook runs' compare.json, equal to the last digit or each difference named."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench" / "workbook_regression.py"


def _run_folder(root: Path, val_loss: float, wall_s: float) -> Path:
    (root / "09_compare_runs").mkdir(parents=True)
    metrics = [{"run": "04_train", "val_loss": val_loss, "wall_s": wall_s, "objective": "masked"},
               {"run": "04_baselines/ar", "val_loss": 3.5, "wall_s": wall_s, "objective": "ar"}]
    diff = {"train.init_from": {"04_train": str(root / "08_ar_to_diffusion" / "converted"), "04_baselines/ar": None}}
    (root / "09_compare_runs" / "compare.json").write_text(json.dumps({"metrics": metrics, "config_diff": diff}))
    return root


def _bench(*args):
    return subprocess.run([sys.executable, str(BENCH), *map(str, args)], capture_output=True, text=True, timeout=60)


def test_equal_numbers_pass_whatever_the_wall_time_and_run_folder(tmp_path):
    a, b = _run_folder(tmp_path / "a", 4.25, 1.0), _run_folder(tmp_path / "b", 4.25, 9.0)
    r = _bench(a, b)
    assert r.returncode == 0, r.stdout + r.stderr
    last = json.loads(r.stdout.splitlines()[-1])
    assert (last["values"], last["differ"]) == (7, 0)  # 2 runs x 3 fields (wall_s left out) + 1 config_diff key


def test_a_moved_number_is_named_and_fails(tmp_path):
    a, b = _run_folder(tmp_path / "a", 4.25, 1.0), _run_folder(tmp_path / "b", 4.250000001, 1.0)
    r = _bench(a, b)
    assert r.returncode == 1
    assert r.stdout.splitlines()[0] == "04_train val_loss: 4.25 -> 4.250000001"
    assert json.loads(r.stdout.splitlines()[-1])["differ"] == 1


def test_a_folder_without_compare_json_is_one_line(tmp_path):
    r = _bench(tmp_path, tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().endswith("give a workbook run folder (sunfish workbook [--smoke])")
