"""The sampling lab (issue #15): the panel's speed–quality view and the notebooks' `sampling` parameter."""

import html
import re

import pytest

from sunfish_lib.errors import SunfishError
from sunfish_lib.notebook.params import check_params, notebook_parameters
from sunfish_lib.eval.quality import quality_of
from sunfish_lib.sampling.session import load_checkpoint, sample
from sunfish_lib.sampling.settings import check_settings
from sunfish_lib.notebook.tradeoff import TradeoffLog, scatter, sweep
from sunfish_lib.notebook.widgets import SamplingPanel
from tests.helpers import NOTEBOOKS, run_cli
from tests.sampling_helpers import make_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    masked = make_run(root / "masked", "masked", length=16, num_samples=2, steps=16, sampler="low_confidence")
    return {"masked": masked,
            "ar": make_run(root / "ar", "ar")}


def _text(value: str) -> str:
    return html.unescape(re.sub("<[^>]+>", " ", value))


# ----------------------------------------------------------------------------
# The speed–quality log (library, no widgets)
# ----------------------------------------------------------------------------

def test_tradeoff_points_carry_speed_and_quality_of_each_setting(runs):
    loaded = load_checkpoint(runs["masked"])
    grid = [{"sampler": "low_confidence", "steps": 16}, {"sampler": "low_confidence", "steps": 4},
            {"sampler": "threshold", "threshold": 0.5, "block_length": 8}]
    log = sweep(loaded, grid, prompt="ROMEO:", seed=3, judge=runs["ar"])
    series = log.series()
    assert len(series) == 3
    for point, settings in zip(series, grid):
        gen = sample(loaded, prompt="ROMEO:", seed=3, **settings)  # the same draw again: same passes and text
        q = quality_of(gen, loaded, judge=runs["ar"], reference=False)
        assert point.forward_passes == gen.forward_passes and point.text == gen.texts[0]
        assert point.tokens_per_sample == 16 and point.num_samples == 2
        assert point.passes_per_token == pytest.approx(gen.forward_passes / 16)
        assert point.entropy == pytest.approx(q["entropy"]) and point.judge_ppl == pytest.approx(q["judge_ppl"])
        assert point.seconds > 0 and point.tokens_per_s == pytest.approx(32 / point.seconds)
    assert [p.forward_passes for p in series[:2]] == [16, 4]  # one pass per step
    rows = log.rows()
    assert [r["run"] for r in rows] == [1, 2, 3]
    # the label names the settings that differ between the points, and only those
    assert rows[0]["settings"] == "sampler low_confidence, steps 16, block_length 0, threshold 0.9"
    assert rows[2]["settings"] == "sampler threshold, steps 16, block_length 8, threshold 0.5"
    assert [r["passes_per_token"] for r in rows[:2]] == [1.0, 0.25]


def test_tradeoff_series_is_one_checkpoint_prompt_and_seed(runs):
    loaded = load_checkpoint(runs["masked"])
    log = sweep(loaded, [{"steps": 4}, {"steps": 8}], prompt="A", seed=0)
    sweep(loaded, [{"steps": 2}], prompt="B", seed=0, log=log)
    assert len(log.points) == 3 and [p.forward_passes for p in log.series()] == [2]  # a new prompt: a new series
    sweep(loaded, [{"steps": 16}], prompt="A", seed=0, log=log)
    assert [p.forward_passes for p in log.series()] == [4, 8, 16]


def test_tradeoff_scatter_and_html(runs):
    loaded = load_checkpoint(runs["masked"])
    log = sweep(loaded, [{"steps": 16}, {"steps": 8}, {"steps": 4}], seed=1, judge=runs["ar"])
    fig = log.figure()
    ppl_ax, ent_ax = fig.axes
    assert ppl_ax.get_ylabel().startswith("judge perplexity") and ent_ax.get_ylabel().startswith("unigram entropy")
    xy = ppl_ax.collections[0].get_offsets()
    assert [round(float(x), 3) for x in xy[:, 0]] == [1.0, 0.5, 0.25]  # passes per generated token
    assert [float(y) for y in xy[:, 1]] == pytest.approx([p.judge_ppl for p in log.series()])
    assert [t.get_text() for t in ppl_ax.texts] == ["1", "2", "3"]
    assert list(ppl_ax.collections[1].get_offsets()[0]) == pytest.approx(list(xy[-1]))  # the latest run, ringed
    shown = log.html()
    last = log.series()[-1]
    assert f"0.250 forward passes per generated token (4 passes)" in _text(shown)
    assert f"judge perplexity {last.judge_ppl:.2f}" in _text(shown) and f"entropy {last.entropy:.3f}" in _text(shown)
    assert "3 run(s)" in shown and shown.count("<tr>") == 4 and "data:image/png;base64," in shown
    no_judge = [{**r, "judge_ppl": None} for r in log.rows()]
    assert [a.get_ylabel() for a in scatter(no_judge).axes] == ["unigram entropy (nats)"]
    assert TradeoffLog().html() == "" and TradeoffLog().figure() is None


