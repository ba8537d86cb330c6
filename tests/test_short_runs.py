"""Issue 14.10: one function decides the short-run rules; CLI, notebook 04, benches and checkpoints agree."""

import json

from sunfish_lib.config import get_config, short_run_rules
from sunfish_lib.commands.train import config_from_args
from tests.helpers import NOTEBOOKS


def _cli_config(*argv):
    import argparse

    from sunfish_lib.commands import train as command

    ap = argparse.ArgumentParser()
    command.add_parser(ap.add_subparsers())
    return config_from_args(ap.parse_args(["train", *argv]))


def _notebook04_config(**params):
    """Run notebook 04's parameters cell (with `params`) and its config lines up to the run folder."""
    nb = json.loads((NOTEBOOKS / "04_train.ipynb").read_text())
    cells = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    param_cell = next(i for i, c in enumerate(nb["cells"]) if "parameters" in c.get("metadata", {}).get("tags", []))
    code_index = sum(1 for c in nb["cells"][:param_cell] if c["cell_type"] == "code")
    config_cell = next(c for c in cells if "cfg = recipe_config(" in c)
    ns: dict = {}
    exec("from pathlib import Path\nfrom sunfish_lib.notebook.workbook import recipe_config", ns)
    exec(cells[code_index], ns)
    ns.update(params)
    exec(config_cell.split("\nfolder =")[0], ns)
    return ns["cfg"]


def test_cli_and_notebook_04_build_the_same_short_run_config():
    cli = _cli_config("--preset", "tiny", "--objective", "masked", "--max-steps", "300")
    nb = _notebook04_config(max_steps=300, objective="masked")
    assert cli.train.warmup_steps == nb.train.warmup_steps == 30
    # the one difference: the workbook recipe validates and checkpoints every tenth of a run
    # (recipe_config); the CLI keeps the preset's cadence unless --set val_every/ckpt_every
    assert (nb.train.val_every, nb.train.ckpt_every) == (30, 30)
    cadence = {"train.val_every": nb.train.val_every, "train.ckpt_every": nb.train.ckpt_every}
    assert cli.override(cadence).to_dict() == nb.to_dict()


def test_short_run_rule_keeps_explicit_and_long_settings():
    assert get_config("tiny", max_steps=300).train.warmup_steps == 30
    assert get_config("tiny", max_steps=5000).train.warmup_steps == 50  # never above the preset's
    assert get_config("tiny", max_steps=300, warmup_steps=70).train.warmup_steps == 70  # explicit wins
    assert get_config("tiny").train.warmup_steps == 50  # max_steps not changed: untouched
    assert _cli_config("--preset", "tiny", "--max-steps", "300", "--set", "warmup_steps=7").train.warmup_steps == 7
    base = get_config("tiny")
    assert short_run_rules(base.override({"max_steps": 5}), {"max_steps": 5}).train.warmup_steps == 1
