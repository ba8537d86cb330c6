"""The run registry (`sunfish runs`) and the compare-runs notebook (09), on real tiny runs.

Run folders are made once for the module (`root`):

    20260101-000000-workbook/          run.json finished (as `sunfish workbook` leaves it), holding
      04_train/                        a finished masked run (what notebook 04 trains there)
    ar-run/                            an ar run, trained 4 steps then resumed to 6 (other objective and lr)
    failed-run/                        training that raised at step 2 (an injected error)
    sub-run/                           `python -m sunfish_lib.cli train` in a subprocess: running, then SIGKILLed
    20260101-000001-dead-notebook/     run.json 'running' with the pid of a process that has exited
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import pytorch_lightning as pl

from sunfish_lib.cli import main
from sunfish_lib.eval.compare import METRIC_COLUMNS, config_diff, pick_runs
from sunfish_lib.errors import SunfishError
from sunfish_lib.eval.evaluate import evaluate_run
from sunfish_lib.io.files import read_json, write_json
from sunfish_lib.runs.registry import format_table, infer_state, list_runs, process_identity, read_training_run
from sunfish_lib.notebook.runner import record_environment, run_notebooks
from sunfish_lib.sampling.analysis import token_entropy
from sunfish_lib.train.launch import launch
from sunfish_lib.io.metrics import read_metrics
from sunfish_lib.train.trainer import train
from tests.notebook_display import NotebookOutputs
from tests.helpers import NOTEBOOKS
from tests.train_helpers import small_config

WORKBOOK = "20260101-000000-workbook"


class FailAt(pl.Callback):
    """Raises before optimizer step `step` (an injected training failure)."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise RuntimeError(f"injected failure at step {self.step}\nsecond line of the message")


def _wait_for(predicate, timeout: float, what: str) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _notebook_run(folder, status: str, **extra) -> None:
    folder.mkdir(parents=True)
    record_environment(folder, ["sunfish", "workbook"])
    write_json(folder / "run.json", {**read_json(folder / "run.json"), "status": status, **extra})


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    # the subprocess starts first: it imports torch and Lightning while the in-process runs train
    proc = launch(small_config("masked", max_steps=100_000), root / "sub-run")
    try:
        _notebook_run(root / WORKBOOK, "finished", ended="2026-01-01T00:10:00", seconds=12.5,
                      notebooks=[{"notebook": "04_train.ipynb", "status": "ok", "seconds": 12.5}])
        train(small_config("masked"), root / WORKBOOK / "04_train", progress=False)
        train(small_config("ar", lr=1e-3, max_steps=4), root / "ar-run", progress=False)
        first_start = read_json(root / "ar-run" / "status.json")["started"]
        train(small_config("ar", lr=1e-3), root / "ar-run", progress=False, resume=True)
        with pytest.raises(RuntimeError, match="injected failure"):
            train(small_config("masked"), root / "failed-run", progress=False, callbacks=(FailAt(2),))
        gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        _notebook_run(root / "20260101-000001-dead-notebook", "running", pid=int(gone.stdout))

        def sub_status():
            return read_json(root / "sub-run" / "status.json")

        _wait_for(lambda: (sub_status().get("checkpoint_step") or 0) >= 3 and sub_status().get("step", 0) >= 4,
                  240, "the subprocess run to pass step 4")
        while_running = {r.path: r for r in list_runs([root])}
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    return {"root": root, "while_running": while_running, "pid": proc.pid, "ar_first_start": first_start}


def _by_name(records, root) -> dict:
    return {str(Path(r.path).relative_to(root)): r for r in records}


def test_registry_states_steps_and_metrics(root):
    base = root["root"]
    recs = _by_name(list_runs([base]), base)
    assert set(recs) == {WORKBOOK, f"{WORKBOOK}/04_train", "ar-run", "failed-run", "sub-run",
                         "20260101-000001-dead-notebook"}
    done = recs[f"{WORKBOOK}/04_train"]
    assert (done.kind, done.status, done.objective) == ("train", "finished", "masked")
    assert (done.step, done.checkpoint_step, done.max_steps) == (6, 6, 6)
    rows = read_metrics(base / WORKBOOK / "04_train")
    assert done.metrics["val/loss"] == pytest.approx([r["val/loss"] for r in rows if "val/loss" in r][-1])
    assert math.isfinite(done.metrics["train/loss"]) and 0 < done.wall_s < 600
    assert done.hostname == socket.gethostname() and done.error is None
    wb = recs[WORKBOOK]
    assert (wb.kind, wb.status, wb.notebooks, wb.wall_s) == ("notebooks", "finished", ["04_train.ipynb"], 12.5)
    failed = recs["failed-run"]
    assert (failed.status, failed.step, failed.checkpoint_step) == ("failed", 2, None)
    assert failed.error == "RuntimeError: injected failure at step 2"
    killed = recs["sub-run"]
    assert (killed.status, killed.pid, killed.max_steps) == ("killed", root["pid"], 100_000)
    assert killed.step >= 4 and killed.checkpoint_step >= 3 and killed.error is None
    assert recs["20260101-000001-dead-notebook"].status == "killed"


