"""What a notebook run shows while it runs and when it ends: progress lines, summary.md, report.html."""

from __future__ import annotations

import io
import json
import os
import time

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpecManager

from sunfish_lib.cli import main
from sunfish_lib.runs.progress import TrainingWatch, duration, notebook_line, training_lines
from sunfish_lib.notebook.report import closing_text, summary_markdown, write_report
from sunfish_lib.notebook.runner import workbook_notebooks
from tests.helpers import write_notebook

PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")


def _status(folder, **info):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "status.json").write_text(json.dumps(info))


def test_duration_reads_like_a_person_says_it():
    assert [duration(s) for s in (0, 42.4, 250, 3720)] == ["0 s", "42 s", "4 min 10 s", "1 h 02 min"]
    assert notebook_line(4, 10, "04_train.ipynb", "ok", seconds=642, elapsed=785) == \
        "[4/10] 04_train.ipynb ok in 10 min 42 s (elapsed 13 min 05 s)"


def test_training_lines_read_step_rate_loss_and_eta_from_status_files(tmp_path):
    _status(tmp_path / "04_train", state="running", step=300, max_steps=1500, elapsed_s=100.0,
            metrics={"train/loss": 5.1234, "perf/tokens_per_s": 2712.4})
    _status(tmp_path / "04_baselines" / "ar", state="finished", step=1500, max_steps=1500, elapsed_s=400.0,
            metrics={"train/loss": 3.5})
    (tmp_path / "not_a_run").mkdir()
    (tmp_path / "not_a_run" / "status.json").write_text("{ half written")
    lines = {t.name: t for t in training_lines(tmp_path)}
    assert set(lines) == {"04_train", "04_baselines/ar"}
    main_run = lines["04_train"]
    assert (main_run.step, main_run.max_steps, main_run.loss) == (300, 1500, pytest.approx(5.1234))
    assert main_run.eta_s == pytest.approx(100.0 / 300 * 1200)  # the rate so far, over the steps left
    assert main_run.text() == "  training 04_train: step 300/1,500 · 2,712 tok/s · loss 5.123 · ETA 6 min 40 s"
    assert lines["04_baselines/ar"].text().endswith("loss 3.500 · finished")


def test_training_lines_skip_runs_older_than_the_notebook(tmp_path):
    _status(tmp_path / "old", state="finished", step=8, max_steps=8, elapsed_s=1.0)
    old = time.time() - 3600
    os.utime(tmp_path / "old" / "status.json", (old, old))
    _status(tmp_path / "new", state="running", step=0, max_steps=8, elapsed_s=0.0)
    assert [t.name for t in training_lines(tmp_path, since=time.time() - 60)] == ["new"]
    assert training_lines(tmp_path, since=time.time() - 60)[0].eta_s is None  # no rate before the first step


def test_watch_prints_a_run_only_when_it_moved(tmp_path):
    out = io.StringIO()
    watch = TrainingWatch(tmp_path, out=out, live=False)
    _status(tmp_path / "r", state="running", step=10, max_steps=100, elapsed_s=5.0, metrics={})
    assert len(watch.poll()) == 1
    assert watch.poll() == []  # unchanged: nothing new to say
    _status(tmp_path / "r", state="running", step=20, max_steps=100, elapsed_s=10.0, metrics={})
    assert [line.split(": ")[1].split(" · ")[0] for line in watch.poll()] == ["step 20/100"]


def _executed(path, outputs_per_cell):
    nb = nbformat.v4.new_notebook()
    for outputs in outputs_per_cell:
        cell = nbformat.v4.new_code_cell("x = 1")
        cell.outputs = [nbformat.from_dict(o) for o in outputs]
        nb.cells.append(cell)
    nbformat.write(nb, path)


WIDGET = {"output_type": "display_data", "metadata": {},
          "data": {"application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2,
                                                                 "version_minor": 0},
                   "text/plain": "VBox(children=(Dropdown(options=('a',)),))"}}
FIGURE = {"output_type": "display_data", "metadata": {}, "data": {"image/png": PNG, "text/plain": "<Figure>"}}


