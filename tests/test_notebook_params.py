"""Notebook parameter rules: declared in each notebook's `parameters` cell, beside the parameter they check.

The bad-input table (tests/test_bad_inputs.py) holds the workbook notebooks' cases; here: the grammar, that a
rule follows its parameter through a rename, that an unknown rule is refused in one line, and that the
`config:KEY` rules are the config's own allowed values.
"""

import re

import nbformat
import pytest

from sunfish_lib.cli import main
from sunfish_lib.config import PRESETS, Config
from sunfish_lib.errors import SunfishError
from sunfish_lib.notebook.params import check_params, notebook_parameters, notebook_rules, parse_rule
from sunfish_lib.notebook.runner import workbook_notebooks
from sunfish_lib.config.validation import CHOICES
from tests.helpers import write_notebook


def _notebook(path, params: str, body: str = "print('ran')"):
    return write_notebook(path, params, body)


def _parameters_source(nb_path) -> str:
    nb = nbformat.read(str(nb_path), as_version=4)
    return next(c.source for c in nb.cells if "parameters" in c.metadata.get("tags", []))


RULED = [(nb, name) for nb in workbook_notebooks() for name in notebook_rules(nb)]


def test_workbook_notebooks_declare_their_rules():
    """The checks the workbook had as global name lists, now declared by the notebooks (a sample of them)."""
    assert len(RULED) == 63  # 61 in 01-09 (08 declares judge_steps; 03 no longer has threshold), 2 in 10
    rules = {nb.name[:2]: _parameters_source(nb) for nb in workbook_notebooks()}
    assert 'max_steps: "> 0" = 1500' in rules["04"]
    assert 'objective: "config:diffusion.objective" = "masked"' in rules["04"]
    assert 'noise_t: "[0, 1]" = [0.05, 0.2, 0.5, 0.8]' in rules["05"]
    assert 'mode: "uncond | infill" = "uncond"' in rules["06"]
    assert 'sampling: "config:sample" = {}' in rules["06"]
    assert 'judge_steps: "> 0" = 200' in rules["08"]
    assert 'parallel: "> 0" = 2' in rules["10"] and 'seed: ">= 0" = 0' in rules["10"]
    assert notebook_rules(workbook_notebooks()[0]) == {}  # 00: smoke only, type-checked


@pytest.mark.parametrize("nb,name", RULED, ids=[f"{nb.name[:2]}-{name}" for nb, name in RULED])
def test_renaming_a_workbook_parameter_keeps_its_check(nb, name, tmp_path):
    """The same parameters cell with `name` renamed: the rule moves with it, so a value it refuses under the old
    name is refused under the new one (the old name now means nothing)."""
    source = re.sub(rf"^{name}:", f"{name}_renamed:", _parameters_source(nb), flags=re.M)
    renamed = _notebook(tmp_path / nb.name, source)
    assert notebook_rules(renamed)[f"{name}_renamed"] is notebook_rules(nb)[name]  # parse_rule: one check per rule text
    assert name not in notebook_parameters(renamed)


