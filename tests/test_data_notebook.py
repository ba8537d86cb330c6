"""The data notebook runs headlessly with smoke parameters and shows what it promises."""

import pytest

from sunfish_lib.notebook.report import closing_text
from tests.helpers import NOTEBOOKS

pytestmark = pytest.mark.slow  # runs notebooks through papermill: outside the fast lane (-m 'not slow')

NB = NOTEBOOKS / "02_data_pipeline.ipynb"


def test_data_notebook_smoke(run_notebook, tmp_path):
    out = run_notebook(NB, seq_len=48)
    text, pngs = out.text, out.count("image/png")
    assert "round trip: True" in text
    assert "4,096 tokens; EOS=0 [MASK]=1 [PAD]=2" in text
    assert "To|" in text or "|" in text  # token boundaries shown
    md = out.markdown
    efficiency = float(md.split("| packing efficiency | ")[1].split()[0])  # the statistics as a table
    assert "| skipped documents | none |" in md
    assert 0.95 < efficiency <= 1.0  # 1% of rows are cut short and padded (random_length_fraction=0.01)
    assert "Resolving data files" not in text  # no progress-bar noise
    assert "ratio" in text and "tokens/s" in text
    assert "{'input_ids': (4, 48)" in text  # smoke overrides batch size, keeps the seq_len parameter
    assert pngs == 3  # length histograms, throughput bars, packed batch
    # the packed batch is one where a document ends: its rows list the EOS positions, one line each
    rows = [line for line in out.streams.splitlines() if line.startswith("row ")]
    assert len(rows) == 4 and any("EOS at" in line for line in rows)
    assert "PERSONS REPRESENTED" not in text  # documents summarised in one line each, not printed
    # the closing cell reads the run's figures: the table's packing efficiency, the throughput cell's ratio
    closing = closing_text(tmp_path / NB.name)
    ratio = text.split("ratio ")[1].split("x")[0]
    assert f"packing efficiency {efficiency:.3g}" in closing and f": {ratio}x, data loading" in closing, closing