def _run_folder(tmp_path):
    run = tmp_path / "20261207-170000-workbook"
    run.mkdir()
    _executed(run / "03_overfit.ipynb", [[FIGURE], [{"output_type": "stream", "name": "stdout",
                                                      "text": "PASS: loss 0.012 after 60 steps\n"}]])
    _executed(run / "06_sampling.ipynb", [[WIDGET, FIGURE], [WIDGET]])
    info = {"status": "failed", "seconds": 130.0, "git": {"commit": "0123456789abcdef"},
            "plan": [{"notebook": n} for n in ("03_overfit.ipynb", "06_sampling.ipynb", "07_x.ipynb")],
            "notebooks": [{"notebook": "03_overfit.ipynb", "status": "ok", "attempts": [{"seconds": 100.0}]},
                          {"notebook": "06_sampling.ipynb", "status": "failed",
                           "attempts": [{"seconds": 30.0, "reason": "cell 4: ValueError: boom"}]}]}
    (run / "run.json").write_text(json.dumps(info))
    (run / "04_train").mkdir()
    (run / "04_train" / "likelihoods.json").write_text(json.dumps([
        {"model": "masked", "kind": "ELBO (upper bound)", "nats_per_token": 4.9122, "stderr": 0.0312,
         "perplexity": 135.9, "bits_per_byte": 3.04},
        {"model": "unigram", "kind": "unigram NLL", "nats_per_token": 5.847, "stderr": 0.0, "perplexity": 346.0,
         "bits_per_byte": 3.62}]))
    return run


def test_summary_reads_status_times_tables_and_closing_outputs_from_the_run(tmp_path):
    text = summary_markdown(_run_folder(tmp_path))
    assert "Status **failed**, 2 min 10 s in all, commit `0123456789`" in text
    assert "| 03_overfit.ipynb | ok | 1 min 40 s |" in text
    assert "| 06_sampling.ipynb | failed (cell 4: ValueError: boom) | 30 s |" in text
    assert "| 07_x.ipynb | not run | - |" in text
    assert "| masked | ELBO (upper bound) | 4.912 | 0.031 | 135.9 | 3.040 |" in text
    assert "PASS: loss 0.012 after 60 steps" in text  # 03's closing output
    assert "VBox(children" not in text


def test_closing_text_skips_widget_reprs_and_empty_cells(tmp_path):
    path = tmp_path / "nb.ipynb"
    _executed(path, [[{"output_type": "stream", "name": "stdout", "text": "the finding\n"}], [WIDGET], []])
    assert closing_text(path) == "the finding"


@pytest.mark.slow
def test_report_pages_embed_figures_and_leave_out_widget_reprs(tmp_path):
    run = _run_folder(tmp_path)
    summary, page = write_report(run)
    assert summary.read_text() == summary_markdown(run)
    index = page.read_text()
    assert 'href="report/03_overfit.html"' in index and 'href="report/06_sampling.html"' in index
    assert "<table>" in index  # the summary's tables render as tables
    sampling = (run / "report" / "06_sampling.html").read_text()
    assert "data:image/png;base64," + PNG[:20] in sampling
    assert "VBox(children" not in sampling and "widget-view+json" not in sampling


@pytest.mark.slow
def test_a_notebook_run_prints_start_and_end_lines_no_kernel_chatter_and_writes_its_report(tmp_path, capfd):
    nb = write_notebook(tmp_path / "one.ipynb", "smoke = False", "print('the finding: 42')")
    assert main(["run", str(nb), "--runs-dir", str(tmp_path / "runs")]) == 0
    out, err = capfd.readouterr()
    (run,) = list((tmp_path / "runs").iterdir())
    assert "[1/1] one.ipynb started" in out and "[1/1] one.ipynb ok in " in out
    assert "Kernel is running over TCP" not in out + err
    assert "the finding: 42" in (run / "summary.md").read_text()
    assert (run / "report.html").is_file() and (run / "report" / "one.html").is_file()


def test_notebooks_name_the_installed_kernel_so_opening_one_does_not_modify_it():
    """JupyterLab rewrites a saved kernelspec that differs from the installed one, marking the notebook modified."""
    installed = KernelSpecManager().get_kernel_spec("python3")
    notebooks = workbook_notebooks()
    assert len(notebooks) >= 10
    for path in notebooks:
        spec = nbformat.read(path, as_version=4).metadata["kernelspec"]
        assert (spec["name"], spec["display_name"]) == ("python3", installed.display_name), path.name
