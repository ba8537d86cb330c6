import json
import subprocess
import sys

import pytest

from sunfish_lib.cli import main
from sunfish_lib.errors import SunfishError
from sunfish_lib.runs.registry import read_notebook_run
from sunfish_lib.notebook.params import notebook_parameters, parse_param_value
from sunfish_lib.notebook.runner import NotebookFailed, run_notebooks
from tests.helpers import NOTEBOOKS, ROOT, write_notebook
from tests.notebook_display import NotebookOutputs


def _notebook(path, body: str, params: str = "smoke = False\nx = 1"):
    return write_notebook(path, params, body)


def test_parse_param_value():
    assert parse_param_value("3") == 3 and parse_param_value("0.5") == 0.5
    assert parse_param_value("True") is True and parse_param_value("false") is False
    assert parse_param_value("None") is None and parse_param_value("[48, 20]") == [48, 20]
    assert parse_param_value("1.4B") == "1.4B" and parse_param_value("hello world") == "hello world"


def test_notebook_parameters_reads_literals():
    params = notebook_parameters(NOTEBOOKS / "00_setup_check.ipynb")
    assert params == {"smoke": False}


@pytest.mark.slow
def test_run_folder_contents(tmp_path):
    nb = _notebook(tmp_path / "nb.ipynb", "open('out.txt', 'w').write(str(x * 2))\nprint('x is', x)")
    code = main(["run", str(nb), "-p", "x", "21", "--runs-dir", str(tmp_path / "runs")])
    assert code == 0
    (run_dir,) = list((tmp_path / "runs").iterdir())
    assert run_dir.name.endswith("-nb")
    assert json.loads((run_dir / "params.json").read_text()) == {"nb.ipynb": {"x": 21}}
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "finished" and len(info["git"]["commit"]) == 40
    freeze = (run_dir / "pip-freeze.txt").read_text()
    assert "torch==2.13.0" in freeze and "papermill==2.7.0" in freeze
    outputs = NotebookOutputs.read(run_dir / "nb.ipynb").streams
    assert "x is 21" in outputs


def test_failing_notebook_keeps_traceback_and_exits_nonzero(tmp_path, capsys):
    nb = _notebook(tmp_path / "bad.ipynb", "raise RuntimeError('boom at step 3')")
    code = main(["run", str(nb), "--runs-dir", str(tmp_path / "runs")])
    assert code == 1
    err = capsys.readouterr().err
    assert "RuntimeError: boom at step 3" in err
    (run_dir,) = list((tmp_path / "runs").iterdir())
    tb = json.dumps(NotebookOutputs.read(run_dir / "bad.ipynb").outputs)
    assert "boom at step 3" in tb and "Traceback" in tb or "RuntimeError" in tb
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"


def test_run_notebooks_raises_for_library_callers(tmp_path):
    nb = _notebook(tmp_path / "bad.ipynb", "1/0")
    with pytest.raises(NotebookFailed, match="ZeroDivisionError"):
        run_notebooks([nb], runs_parent=tmp_path)


