"""Trajectory analysis, files and figures, for both diffusion objectives, checked by content."""

import re

import numpy as np
import pytest
import torch

from sunfish_lib.errors import SunfishError
from sunfish_lib.notebook.plots import entropy_curves, entropy_label, layout_tokens, save_denoising_gif, trajectory_heatmap, \
    trajectory_heatmaps
from sunfish_lib.sampling import analysis as A
from sunfish_lib.sampling.session import load_checkpoint, sample
from sunfish_lib.sampling.trajectory import Trajectory
from sunfish_lib.notebook.widgets import TrajectoryViewer
from tests.sampling_helpers import make_run

M = 7  # [MASK] id of the synthetic trajectories


class Tok:
    """A stand-in tokenizer: id i decodes to 'w<i> ', MASK_ID to '[MASK]'."""

    mask_token_id = M

    def decode(self, ids):
        return "".join("[MASK]" if i == M else f"w{i} " for i in ids)


def _masked_traj():
    """Context at 0; positions 1..3 filled over 3 steps (one per step)."""
    start = torch.tensor([[1, M, M, M]])
    toks = [[1, M, 5, M], [1, 4, 5, M], [1, 4, 5, 6]]
    tr = Trajectory(sampler="low_confidence", meta={"mask_id": M}, start=start)
    prev = start[0]
    for k, row in enumerate(toks):
        x = torch.tensor([row])
        tr.record(1 - (k + 1) / 3, tokens=x, confidence=torch.rand(1, 4), masked=x == M, committed=(prev != x[0])[None],
                  entropy=torch.tensor([[0.0, 2.0, 2.0, 2.0]]) * (1 - k / 3))
        prev = x[0]
    return tr


def _continuous_traj():
    """Context at 0; the rounded prediction flips until it settles (position 1 at step 2, 2 at step 1, 3 at 3)."""
    start = torch.tensor([[1, M, M, M]])
    toks = [[1, 8, 9, 3], [1, 4, 9, 6], [1, 4, 9, 2], [1, 4, 9, 6]]
    tr = Trajectory(sampler="ddim", meta={"mask_id": M}, start=start)
    for k, row in enumerate(toks):
        tr.record(1 - k / 4, tokens=torch.tensor([row]), distance=torch.full((1, 4), 4.0 - k),
                  entropy=torch.tensor([[9.0, 3.0, 3.0, 3.0]]) / (k + 1))
    return tr


def test_changed_committed_and_entropy_masked():
    tr = _masked_traj()
    assert A.changed(tr).int().tolist() == [[0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]]
    assert A.committed(tr).int().tolist() == [[0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]]
    # undecided before each step: 3, 2, 1 positions, each entropy 2 * (1 - k/3)
    assert A.step_entropy(tr) == pytest.approx([2.0, 4 / 3, 2 / 3])


def test_changed_committed_and_entropy_continuous():
    tr = _continuous_traj()
    assert A.changed(tr).int().tolist() == [[0, 1, 1, 1], [0, 1, 0, 1], [0, 0, 0, 1], [0, 0, 0, 1]]
    # committed = first step from which the token stays final; context never
    assert A.committed(tr).int().tolist() == [[0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]]
    assert A.step_entropy(tr) == pytest.approx([3.0, 1.5, 1.0, 0.75])  # over the 3 generated positions


@pytest.mark.parametrize("make", [_masked_traj, _continuous_traj], ids=["masked", "continuous"])
def test_step_html_highlights_exactly_the_changed_tokens(make):
    tr = make()
    for step in range(len(tr)):
        page = A.step_html(Tok(), tr, step)
        spans = re.findall(r'class="sf-tok sf-(\w+)" data-pos="(\d+)"', page)
        assert [int(p) for _, p in spans] == [0, 1, 2, 3]
        lit = {int(p) for s, p in spans if s in ("changed", "committed")}
        assert lit == set(A.changed(tr)[step].nonzero().flatten().tolist())
        assert {int(p) for s, p in spans if s == "committed"} == set(A.committed(tr)[step].nonzero().flatten().tolist())
        assert spans[0][0] == "context"
    assert "[MASK]" not in A.step_html(Tok(), _masked_traj(), 0) and "░" in A.step_html(Tok(), _masked_traj(), 0)


@pytest.mark.parametrize("make,fields", [(_masked_traj, ["confidence", "masked", "entropy"]),
                                         (_continuous_traj, ["distance", "entropy"])], ids=["masked", "continuous"])
