"""pyproject.toml and environment.yml carry the same pins; the README's commands are what CI runs."""

import re
import tomllib

from tests.helpers import ROOT


def _pyproject_pins() -> dict[str, str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = data["dependencies"] + data["optional-dependencies"]["dev"]
    return dict(_split(d) for d in deps)


def _split(req: str) -> tuple[str, str]:
    name, _, version = req.partition("==")
    assert version, f"{req!r} is not pinned with =="
    return name.strip().lower(), version.strip()


def _environment_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "environment.yml").read_text().splitlines():
        m = re.match(r"^\s+-\s+([A-Za-z0-9_.\-]+)==([^\s#]+)", line)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def test_pins_agree():
    py, env = _pyproject_pins(), _environment_pins()
    assert py == env
    assert py["torch"] == "2.13.0"


def test_environment_python_311():
    text = (ROOT / "environment.yml").read_text()
    assert re.search(r"^\s+-\s+python=3\.11\s*$", text, re.M)


def test_ci_runs_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in readme and "bash scripts/workbook.sh" in readme
    assert re.search(r"^bash scripts/test\.sh\s*$", ci, re.M)
