"""The README's and docs/ pages' newcomer sections: the commands they give work as written (or as their offline twin)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.helpers import ROOT, run_cli

VENV_BIN = os.path.dirname(sys.executable)
PAGES = {path.name: path.read_text() for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]}
"""The README and the docs/ pages it links (one per topic)."""
DOCS = "\n".join(PAGES.values())


def _section(title: str) -> str:
    """The `## title` section of whichever page holds it (exactly one does)."""
    (text,) = [t for t in PAGES.values() if f"\n## {title}" in t]
    start = text.index(f"\n## {title}") + 1
    end = text.find("\n## ", start + 3)
    return text[start:end if end >= 0 else len(text)]


def test_readme_is_short_and_links_every_docs_page():
    readme = PAGES["README.md"]
    assert len(readme.splitlines()) <= 250
    pages = sorted(name for name in PAGES if name != "README.md")
    assert pages == ["cli.md", "exports-and-evaluation.md", "notebooks.md", "reliability.md", "sampling.md",
                     "training-at-scale.md"]
    assert all(f"](docs/{name})" in readme for name in pages)


def test_preset_table_is_the_estimators():
    """The README's preset table is exactly what bench/preset_costs.py prints from the estimator."""
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "preset_costs.py")], capture_output=True, text=True,
                       cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stderr
    *table, last = r.stdout.strip().splitlines()
    assert "\n".join(table) in _section("What each preset needs and costs")
    rows = {row["preset"]: row for row in json.loads(last)["rows"]}
    assert rows["1.4B"]["mem_ckpt_gib"] < rows["1.4B"]["mem_gib"] and rows["125M"]["hours_per_1B"] > 0
    assert "Estimates, not measurements" in _section("What each preset needs and costs")


@pytest.mark.slow
def test_notebook_kernel_is_the_venv():
    """`jupyter lab` from .venv: the notebooks' kernel (python3) is the venv's interpreter."""
    kernel = json.loads((ROOT / "notebooks" / "04_train.ipynb").read_text())["metadata"]["kernelspec"]["name"]
    r = subprocess.run([os.path.join(VENV_BIN, "jupyter"), "kernelspec", "list", "--json"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    specs = json.loads(r.stdout)["kernelspecs"]
    assert kernel == "python3" and kernel in specs
    argv0 = specs[kernel]["spec"]["argv"][0]
    assert argv0 in ("python", sys.executable) or os.path.realpath(argv0) == os.path.realpath(sys.executable)
    r = subprocess.run([os.path.join(VENV_BIN, "jupyter"), "lab", "--version"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and re.match(r"^4\.", r.stdout.strip())
    assert ".venv/bin/jupyter lab notebooks/" in _section("Opening the notebooks")


def test_tensorboard_reads_a_run_folder(tmp_path):
    """`tensorboard --logdir runs/<id>/tensorboard` (checked with --inspect, which reads the same files)."""
    from torch.utils.tensorboard import SummaryWriter

    logdir = tmp_path / "run" / "tensorboard"
    with SummaryWriter(str(logdir)) as w:
        for step in range(3):
            w.add_scalar("train/loss", 5.0 - step, step)
    r = subprocess.run([os.path.join(VENV_BIN, "tensorboard"), "--logdir", str(logdir), "--inspect"],
                       capture_output=True, text=True, timeout=300)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and "train/loss" in out, out[-2000:]
    assert "tensorboard --logdir runs/<id>/tensorboard" in _section("Watching training")


def test_sunfish_runs_and_cache_variables(tmp_path):
    code = "from sunfish_lib.data.cache import cache_dir; from sunfish_lib.runs.paths import runs_dir; print(cache_dir()); print(runs_dir())"
    env = {**os.environ, "SUNFISH_CACHE": str(tmp_path / "cache"), "SUNFISH_RUNS": str(tmp_path / "runs")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == [str(tmp_path / "cache"), str(tmp_path / "runs")]
    section = _section("Data on the hub, caches and environment variables")
    assert "SUNFISH_CACHE" in section and "SUNFISH_RUNS" in section and "HF_TOKEN" in section


@pytest.mark.slow
def test_fineweb_offline_is_one_line():
    r = run_cli("data", "--source", "fineweb:sample-10BT")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "Traceback" not in r.stderr
    assert "sunfish data --source fineweb:sample-10BT" in _section("Data on the hub")


def test_wandb_paragraph_matches_the_trainer():
    from sunfish_lib.config import TrainConfig

    section = _section("Watching training")
    assert "--set train.wandb=true" in section and "WANDB_MODE=offline" in section
    assert TrainConfig().wandb is False and TrainConfig().tensorboard is True


@pytest.mark.parametrize("line", [
    "sunfish train --resume runs/<id>",
    ".venv/bin/torchrun --nproc-per-node 8 -m sunfish_lib.cli train --preset 350M --devices 8 --strategy fsdp",
])
def test_fixed_commands_parse(line):
    """The resume and torchrun lines name flags the training command has (resume names the run folder,
    whose saved config it reads; tests/test_scale.py runs both)."""
    from pathlib import Path

    from sunfish_lib.cli import build_parser

    assert line in DOCS
    argv = line.split(" -m sunfish_lib.cli train ")[-1].split() if "torchrun" in line else line.split()[2:]
    args = build_parser().parse_args(["train", *[a.replace("<id>", "x") for a in argv]])
    assert args.resume == Path("runs/x") if "--resume" in line else args.devices == 8
    assert not re.search(r"sunfish train --run-dir \S+ --resume", DOCS)  # the old shorthand trained `tiny`
