import json

import pytest

from sunfish_lib.cli import main
from sunfish_lib.config import get_config
from sunfish_lib.sizing.counts import num_params
from tests.helpers import ROOT, run_cli


def test_check_json_all_ok(capsys):
    assert main(["check", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is True
    names = {c["name"] for c in out["checks"]}
    assert {"import torch", "torch version", "tiny model fwd+bwd", "accelerators"} <= names
    tiny = next(c for c in out["checks"] if c["name"] == "tiny model fwd+bwd")
    assert f"{num_params(get_config('tiny')):,} params" in tiny["detail"]  # the exact, torch-free count


@pytest.mark.slow
def test_check_table_subprocess():
    r = run_cli("check")
    assert r.returncode == 0, r.stderr
    assert "all checks passed" in r.stdout and "tiny model fwd+bwd" in r.stdout


# User errors of every command: tests/test_bad_inputs.py (the bad-input table).


def test_parser_and_runs_command_start_without_torch():
    """Building every subcommand's parser and `sunfish runs` import neither torch nor Lightning."""
    import subprocess
    import sys

    code = ("import sys; from sunfish_lib.cli import build_parser, main; build_parser(); "
            "main(['runs', sys.argv[1], '--json']); "
            "print(sorted(m for m in ('torch', 'pytorch_lightning') if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code, str(ROOT / "tests")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "[]"