def test_heatmaps_are_positions_by_steps(make, fields):
    tr = make()
    assert A.fields_for(tr) == fields
    for f in fields:
        values = A.heatmap(tr, f)
        assert values.shape == (4, len(tr))  # positions x steps
        np.testing.assert_allclose(values[:, 1], tr.steps[1][f][0].double().numpy())
        img = trajectory_heatmap(values, field=f).axes[0].images[0].get_array()
        assert img.shape == (4, len(tr)) and np.allclose(img, values)
    with pytest.raises(SunfishError, match="was not recorded"):
        A.heatmap(tr, "distance" if "distance" not in fields else "masked")


def test_entropy_curves_and_side_by_side_figure():
    m, c = _masked_traj(), _continuous_traj()
    labels = {"masked": entropy_label(m), "continuous": entropy_label(c)}
    fig = entropy_curves({"masked": A.step_entropy(m), "continuous": A.step_entropy(c)}, ylabels=labels)
    # two definitions (over still-masked positions, over all positions): two axes, each labelled with its own
    assert [ax.get_ylabel() for ax in fig.axes] == ["mean entropy over still-masked positions (nats)",
                                                    "mean entropy over all generated positions (nats)"]
    (masked_line,), (continuous_line,) = fig.axes[0].lines, fig.axes[1].lines
    assert list(continuous_line.get_ydata()) == pytest.approx([3.0, 1.5, 1.0, 0.75])
    assert list(masked_line.get_xdata()) == pytest.approx([1 / 3, 2 / 3, 1.0])
    fig = trajectory_heatmaps({"masked: confidence": (A.heatmap(m, "confidence"), "confidence", ""),
                               "continuous: distance": (A.heatmap(c, "distance"), "distance", "")})
    shapes = [ax.images[0].get_array().shape for ax in fig.axes if ax.images]
    assert shapes == [(4, 3), (4, 4)] and fig.axes[1].get_title() == "continuous: distance"


def test_gif_has_one_frame_per_step(tmp_path):
    tr = _continuous_traj()
    frames = [A.step_tokens(Tok(), tr, s) for s in range(len(tr))]
    assert [s for _, s in frames[1]] == ["context", "committed", "same", "changed"]
    path = save_denoising_gif(frames, tmp_path / "d.gif", title="continuous")
    from PIL import Image

    with Image.open(path) as im:
        assert im.n_frames == 4
    assert layout_tokens([("ab\ncd", "same"), ("efgh", "changed")], width=5) == [
        (0, 0, "ab", "same"), (1, 0, "cd", "same"), (2, 0, "efgh", "changed")]


def test_viewer_slider_shows_each_step():
    tr = _masked_traj()
    viewer = TrajectoryViewer(tr, Tok())
    assert viewer.slider.max == 3 and viewer.html.value == A.step_html(Tok(), tr, 2)
    viewer.slider.value = 1
    assert viewer.html.value == A.step_html(Tok(), tr, 0) and "step 1/3" in viewer.html.value
    with pytest.raises(SunfishError, match="row=2 is out of range"):
        TrajectoryViewer(tr, Tok(), row=2)


@pytest.mark.parametrize("objective", ["masked", "continuous"])
def test_recorded_trajectory_round_trips_and_reads_back(tmp_path, objective):
    loaded = load_checkpoint(make_run(tmp_path / "run", objective))
    one_per_step = {"sampler": "low_confidence"} if objective == "masked" else {}  # 4 steps commit the 4 masks
    gen = sample(loaded, mode="infill", prompt="To be [MASK] not", mask_length=4, steps=4, seed=1, record=True,
                 **one_per_step)
    tr = gen.trajectory
    path = tr.save(tmp_path / "t.safetensors")
    back = Trajectory.load(path)
    assert back.sampler == tr.sampler and back.meta == tr.meta and back.times == tr.times
    assert torch.equal(back.start, gen.start) and back.fields() == tr.fields()
    assert all(torch.equal(a[k], b[k]) for a, b in zip(tr.steps, back.steps) for k in a)
    assert torch.equal(A.tokens(back, 1)[-1], gen.ids[1])  # the last step is the sample
    assert A.generated(back).sum() == 4 and A.heatmap(back, "entropy").shape == (gen.ids.shape[1], 4)
    assert A.committed(back)[:, ~A.generated(back)].sum() == 0  # context is never committed
    if objective == "masked":
        assert A.committed(back).sum(0)[A.generated(back)].tolist() == [1, 1, 1, 1]  # each mask once
    page = A.step_html(loaded.tokenizer, back, 0)
    assert page.count("sf-context") >= 2 and "sf-tok" in page