def test_live_process_is_running(root):
    live = root["while_running"][str(root["root"] / "sub-run")]
    assert (live.status, live.pid, live.hostname) == ("running", root["pid"], socket.gethostname())
    assert live.step >= 4 and live.objective == "masked" and math.isfinite(live.metrics["train/loss"])


def test_resume_keeps_start_counts_attempts_and_continues_wall_time(root):
    run = root["root"] / "ar-run"
    status = read_json(run / "status.json")
    assert status["attempts"] == 2 and status["started"] == root["ar_first_start"]
    assert status["attempt_started"] >= status["started"] and status["step"] == 6
    first = [r["time/elapsed_s"] for r in read_metrics(run) if "time/elapsed_s" in r]
    assert len(first) >= 6 and first == sorted(first), "wall time keeps growing across the resume"


def test_run_without_status_file(root, tmp_path):
    """Folders trained before status.json existed: finished when exported, steps from metrics.csv."""
    legacy = tmp_path / "legacy"
    shutil.copytree(root["root"] / WORKBOOK / "04_train", legacy, ignore=shutil.ignore_patterns("status.json"))
    rec = read_training_run(legacy)
    assert (rec.status, rec.step, rec.max_steps, rec.checkpoint_step, rec.pid) == ("finished", 6, 6, None, None)
    assert rec.wall_s == rec.metrics["time/elapsed_s"] > 0
    shutil.rmtree(legacy / "export")
    assert read_training_run(legacy).status == "unknown"


def test_table_rows(root):
    base = root["root"]
    lines = format_table(list_runs([base]), relative_to=base).splitlines()
    assert lines[0].split() == ["status", "objective", "steps", "train/loss", "val/loss", "wall", "path"]
    rec = _by_name(list_runs([base]), base)[f"{WORKBOOK}/04_train"]
    row = next(line for line in lines if line.rstrip().endswith(f"{WORKBOOK}/04_train"))
    wall = round(rec.wall_s)
    assert row.split() == ["finished", "masked", "6/6", "(ckpt", "6)", f"{rec.metrics['train/loss']:.4f}",
                           f"{rec.metrics['val/loss']:.4f}", f"{wall // 60}m{wall % 60:02d}s", f"{WORKBOOK}/04_train"]
    failed = next(line for line in lines if "failed-run" in line)
    assert failed.startswith("failed") and failed.endswith("failed-run  (RuntimeError: injected failure at step 2)")
    assert next(line for line in lines if line.endswith(WORKBOOK)).split()[:4] == ["finished", "notebooks", "1", "nb"]


def test_cli_json_and_status_filter(root, capsys):
    base = root["root"]
    assert main(["runs", str(base), "--json"]) == 0
    rows = {r["path"]: r for r in json.loads(capsys.readouterr().out)}
    sub = rows[str(base / "sub-run")]
    assert sub["status"] == "killed" and sub["kind"] == "train" and sub["objective"] == "masked"
    assert set(sub) >= {"step", "checkpoint_step", "max_steps", "metrics", "wall_s", "started", "updated", "pid"}
    assert rows[str(base / "ar-run")]["metrics"]["val/loss"] > 0
    assert main(["runs", str(base), "--status", "killed,failed", "--json"]) == 0
    got = sorted((r["status"], r["path"].rsplit("/", 1)[1]) for r in json.loads(capsys.readouterr().out))
    assert got == [("failed", "failed-run"), ("killed", "20260101-000001-dead-notebook"), ("killed", "sub-run")]
    assert main(["runs", str(base), "--status", "running"]) == 0
    assert capsys.readouterr().out.strip() == "no run folders with status running found"