def test_panel_shows_the_tradeoff_of_each_click(runs):
    panel = SamplingPanel(checkpoint=runs["masked"], judge=runs["ar"])
    panel.prompt.value, panel.sampler.value = "ROMEO:", "threshold"
    for threshold, block in [(0.9, 16), (0.3, 4)]:
        panel.threshold.value, panel.block_length.value = threshold, block
        panel.generate_button.click()
        assert panel.error is None, panel.error
    first, second = panel.tradeoffs.series()
    assert (first.settings["threshold"], first.settings["block_length"]) == (0.9, 16)
    assert (second.settings["threshold"], second.settings["block_length"]) == (0.3, 4)
    assert second.forward_passes == panel.last.forward_passes and second.judge_ppl == panel.quality["judge_ppl"]
    assert second.seconds == panel.timings["total_s"]
    shown = _text(panel.tradeoff.value)
    assert "2 run(s)" in shown and "block_length 16, threshold 0.9" in shown
    assert "block_length 4, threshold 0.3" in shown
    assert f"{second.passes_per_token:.3f} forward passes per generated token" in shown
    assert f"judge perplexity {second.judge_ppl:.2f}" in shown


# ----------------------------------------------------------------------------
# The notebooks' `sampling` parameter: SampleConfig's fields and rules
# ----------------------------------------------------------------------------

SAMPLING_NOTEBOOKS = ["06_sampling.ipynb", "07_denoising_trajectories.ipynb"]


@pytest.mark.parametrize("name", SAMPLING_NOTEBOOKS)
def test_sampling_notebooks_declare_their_knobs_as_sampleconfig_fields(name):
    declared = notebook_parameters(NOTEBOOKS / name)
    assert isinstance(declared["sampling"], dict)
    assert check_settings(declared["sampling"]) == declared["sampling"]  # the defaults pass SampleConfig's rules
    from sunfish_lib.sampling.settings import SETTINGS

    assert not set(declared) & set(SETTINGS)  # a knob lives in `sampling`, never as a second, loose parameter


@pytest.mark.parametrize("name", SAMPLING_NOTEBOOKS)
@pytest.mark.parametrize("value,needle", [
    ({"thresold": 0.5}, "unknown sampling setting 'thresold'; did you mean 'threshold'?"),
    ({"threshold": 1.5}, "sample.threshold=1.5 must be in (0, 1]"),
    ({"steps": 0}, "sample.steps=0 must be"),
    ({"block_length": "eight"}, "sample.block_length"),
    ({"sampler": "beam"}, "sample.sampler='beam' is not a sampler; choose one of"),
    ({"cache": "full"}, "sample.cache='full'"),
])
def test_a_bad_sampling_parameter_is_one_line(name, value, needle):
    with pytest.raises(SunfishError) as err:
        check_params(NOTEBOOKS / name, {"sampling": value})
    message = str(err.value)
    assert message.startswith(f"{name}: parameter sampling: ") and needle in message and "\n" not in message


@pytest.mark.slow
def test_sunfish_run_refuses_a_bad_sampling_parameter_before_a_kernel(tmp_path):
    r = run_cli("run", "notebooks/06_sampling.ipynb", "-p", "sampling", "{'top_q': 0.9}", "--runs-dir", str(tmp_path))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "parameter sampling: unknown sampling setting 'top_q'; did you mean 'top_p'?" in lines[0]


def test_panel_takes_the_sampling_parameter(runs):
    panel = SamplingPanel(checkpoint=runs["masked"])
    panel.set_settings({"sampler": "threshold", "threshold": 0.5, "block_length": 8, "steps": 4})
    assert (panel.sampler.value, panel.threshold.value, panel.block_length.value, panel.steps.value) == (
        "threshold", 0.5, 8, 4)
    assert "--sampler threshold" in panel.command() and "--threshold 0.5" in panel.command()
    with pytest.raises(SunfishError, match="sample.sampler='ddim' does not fit this checkpoint; choose one of"):
        panel.set_settings({"sampler": "ddim"})
    with pytest.raises(SunfishError, match="unknown sampling setting 'blocks'"):
        panel.set_settings({"blocks": 8})
    assert panel.block_length.value == 8  # a refused dict changes nothing
