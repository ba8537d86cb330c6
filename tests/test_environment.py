"""pyproject.toml states ranges, constraints.txt the exact pins inside them; setup.sh and environment.yml use the pins."""

import ast
import re
import tomllib

from packaging.requirements import Requirement

from tests.helpers import ROOT


def _ranges() -> dict[str, Requirement]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = data["dependencies"] + [d for extra in data["optional-dependencies"].values() for d in extra]
    return {Requirement(d).name.lower(): Requirement(d) for d in deps}


def _pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"constraints.txt: {line!r} is not pinned with =="
            pins[name.strip().lower()] = version.strip()
    return pins


def test_every_dependency_pinned_inside_its_range():
    ranges, pins = _ranges(), _pins()
    assert set(ranges) == set(pins), set(ranges) ^ set(pins)
    for name, req in ranges.items():
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} is outside {req.specifier}"
        assert "==" not in str(req.specifier), f"pyproject.toml pins {name} exactly; the pin belongs in constraints.txt"
    assert pins["torch"] == "2.13.0"


def test_setup_and_environment_install_with_the_constraints():
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert re.search(r"pip install .*-c constraints\.txt -e \"\.\[dev\]\"", setup)
    assert "constraints.txt" in setup.split("want=")[1].splitlines()[0]  # the stamp changes with the pins
    env = (ROOT / "environment.yml").read_text()
    assert re.search(r"^\s+-\s+-c constraints\.txt\s*$", env, re.M) and re.search(r"^\s+-\s+-e \.\[dev\]\s*$", env, re.M)
    assert re.search(r"^\s+-\s+python=3\.11\s*$", env, re.M)


def test_license_and_python_range():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT" and (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert project["requires-python"] == ">=3.10"
    for path in (ROOT / "sunfish_lib").rglob("*.py"):  # the library parses as Python 3.10
        ast.parse(path.read_text(), filename=str(path), feature_version=(3, 10))


def test_ci_runs_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash scripts/test.sh" in readme and "bash scripts/workbook.sh" in readme
    assert re.search(r"^bash scripts/test\.sh\s*$", ci, re.M)


def test_setup_venv_has_the_pinned_versions():
    """scripts/setup.sh reproduces constraints.txt exactly (checked where the tests run in its .venv)."""
    import sys
    from importlib.metadata import version
    from pathlib import Path

    import pytest

    if Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
        pytest.skip("not running in scripts/setup.sh's .venv (an environment installed against the ranges)")
    got = {name: version(name).split("+")[0] for name in _pins()}  # 2.13.0+cpu is the 2.13.0 pin
    assert got == _pins()