def test_cell_raising_a_user_error_exits_2_with_its_line(tmp_path, capsys):
    nb = _notebook(tmp_path / "typo.ipynb", "from sunfish_lib.config import get_config\nget_config('7B')")
    code = main(["run", str(nb), "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    (run_dir,) = list((tmp_path / "runs").iterdir())
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: unknown preset '7B'; choose one of tiny")
    assert f"executed copy: {run_dir / 'typo.ipynb'}" in err and f"--resume {run_dir}" in err


COUNT = "import pathlib\nc = pathlib.Path('{name}.count')\nc.write_text(str(int(c.read_text() if c.exists() else 0) + 1))"


@pytest.mark.slow
def test_workbook_resume_skips_finished_notebooks_and_reruns_the_failed_one(tmp_path, capsys):
    """a ok, b fails (its marker file is missing), c never ran; --resume runs b and c only."""
    nbs = [_notebook(tmp_path / "a.ipynb", COUNT.format(name="a")),
           _notebook(tmp_path / "b.ipynb", COUNT.format(name="b") + "\nassert pathlib.Path('marker').exists(), 'no marker'"),
           _notebook(tmp_path / "c.ipynb", COUNT.format(name="c"), params="smoke = False\nx = 1\nrun_dir = None")]
    with pytest.raises(NotebookFailed, match="AssertionError: no marker"):
        run_notebooks(nbs, {"a.ipynb": {"x": 5}, "c.ipynb": {"x": 7}}, name="wb", runs_parent=tmp_path / "runs")
    (run_dir,) = list((tmp_path / "runs").iterdir())
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "failed" and [e["status"] for e in info["notebooks"]] == ["ok", "failed"]
    assert json.loads((run_dir / "params.json").read_text())["c.ipynb"] == {"x": 7, "run_dir": str(run_dir)}
    assert read_notebook_run(run_dir).status == "failed" and "no marker" in read_notebook_run(run_dir).error

    assert main(["workbook", "--resume", str(run_dir)]) == 1  # still failing: a skipped again, b attempt 2
    (tmp_path / "marker").write_text("")
    capsys.readouterr()  # what the first run and the failed resume printed
    assert main(["workbook", "--resume", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert "executed b.ipynb" in out and "executed c.ipynb" in out and "executed a.ipynb" not in out
    assert "[2/3] b.ipynb started" in out and "[3/3] c.ipynb ok in" in out and "a.ipynb started" not in out
    assert "| a.ipynb | ok |" in (run_dir / "summary.md").read_text()  # the summary covers the whole plan
    counts = {n: int((tmp_path / f"{n}.count").read_text()) for n in "abc"}
    assert counts == {"a": 1, "b": 3, "c": 1}
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "finished" and info["attempt"] == 3 and len(info["resumed"]) == 2
    by_name = {e["notebook"]: e for e in info["notebooks"]}
    assert [(a["attempt"], a["status"]) for a in by_name["b.ipynb"]["attempts"]] == [(1, "failed"), (2, "failed"), (3, "ok")]
    record = read_notebook_run(run_dir)  # what `sunfish runs` shows
    assert (record.status, record.error, record.notebooks) == ("finished", None, ["a.ipynb", "b.ipynb", "c.ipynb"])
    assert [a["attempt"] for a in by_name["a.ipynb"]["attempts"]] == [1]
    assert [a["attempt"] for a in by_name["c.ipynb"]["attempts"]] == [3]
    assert by_name["b.ipynb"]["attempts"][0]["executed"] == "b.attempt1.ipynb"
    def outputs(name):
        return json.dumps(NotebookOutputs.read(run_dir / name).outputs)
    assert "AssertionError" in outputs("b.attempt2.ipynb") and "AssertionError" not in outputs("b.ipynb")
    executed_c = NotebookOutputs.read(run_dir / "c.ipynb").nb
    assert "x = 7" in executed_c.cells[1].source  # the injected parameters came from params.json

    assert main(["run", "--resume", str(run_dir)]) == 0  # nothing left: nothing runs
    assert "nothing to resume" in capsys.readouterr().out
    assert int((tmp_path / "b.count").read_text()) == 3


def test_user_error_subclasses_are_known_by_name_without_their_modules():
    """Only the class name crosses the kernel boundary: DataStreamError (raised by sunfish_lib.data) is a user
    error to a CLI that never imported the data package, and a RuntimeError is not."""
    code = ("import sys; from sunfish_lib.errors import is_user_error_name\n"
            "assert 'sunfish_lib.data.retry' not in sys.modules\n"
            "print(*(is_user_error_name(n) for n in ('DataStreamError', 'ConfigError', 'RuntimeError')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.stdout.split() == ["True", "True", "False"], r.stderr


@pytest.mark.slow
def test_resume_after_a_kill_keeps_the_interrupted_copy(tmp_path):
    nb = _notebook(tmp_path / "b.ipynb", "import pathlib\nassert pathlib.Path('marker').exists(), 'no marker'")
    with pytest.raises(NotebookFailed):
        run_notebooks([nb], runs_parent=tmp_path / "runs")
    (run_dir,) = list((tmp_path / "runs").iterdir())
    info = json.loads((run_dir / "run.json").read_text())  # as a SIGKILL mid-notebook leaves it
    entry = info["notebooks"][0]
    for record in (info, entry, entry["attempts"][0]):
        record["status"] = "running"
    info["pid"] = 2**22 + 12345  # above Linux's pid limit: no such process
    (run_dir / "run.json").write_text(json.dumps(info))
    (tmp_path / "marker").write_text("")
    assert main(["run", "--resume", str(run_dir)]) == 0
    attempts = json.loads((run_dir / "run.json").read_text())["notebooks"][0]["attempts"]
    assert [(a["attempt"], a["status"], a.get("executed")) for a in attempts] == [
        (1, "interrupted", "b.attempt1.ipynb"), (2, "ok", None)]
    assert (run_dir / "b.attempt1.ipynb").is_file() and (run_dir / "b.ipynb").is_file()


def test_resume_refuses_a_run_alive_on_another_host_until_its_files_go_stale(tmp_path):
    import json
    import os
    import time

    from sunfish_lib.notebook.runner import _resumable_info

    run = tmp_path / "run"
    run.mkdir()
    info = {"status": "running", "notebooks": [], "plan": ["a.ipynb"], "pid": 1, "hostname": "another-host"}
    (run / "run.json").write_text(json.dumps(info))
    with pytest.raises(SunfishError, match="is still running"):  # just written: alive elsewhere
        _resumable_info(run)
    old = time.time() - 3600
    os.utime(run / "run.json", (old, old))
    assert _resumable_info(run)["hostname"] == "another-host"  # not updated for an hour: killed, resumable


def test_paths_printed_for_a_command_are_valid_at_the_checkout_root(tmp_path, monkeypatch):
    """A notebook runs in notebooks/: its `../runs/x` is `runs/x` at the root (06 prints the command)."""
    from sunfish_lib.runs.paths import from_repo_root

    monkeypatch.chdir(NOTEBOOKS)
    assert from_repo_root("../runs/20261207-wb/04_train") == "runs/20261207-wb/04_train"
    assert from_repo_root(tmp_path / "elsewhere") == str(tmp_path / "elsewhere")  # outside the checkout: absolute
