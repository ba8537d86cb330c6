"""The 06 panel as a researcher expects it (issue 20, item 5): tooltips, disabled controls, steps run,
a picker that finds nested models and follows the checkpoint box, the exact CLI command."""

import shlex

import pytest

from sunfish_lib.config import SampleConfig
from sunfish_lib.notebook.widgets import SETTING_WIDGETS, SamplingPanel, checkpoint_options, field_docs
from tests.sampling_helpers import make_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    wb = root / "20260101-000000-workbook"
    return {"root": root, "masked": make_run(wb / "04_train", "masked", length=6, num_samples=1),
            "nested": make_run(wb / "08_ar_to_diffusion" / "scratch", "masked"),
            "ar": make_run(wb / "08_ar_to_diffusion" / "ar-parent", "ar"),
            "continuous": make_run(wb / "07_denoising_trajectories" / "tiny-continuous", "continuous")}


def test_tooltips_come_from_the_config_docstrings(runs):
    docs = field_docs(SampleConfig)
    assert docs["eta"] == "DDIM stochasticity (0: deterministic, 1: DDPM marginals)."
    panel = SamplingPanel(checkpoint=runs["masked"])
    for name in SETTING_WIDGETS:
        assert getattr(panel, name).tooltip == docs[name] != ""


def test_controls_that_do_not_apply_are_disabled(runs):
    panel = SamplingPanel(checkpoint=runs["masked"])
    assert panel.eta.disabled and not panel.temperature.disabled and not panel.steps.disabled
    assert panel.mask_length.disabled and not panel.length.disabled  # uncond mode
    panel.mode.value = "infill"
    assert not panel.mask_length.disabled and panel.length.disabled
    panel.mode.value = "uncond"
    panel.path.value = str(runs["continuous"])
    # a CDCD model's temperature tempers p(w | x_t) in score interpolation; top-k/top-p act on discrete draws only
    assert not panel.eta.disabled and not panel.temperature.disabled and panel.top_k.disabled and panel.top_p.disabled
    panel.path.value = str(runs["ar"])
    assert panel.steps.disabled and panel.eta.disabled and not panel.temperature.disabled


def test_the_steps_actually_run_are_reported(runs):
    panel = SamplingPanel(checkpoint=runs["masked"])
    panel.mode.value, panel.prompt.value, panel.mask_length.value, panel.steps.value = "infill", "To [MASK] be", 3, 50
    panel.sampler.value = "low_confidence"  # commits at least one position a step: 3 steps fill 3 masks
    panel.generate()
    assert panel.error is None and panel.steps_run == 3  # one masked position per step at most: 3, not 50
    assert "3 steps run of 50 requested (3 positions to fill, at least one per step)" in panel.output.value
    assert panel.progress.value == panel.progress.max == 3


@pytest.mark.parametrize("threshold", [0.9, 0.7, 0.5])
def test_a_threshold_that_commits_one_token_per_pass_says_why_steps_ran_past_the_request(runs, threshold):
    panel = SamplingPanel(checkpoint=runs["masked"])  # untrained: no confidence comes near 0.5
    panel.sampler.value, panel.steps.value, panel.threshold.value = "threshold", 4, threshold
    panel.generate()
    assert panel.error is None and panel.steps_run == 6  # length 6, one token per pass
    assert (f"6 steps run of 4 requested (threshold {threshold} commits fewer tokens per pass than the 4-step "
            "schedule asks; the fallback commits at least one per pass)") in panel.output.value


def test_picker_finds_nested_models_and_follows_the_checkpoint_box(runs):
    found = {path for _, path in checkpoint_options(runs["root"])}
    assert {str(runs[k]) for k in ("masked", "nested", "ar", "continuous")} <= found
    panel = SamplingPanel(checkpoint=runs["masked"], runs_root=runs["root"])
    assert panel.picker.value == str(runs["masked"])  # not "(pick a run)"
    panel.path.value = str(runs["nested"])
    assert panel.picker.value == str(runs["nested"])
    panel.picker.value = str(runs["continuous"])
    assert panel.path.value == str(runs["continuous"]) and panel.loaded.objective == "continuous"


def test_panel_prints_the_exact_sample_command(runs, capsys):
    import json

    from sunfish_lib.cli import main

    panel = SamplingPanel(checkpoint=runs["masked"])
    panel.prompt.value, panel.seed.value, panel.temperature.value, panel.steps.value = "ROMEO: it's", 5, 0.7, 4
    gen = panel.generate()
    cmd = panel.command()
    assert "--temperature 0.7" in cmd and "--seed 5" in cmd and "--prompt 'ROMEO: it'\"'\"'s'" in cmd
    argv = shlex.split(cmd)[2:]
    assert main(["sample", *argv, "--json", "--no-save", "--no-quality"]) == 0
    assert json.loads(capsys.readouterr().out)["texts"] == gen.texts  # the command draws the same samples
    assert panel.command_line.value.startswith("<code") and "sunfish sample" in panel.command_line.value
