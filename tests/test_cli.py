import json

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


# User errors of every command: tests/test_bad_inputs.py (the bad-input table).
