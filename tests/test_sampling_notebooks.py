"""Notebooks 06 (sampling panel) and 07 (denoising trajectories) run headlessly with smoke parameters."""

import pytest
import html
import re

from PIL import Image

from sunfish_lib.config import DEFAULT_SAMPLERS
from sunfish_lib.notebook.display import visible
from sunfish_lib.notebook.runner import run_notebooks
from sunfish_lib.sampling.session import load_checkpoint, sample
from sunfish_lib.sampling.trajectory import Trajectory
from tests.conftest import NotebookOutputs
from sunfish_lib.notebook.report import closing_text
from sunfish_lib.sampling import analysis
from tests.helpers import NOTEBOOKS
from tests.sampling_helpers import make_run

pytestmark = pytest.mark.slow  # runs notebooks through papermill: outside the fast lane (-m 'not slow')


def _outputs(path):
    out = NotebookOutputs.read(path)
    return out.streams, out.kinds


def _html_text(path) -> str:
    """The text a reader sees in the notebook's HTML outputs (tags dropped, entities decoded)."""
    return html.unescape(re.sub("<[^>]+>", "", NotebookOutputs.read(path).html))


def test_sampling_notebook_uses_the_workbook_model_and_matches_the_cli(tmp_path):
    workbook = tmp_path / "workbook"
    make_run(workbook / "04_train", "masked")  # what notebook 04 leaves in a workbook run folder
    nb = NOTEBOOKS / "06_sampling.ipynb"
    run_dir = run_notebooks([nb], {nb.name: {"smoke": True, "run_dir": str(workbook)}}, runs_parent=tmp_path)
    text, kinds = _outputs(run_dir / nb.name)
    assert f"checkpoint: {workbook / '04_train'}" in text
    # an executed copy keeps no widget state: the panel's view and its text repr are gone, its static twin stays
    assert not any("widget" in k for k in kinds) and "VBox(children" not in NotebookOutputs.read(run_dir / nb.name).text
    expected = sample(load_checkpoint(workbook / "04_train"), prompt="ROMEO:", seed=0).texts
    shown = _html_text(run_dir / nb.name)  # the panel's last generation as HTML: the widget's static twin
    for i, t in enumerate(expected):
        assert f"sample {i + 1}" in shown and visible(t) in shown
    assert "unigram entropy (nats)" in shown and "held-out text" in shown
    # the speed-quality view's static twin: 06's Generate and two threshold settings, one table row each
    assert "3 run(s) on this checkpoint" in shown and shown.count("forward passes per generated token") == 1
    assert f"sampler {DEFAULT_SAMPLERS['masked']}, block_length 0, threshold 0.9" in shown
    assert "sampler threshold, block_length 8, threshold 0.7" in shown
    command = f"sunfish sample {workbook / '04_train'} --mode uncond --prompt ROMEO: --seed 0"
    assert f"{command} --sampler {DEFAULT_SAMPLERS['masked']}" in text
    closing = closing_text(run_dir / nb.name).splitlines()  # one line per drawn setting, then the cheapest
    assert len(closing) == 4 and all(" passes/token, entropy " in line for line in closing[:3])
    assert closing[0].startswith(f"- sampler {DEFAULT_SAMPLERS['masked']}, block_length 0, threshold 0.9: ")
    assert closing[2].startswith("- sampler threshold, block_length 8, threshold 0.7: ")
    assert closing[3].startswith("- fewest passes per token: ")


def test_trajectories_notebook_records_plots_and_animates(tmp_path):
    nb = NOTEBOOKS / "07_denoising_trajectories.ipynb"
    # the sampling knobs go in as one SampleConfig dict; low_confidence acts on the masked model only
    params = {"smoke": True, "sampling": {"mask_length": 8, "steps": 8, "sampler": "low_confidence"}}
    run_dir = run_notebooks([nb], {nb.name: params}, runs_parent=tmp_path)
    text, kinds = _outputs(run_dir / nb.name)
    out = run_dir / "07_denoising_trajectories"
    for objective in ("masked", "continuous"):
        traj = Trajectory.load(out / f"trajectory-{objective}.safetensors")
        assert len(traj) == 8 and traj.meta["objective"] == objective and traj.meta["prompt"] == "ROMEO:\n[MASK]\nJULIET:"
        with Image.open(out / f"denoising-{objective}.gif") as gif:
            assert gif.n_frames == 8
        assert f"{objective}: 8 frames" in text and f"--- {objective} (" in text
    assert "masked     changed per step [1, 1, 1, 1, 1, 1, 1, 1]" in text  # 8 masks, one committed per step
    # 2 samples views (with quality) + 2 strips of selected steps (the slider's static twin)
    assert kinds.count("image/png") == 3 and kinds.count("image/gif") == 2 and kinds.count("text/html") == 4
    assert not any("widget" in k for k in kinds) and "Tab(children" not in NotebookOutputs.read(run_dir / nb.name).text
    shown = _html_text(run_dir / nb.name)
    assert shown.count("unigram entropy (nats)") == 2 and shown.count("step 1/8") == 2 and shown.count("step 8/8") == 2
    closing = closing_text(run_dir / nb.name).splitlines()  # read against the saved trajectories
    for line, objective in zip(closing, ("masked", "continuous")):
        traj = Trajectory.load(out / f"trajectory-{objective}.safetensors")
        changes, commits = int(analysis.changed(traj).sum()), int(analysis.committed(traj).sum())
        ent = analysis.step_entropy(traj)
        assert line == (f"- {objective}: 8 steps, {changes} token changes for {commits} committed positions "
                        f"({changes / commits:.2f} changes per position); entropy {ent[0]:.3f} -> {ent[-1]:.3f} nats")
    assert closing[0].startswith("- masked: 8 steps, 8 token changes for 8 committed positions (1.00 changes")
