"""Notebook 05 (noise schedules) runs headlessly with smoke parameters and shows what it promises."""

import re

import pytest

from sunfish_lib.notebook.report import closing_text
from tests.helpers import NOTEBOOKS

pytestmark = pytest.mark.slow  # runs notebooks through papermill: outside the fast lane (-m 'not slow')

NB = NOTEBOOKS / "05_noise_schedules.ipynb"


def _run(run_notebook, **params):
    out = run_notebook(NB, **params)
    return out.text, out.count("image/png")


def test_noise_schedule_notebook_smoke(run_notebook, tmp_path):
    text, pngs = _run(run_notebook)
    assert "toy table: 4,096 tokens x 16 dims, T = 200" in text
    # alpha_bar at t=0.5: sqrt is far noisier than cosine (closed forms: 0.293/0.99 vs cos^2 ~ 0.5)
    ab = {k: [float(v) for v in re.search(rf"{k}\s+alpha_bar at t=0.1 / 0.5 / 0.9: (\S+) / (\S+) / (\S+)",
                                          text).groups()] for k in ("linear", "cosine", "sqrt")}
    assert ab["sqrt"][1] == pytest.approx((1 - 0.5001 ** 0.5) / 0.99, abs=2e-3)
    assert ab["sqrt"][0] < ab["cosine"][0] and ab["sqrt"][0] < ab["linear"][0]
    # the sentence at t=0.05 under cosine is recovered exactly; under sqrt at t=0.8 it is mostly gone
    rec = {(m[0], float(m[1])): int(m[2]) for m in re.findall(r"(\w+)\s+t=(\S+)\s+recovered\s+(\d+)%", text)}
    assert len(rec) == 12 and rec[("cosine", 0.05)] == 100 and rec[("sqrt", 0.8)] < 50
    assert rec[("sqrt", 0.2)] < rec[("cosine", 0.2)]
    falls = dict(re.findall(r"(\w+)\s+recovery falls below 50% at t = (\S+);", text))
    assert set(falls) == {"linear", "cosine", "sqrt"}
    assert float(falls["sqrt"]) < float(falls["cosine"])  # sqrt destroys tokens earlier in the chain
    assert "no checkpoint: set `checkpoint`" in text
    assert pngs == 2  # schedule curves, recovery curves
    closing = closing_text(tmp_path / NB.name).splitlines()  # the closing cell: the same figures as the cells above
    for line, kind in zip(closing, ("linear", "cosine", "sqrt")):
        shown = [float(v) for v in re.findall(r"alpha_bar (\S+) at t=\S+ / (\S+) at t=\S+ / (\S+) at", line)[0]]
        assert line.startswith(f"- {kind}:") and shown == pytest.approx(ab[kind], abs=1e-3)
        assert line.endswith(f"from t = {float(falls[kind]):g}")
    mid = {k: v[1] for k, v in ab.items()}
    assert closing[3] == f"- at t=0.5 the most signal is left by {max(mid, key=mid.get)}, the least by {min(mid, key=mid.get)}"


def test_noise_schedule_notebook_uses_the_workbooks_continuous_model(run_notebook, tmp_path):
    checkpoint = pytest.importorskip("sunfish_lib.io.export")
    import torch

    from sunfish_lib.config import get_config
    from sunfish_lib.model import Backbone

    cfg = get_config("tiny", {"n_layers": 1, "num_timesteps": 100})
    torch.manual_seed(0)
    model_dir = tmp_path / "workbook" / "04_train" / "continuous"  # a continuous model a workbook trained
    checkpoint.export_model(Backbone.from_config(cfg), cfg, model_dir / "export")
    cfg.save(model_dir / "config.json")
    text, pngs = _run(run_notebook, run_dir=str(tmp_path / "workbook"), loss_t=[0.05, 0.5, 1.0])
    assert f"the workbook's continuous model: {model_dir}" in text  # no checkpoint given: run_dir's is used
    rows = re.findall(r"t=(\S+)\s+mse (\S+)\s+rounding CE (\S+)\s+accuracy (\S+)%", text)
    assert [float(r[0]) for r in rows] == [0.05, 0.5, 1.0]
    acc = [float(r[3]) for r in rows]
    assert acc[0] > acc[2]  # even an untrained model's x0 (about x_t itself) rounds right at small t
    assert pngs == 4  # + rounding recovery on the model's own embeddings
    assert "own embeddings: rounding x_t recovers" in text
