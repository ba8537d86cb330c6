import json

import pytest

from sunfish_lib.cli import main
from tests.helpers import run_cli


def test_check_json_all_ok(capsys):
    assert main(["check", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is True
    names = {c["name"] for c in out["checks"]}
    assert {"import torch", "torch version", "tiny model fwd+bwd", "accelerators"} <= names
    tiny = next(c for c in out["checks"] if c["name"] == "tiny model fwd+bwd")
    assert "1,461,376 params" in tiny["detail"]


def test_check_table_subprocess():
    r = run_cli("check")
    assert r.returncode == 0, r.stderr
    assert "all checks passed" in r.stdout and "tiny model fwd+bwd" in r.stdout


@pytest.mark.parametrize("argv,needle", [
    (["bogus"], "invalid choice: 'bogus'"),
    (["run"], "the following arguments are required: notebook"),
    (["run", "missing.ipynb"], "notebook missing.ipynb does not exist"),
    (["run", "README.md"], "is not a notebook (.ipynb)"),
    (["run", "notebooks/00_setup_check.ipynb", "-p", "nonsense", "1"], "has no parameter 'nonsense'"),
    (["workbook", "--only", "99"], "--only 99 matches no notebook"),
])
def test_user_errors_one_line_exit_2(argv, needle, capsys, tmp_path):
    code = main(argv + (["--runs-dir", str(tmp_path)] if argv[0] in ("run", "workbook") and len(argv) > 1 else []))
    err = capsys.readouterr().err
    assert code == 2
    assert needle in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_user_error_subprocess_no_traceback():
    r = run_cli("run", "nope.ipynb")
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["error: notebook nope.ipynb does not exist; see notebooks/ for the workbook"]
