import json

import nbformat
import pytest

from sunfish_lib.cli import main
from sunfish_lib.runs import NotebookFailed, notebook_parameters, parse_param_value, run_notebooks
from tests.helpers import NOTEBOOKS


def _notebook(path, body: str, params: str = "smoke = False\nx = 1"):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]}), nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


def test_parse_param_value():
    assert parse_param_value("3") == 3 and parse_param_value("0.5") == 0.5
    assert parse_param_value("True") is True and parse_param_value("false") is False
    assert parse_param_value("None") is None and parse_param_value("[48, 20]") == [48, 20]
    assert parse_param_value("1.4B") == "1.4B" and parse_param_value("hello world") == "hello world"


def test_notebook_parameters_reads_literals():
    params = notebook_parameters(NOTEBOOKS / "00_setup_check.ipynb")
    assert params == {"smoke": False}


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
    executed = nbformat.read(str(run_dir / "nb.ipynb"), as_version=4)
    outputs = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    assert "x is 21" in outputs


def test_failing_notebook_keeps_traceback_and_exits_nonzero(tmp_path, capsys):
    nb = _notebook(tmp_path / "bad.ipynb", "raise RuntimeError('boom at step 3')")
    code = main(["run", str(nb), "--runs-dir", str(tmp_path / "runs")])
    assert code == 1
    err = capsys.readouterr().err
    assert "RuntimeError: boom at step 3" in err
    (run_dir,) = list((tmp_path / "runs").iterdir())
    executed = nbformat.read(str(run_dir / "bad.ipynb"), as_version=4)
    tb = json.dumps([o for c in executed.cells for o in c.get("outputs", [])])
    assert "boom at step 3" in tb and "Traceback" in tb or "RuntimeError" in tb
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"


def test_run_notebooks_raises_for_library_callers(tmp_path):
    nb = _notebook(tmp_path / "bad.ipynb", "1/0")
    with pytest.raises(NotebookFailed, match="ZeroDivisionError"):
        run_notebooks([nb], runs_parent=tmp_path)