@pytest.mark.parametrize("argv, needle", [
    (["runs", "/nonexistent/runs"], "runs root /nonexistent/runs is not a folder"),
    (["runs", "{root}", "--status", "zombie"], "status 'zombie' is not allowed; choose from running, finished"),
    (["runs", "{root}", "--stale-minutes", "0"], "--stale-minutes 0 must be > 0"),
    (["runs", "--stale-minutes", "soon"], "invalid float value: 'soon'"),
])
def test_cli_bad_arguments_one_line_exit_2(argv, needle, capsys, tmp_path):
    assert main([a.format(root=tmp_path) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0]


def test_infer_state_rules():
    now = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    me = process_identity()
    assert infer_state({**me, "state": "running"}) == "running"
    assert infer_state({**me, "state": "running", "pid_created": me["pid_created"] - 60}) == "killed"  # pid reused
    assert infer_state({**me, "state": "finished"}) == "finished"
    assert infer_state({"state": "weird"}) == "unknown"
    other = {"state": "running", "pid": 1, "hostname": "elsewhere"}
    fresh, stale = (now - timedelta(minutes=5)).isoformat(), (now - timedelta(minutes=11)).isoformat()
    assert infer_state({**other, "updated": fresh}, now=now) == "running"
    assert infer_state({**other, "updated": stale}, now=now) == "killed"
    assert infer_state({**other, "updated": fresh}, now=now, stale_s=60) == "killed"


def test_config_diff_and_token_entropy():
    diff = config_diff({"a": {"model": {"n_layers": 2, "d_model": 64}, "seed": 0},
                        "b": {"model": {"n_layers": 4, "d_model": 64}, "seed": 0, "extra": 1}})
    assert diff == {"model.n_layers": {"a": 2, "b": 4}, "extra": {"a": None, "b": 1}}
    import torch

    ids = torch.tensor([[5, 5, 5, 5], [1, 2, 3, 4], [7, 7, 8, 8]])
    assert token_entropy(ids) == pytest.approx([0.0, math.log(4), math.log(2)])
    assert token_entropy(ids, ids != 8)[2] == pytest.approx(0.0)


def test_pick_runs_defaults(root, monkeypatch, tmp_path):
    base = root["root"]
    assert pick_runs([], base / WORKBOOK) == [base / WORKBOOK / "04_train"]  # what the workbook trained
    empty = base / "20260102-000000-compare"
    empty.mkdir()
    assert pick_runs([], empty, newest=4) == [base / WORKBOOK / "04_train", base / "ar-run"]  # newest finished
    assert pick_runs([], empty, newest=1) == [base / "ar-run"]
    monkeypatch.setenv("SUNFISH_RUNS", str(base))
    assert pick_runs([], None, newest=1) == [base / "ar-run"]
    with pytest.raises(SunfishError, match="is not a training run folder"):
        pick_runs([tmp_path])
    with pytest.raises(SunfishError, match="no finished training runs"):
        pick_runs([], tmp_path / "x")


@pytest.mark.slow
def test_compare_notebook_headless(root, tmp_path):
    base = root["root"]
    nb = NOTEBOOKS / "09_compare_runs.ipynb"
    runs = [str(base / WORKBOOK / "04_train"), str(base / "ar-run")]
    run_dir = run_notebooks([nb], {nb.name: {"smoke": True, "runs": runs}}, runs_parent=tmp_path)
    out = run_dir / "09_compare_runs"
    result = json.loads((out / "compare.json").read_text())
    assert result["runs"] == {f"{WORKBOOK}/04_train": runs[0], "ar-run": runs[1]}
    masked, ar = result["metrics"]
    assert (masked["run"], masked["objective"], masked["eval_kind"]) == (f"{WORKBOOK}/04_train", "masked",
                                                                         "ELBO upper bound")
    assert (ar["run"], ar["objective"], ar["eval_kind"]) == ("ar-run", "ar", "exact NLL")
    assert ar["nats_per_token"] == pytest.approx(evaluate_run(base / "ar-run", val_batches=2, t_samples=2,
                                                              seed=0).nats_per_token)
    for row in (masked, ar):
        assert row["steps"] == 6 and row["tokens"] == 6 * 4 * 32 and row["wall_s"] > 0
        assert row["bits_per_byte"] > 0 and row["perplexity"] == pytest.approx(math.exp(row["nats_per_token"]))
        assert 0 < row["sample_entropy"] <= math.log(16) + 1e-9
    assert masked["denoise_entropy"] > 0 and ar["denoise_entropy"] is None
    diff = result["config_diff"]
    assert diff["diffusion.objective"] == {f"{WORKBOOK}/04_train": "masked", "ar-run": "ar"}
    assert diff["train.lr"] == {f"{WORKBOOK}/04_train": 2e-3, "ar-run": 1e-3}  # the tiny preset is 2e-3
    assert "model.n_layers" not in diff and "train.max_steps" not in diff  # only the fields that differ
    csv_lines = (out / "compare.csv").read_text().splitlines()
    assert csv_lines[0].startswith("run,objective,steps,tokens,wall_s") and len(csv_lines) == 3
    assert (out / "curves.png").stat().st_size > 10_000
    executed = NotebookOutputs.read(run_dir / nb.name)
    text, tables = executed.streams, executed.html
    assert "comparing 2 runs" in text and "exact NLL" in tables
    # the few columns a reader compares (issue 30: not 18); every figure is in compare.csv
    metrics_table = next(t for t in executed.data("text/html") if "held-out nats/token ± SE" in t)
    assert metrics_table.count("<th>") == 7 and metrics_table.count("<tr>") == 3
    assert f"<td style='white-space:nowrap'>{ar['nats_per_token']:.3f} ± {ar['stderr']:.3f}</td>" in metrics_table
    assert f"{ar['sample_entropy']:.3f} ({ar['reference_entropy']:.3f})" in metrics_table
    assert csv_lines[0].split(",") == list(METRIC_COLUMNS) and f"every figure of every run: {out / 'compare.csv'}" in text
    assert "<td style='white-space:nowrap'>diffusion.objective</td>" in tables and "<th>ar-run</th>" in tables
    assert executed.count("image/png") == 2  # the curves and the speed–quality plane
    assert (out / "speed_quality.png").stat().st_size > 5_000
    assert all(r["passes_per_token"] > 0 for r in (masked, ar)) and ar["passes_per_token"] == 1.0
    shown = "\n".join(executed.data("text/markdown"))
    assert f"{ar['nats_per_token']:.3f} ± {ar['stderr']:.3f} nats/token" in shown
    # the papermill run folder itself is in the registry, finished
    (rec,) = [r for r in list_runs([tmp_path]) if r.kind == "notebooks"]
    assert (rec.status, rec.notebooks) == ("finished", ["09_compare_runs.ipynb"])


def test_overfit_checks_are_not_compared_by_default(root, tmp_path):
    """A run trained with overfit_batches (03_overfit) records it; pick_runs leaves it out unless named."""
    from sunfish_lib.io.files import write_json

    wb = tmp_path / WORKBOOK
    shutil.copytree(root["root"] / WORKBOOK / "04_train", wb / "04_train")
    shutil.copytree(root["root"] / WORKBOOK / "04_train", wb / "03_overfit")
    status = read_json(wb / "03_overfit" / "status.json")
    assert status["overfit_batches"] == 0  # what train() recorded for the normal run
    write_json(wb / "03_overfit" / "status.json", {**status, "overfit_batches": 3})
    records = {Path(r.path).name: r for r in list_runs([wb])}
    assert (records["03_overfit"].overfit_batches, records["04_train"].overfit_batches) == (3, 0)
    assert pick_runs([], wb) == [wb / "04_train"]
    assert pick_runs([wb / "03_overfit"]) == [wb / "03_overfit"]


def test_train_records_overfit_batches(tmp_path):
    from sunfish_lib.train.trainer import train
    from tests.train_helpers import small_config

    train(small_config("ar", max_steps=2), tmp_path, progress=False, overfit_batches=2)
    assert read_json(tmp_path / "status.json")["overfit_batches"] == 2


def test_final_metrics_sample_with_the_requested_steps_and_curves_end_on_the_table_tokens(root, monkeypatch):
    import sunfish_lib.eval.compare as gen_module  # compare imports `sample` at its top: spy on its name
    from sunfish_lib.eval.compare import curves, final_metrics

    run = root["root"] / WORKBOOK / "04_train"
    seen = {}
    real = gen_module.sample

    def spy(*args, **kw):
        seen.update(kw)
        return real(*args, **kw)

    monkeypatch.setattr(gen_module, "sample", spy)
    row = final_metrics(run, val_batches=1, t_samples=1, num_samples=1, length=8, steps=3)
    assert seen["steps"] == 3  # the reverse steps asked for, not the 6 training steps
    assert row["steps"] == 6 and row["tokens"] == 6 * 4 * 32
    assert max(r["tokens"] for r in curves(run)) == row["tokens"]


def test_status_write_failures_never_stop_training(tmp_path, monkeypatch, caplog):
    """A full disk or a flaky mount under status.json: training goes on, warned once, no .tmp left behind."""
    import errno

    import sunfish_lib.train.status as status_module
    from sunfish_lib.train.trainer import train
    from tests.train_helpers import small_config

    calls = []

    def failing(path, obj):
        calls.append(obj["state"])
        if len(calls) > 1:  # the first write (running) lands; every later one fails
            raise OSError(errno.ENOSPC, "No space left on device")
        write_json(path, obj)

    monkeypatch.setattr(status_module, "write_json", failing)
    with caplog.at_level("WARNING", logger="sunfish_lib.train.status"):
        out = train(small_config("ar"), tmp_path / "run", progress=False)
    assert out["global_step"] == 6 and len(calls) > 2 and calls[-1] == "finished"
    assert [r.message for r in caplog.records].count(
        f"could not write {tmp_path / 'run' / 'status.json'} (No space left on device); "
        "sunfish runs will show a stale status") == 1
    assert read_json(tmp_path / "run" / "status.json")["state"] == "running"  # stale, as warned


def test_write_json_leaves_no_tmp_when_the_write_fails(tmp_path):
    target = tmp_path / "status.json"
    target.mkdir()  # replacing a folder by a file fails
    with pytest.raises(OSError):
        write_json(target, {"state": "running"})
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]
