"""Notebook 01 (config and memory) through papermill, and the memory figure's content."""

import json

import pytest

from sunfish_lib.notebook import plots
from sunfish_lib.notebook.report import closing_text
from sunfish_lib.notebook.tables import number
from sunfish_lib.sizing.counts import num_params
from sunfish_lib.sizing.estimate import config_for, memory_sweep, report
from sunfish_lib.sizing.memory import GiB
from tests.helpers import NOTEBOOKS

pytestmark = pytest.mark.slow  # runs notebooks through papermill: outside the fast lane (-m 'not slow')

NB = NOTEBOOKS / "01_config_and_memory.ipynb"


def test_config_and_memory_notebook_smoke(run_notebook, tmp_path):
    out = run_notebook(NB, cwd=NOTEBOOKS, run_dir=str(tmp_path))
    cfg = config_for("1.4B", "continuous")
    text = out.text + "\n" + out.markdown
    assert f"{num_params(cfg):,} params in the built model; the count matches" in text
    assert "| single | 1 | 48 |" in text and "fsdp:" in text
    # the fit table: each card in GiB with its own headroom; the 20 GiB card bounds FSDP (1.4B, bf16-mixed)
    need = json.loads((tmp_path / "estimate.json").read_text())["verdicts"][0]["needed_gb"]
    assert f"| 48 | {need:.2f} | {48 - need:+.2f} | yes |  |" in text
    assert f"| 20 | {need:.2f} | {20 - need:+.2f} | no | yes |" in text
    assert "peak" in text and "needs" in text and "with allocator slack and CUDA context" in text
    saved = json.loads((tmp_path / "estimate.json").read_text())
    expected = report(cfg, strategy="fsdp", gpu_mem_gb=[48, 20], precision="bf16-mixed")
    # RoPE: no learned position table; CDCD's self-conditioning input projection: + 2048 x 2048
    assert saved["params"] == 1_336_969_216 == expected["params"]
    assert saved["memory"] == expected["memory"] and saved["verdicts"] == expected["verdicts"]
    assert [r["strategy"] for r in saved["advice"]["strategies"]] == ["single", "ddp", "fsdp"]
    assert (tmp_path / "memory.png").stat().st_size > 10_000
    closing = closing_text(tmp_path / NB.name).splitlines()  # the "what this showed" cell, against estimate.json
    assert closing[0] == (f"- fsdp over 2 GPU(s), bf16-mixed: peak {number(saved['memory']['total'] / GiB)} GiB per GPU, "
                          f"needs {number(need)} GiB with slack and context: {'fits' if saved['fits'] else 'does not fit'}")
    assert closing[1] == "- " + saved["advice"]["strategies"][2]["line"]


def test_memory_bars_heights_are_the_estimates():
    cfg = config_for("350M", "masked")
    rows = memory_sweep(cfg, seq_lens=[256, 1024], gpu_mem_gb=[48, 20], precision="bf16-mixed")
    fig = plots.memory_bars(rows, [48, 20])
    ax = fig.axes[0]
    assert len(ax.containers) == len(plots.MEMORY_COMPONENTS) and len(rows) == 6
    for comp, bars in zip(plots.MEMORY_COMPONENTS, ax.containers):
        assert bars.get_label() == comp
        for row, bar in zip(rows, bars):
            assert abs(bar.get_height() - row[comp] / GiB) < 1e-9
    tops = [bar.get_y() + bar.get_height() for bar in ax.containers[-1]]
    assert all(abs(t - r["total"] / GiB) < 1e-9 for t, r in zip(tops, rows))
    assert sorted(line.get_ydata()[0] for line in ax.get_lines()) == [20, 48]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[0] == "single\nT=256" and labels[-1] == "fsdp x2\nT=1024"