def test_a_renamed_parameter_is_refused_under_its_new_name(tmp_path, capsys):
    nb = _notebook(tmp_path / "nb.ipynb", 'budget: "> 0" = 1500  # was max_steps\nmax_steps = 10')
    with pytest.raises(SunfishError, match=r"^nb.ipynb: parameter budget=-5 must be > 0$"):
        check_params(nb, {"budget": -5})
    assert check_params(nb, {"max_steps": -5})["max_steps"] == 10  # no rule declared: type-checked only
    assert main(["run", str(nb), "-p", "budget", "0", "--runs-dir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert err == "error: nb.ipynb: parameter budget=0 must be > 0\n"
    assert not (tmp_path / "runs").exists(), "refused before a run folder or kernel exists"


@pytest.mark.parametrize("cell,rule", [
    ('steps: "positive" = 3', "'positive'"),
    ("steps: int = 3", "'int'"),
    ('steps: "config:model.n_layers" = 3', "'config:model.n_layers'"),  # a config key with no fixed set of values
    ('steps: "> zero" = 3', "'> zero'"),
    ('steps: "[0, 1" = 0.5', "'[0, 1'"),
])
def test_an_unknown_rule_is_one_line(cell, rule, tmp_path, capsys):
    nb = _notebook(tmp_path / "odd.ipynb", f"smoke = False\n{cell}")
    assert main(["run", str(nb), "--runs-dir", str(tmp_path / "runs")]) == 2  # no -p needed: every rule is read
    err = capsys.readouterr().err
    assert err.startswith(f"error: odd.ipynb: parameter steps declares the rule {rule}, which is not one; write ")
    assert "'> N', '>= N', '[LO, HI]', 'path'" in err and "config:KEY' (KEY: preset, model.norm" in err
    assert err.count("\n") == 1 and not (tmp_path / "runs").exists()


OK_AND_BAD = [
    ("> 0", [1, 0.5, [1, 2], [], None], [(0, "must be > 0"), ([1, -1], "=[1, -1] must be > 0")]),
    (">= 0", [0, 3], [(-1, "must be >= 0")]),
    ("> 2.5", [3], [(2.5, "must be > 2.5")]),
    ("[0, 1]", [0, 1, [0.5, 1.0]], [(1.5, "must be in [0, 1]"), (-0.1, "must be in [0, 1]")]),
    ("(0, 1]", [1, 1e-9], [(0, "must be in (0, 1]")]),
    ("[0, 1)", [0], [(1, "must be in [0, 1)")]),
    ("a | b-c", ["a", ["a", "b-c"]], [("c", ": 'c' is not allowed; choose one of a, b-c"), (["a", "d"], "'d' is not")]),
    ("config:train.precision", ["bf16-mixed"], [("fp8", "'fp8' is not allowed; choose one of " + ", ".join(CHOICES["train.precision"]))]),
    ("config:preset", list(PRESETS), [("7B", "'7B' is not allowed; choose one of " + ", ".join(PRESETS))]),
    ("config", [{}, {"model.n_layers": 2}], [({"model.nlayers": 2}, "parameter p: unknown config key 'model.nlayers'")]),
    ("config:sample", [{}, {"steps": 8}], [({"steps": 0}, "parameter p: sample.steps=0 must be > 0")]),
    ("path", [None, "nb.ipynb", ["nb.ipynb"]], [("/nonexistent", "no such file or folder"), (3, ": 3 is not a path")]),
]


@pytest.mark.parametrize("rule,ok,bad", OK_AND_BAD, ids=[r for r, _, _ in OK_AND_BAD])
def test_rule_grammar(rule, ok, bad, tmp_path):
    nb = _notebook(tmp_path / "nb.ipynb", "p = None")
    check = parse_rule(rule)
    for value in ok:
        check(nb, "p", value)
    for value, needle in bad:
        with pytest.raises(SunfishError, match=re.escape(needle)) as e:
            check(nb, "p", value)
        assert str(e.value).startswith("nb.ipynb: parameter p") and "\n" not in str(e.value)


@pytest.mark.parametrize("key", sorted(CHOICES))
def test_config_rules_are_the_configs_own_allowed_values(key, tmp_path):
    """`config:KEY` accepts what the config's validation accepts for KEY and refuses what it refuses."""
    nb = _notebook(tmp_path / "nb.ipynb", "p = None")
    check = parse_rule(f"config:{key}")
    for value in CHOICES[key]:
        check(nb, "p", value)
    with pytest.raises(SunfishError, match=f"'bogus' is not allowed; choose one of {re.escape(', '.join(CHOICES[key]))}$"):
        check(nb, "p", "bogus")
    with pytest.raises(SunfishError, match=f"{re.escape(key)}='bogus' is not allowed; choose one of "
                                           f"{re.escape(', '.join(CHOICES[key]))}"):
        Config().override({key: "bogus"}).validate()


def test_annotated_parameters_run_and_take_injected_values(tmp_path, caplog):
    """papermill executes the annotated cell and its injected values win (the rule is only an annotation); its
    regex reading of the cell (which takes annotations for type names) warns nothing on our runs."""
    nb = _notebook(tmp_path / "nb.ipynb", 'n: ">= 1" = 1\nmode: "x | y" = "x"',
                   "open('out.txt', 'w').write(f'{n * 2} {mode} {__annotations__}')")
    assert main(["run", str(nb), "-p", "n", "21", "-p", "mode", "y", "--runs-dir", str(tmp_path / "runs")]) == 0
    assert not [r.getMessage() for r in caplog.records if r.name.startswith("papermill") and r.levelname == "WARNING"]
    (run_dir,) = list((tmp_path / "runs").iterdir())
    assert (run_dir / "params.json").read_text().count('"n": 21') == 1
    assert (tmp_path / "out.txt").read_text() == "42 y {'n': '>= 1', 'mode': 'x | y'}"
