"""`sunfish sample` and the notebook 06 panel: same settings and seed, same samples; one-line errors."""

import html
import json
import re
import subprocess
import sys

import pytest
import torch

from sunfish_lib.config import DEFAULT_SAMPLERS, SAMPLERS
from sunfish_lib.cli import main
from sunfish_lib.notebook.display import visible
from sunfish_lib.sampling.trajectory import Trajectory
from sunfish_lib.notebook.widgets import SamplingPanel
from tests.helpers import ROOT
from tests.sampling_helpers import make_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {"root": root, "masked": make_run(root / "masked", "masked", ckpt=True),
            "continuous": make_run(root / "continuous", "continuous")}


def _cli_json(capsys, *argv):
    code = main(["sample", *map(str, argv), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


CASES = [  # (objective, panel settings, the same as CLI flags)
    ("masked", dict(mode="uncond", prompt="ROMEO:", sampler="ancestral", steps=5, seed=7, num_samples=2, length=9),
     ["--prompt", "ROMEO:", "--sampler", "ancestral", "--steps", 5, "--seed", 7, "--num-samples", 2, "--length", 9]),
    ("masked", dict(mode="infill", prompt="To be [MASK] not", temperature=0.5, seed=3, mask_length=3),
     ["--mode", "infill", "--prompt", "To be [MASK] not", "--temperature", 0.5, "--seed", 3, "--mask-length", 3]),
    ("continuous", dict(mode="uncond", prompt="", sampler="ddpm", steps=4, seed=11, length=7),
     ["--sampler", "ddpm", "--steps", 4, "--seed", 11, "--length", 7]),
    ("continuous", dict(mode="infill", prompt="[MASK] be", eta=0.5, seed=2, mask_length=2),
     ["--mode", "infill", "--prompt", "[MASK] be", "--eta", 0.5, "--seed", 2, "--mask-length", 2]),
]


@pytest.mark.parametrize("objective,values,flags", CASES, ids=[f"{c[0]}-{c[1]['mode']}" for c in CASES])
def test_panel_click_gives_the_cli_samples(runs, capsys, objective, values, flags):
    panel = SamplingPanel(runs_root=runs["root"])
    panel.picker.value = str(runs[objective])  # the dropdown fills the text box, which loads the checkpoint
    assert panel.loaded is not None and panel.loaded.objective == objective
    for name, value in values.items():
        getattr(panel, name).value = value
    panel.generate_button.click()
    assert panel.error is None, panel.error
    got = _cli_json(capsys, runs[objective], *flags)
    assert got["texts"] == panel.last.texts
    assert got["ids"] == panel.last.ids.tolist()
    assert got["settings"] == {k: getattr(panel.last.sample, k) for k in got["settings"]}
    shown = html.unescape(re.sub("<[^>]+>", "", panel.output.value))
    for text in panel.last.texts:  # the output area shows every sample (newlines as marks)
        assert visible(text) in shown
    assert "unigram entropy" in shown and "held-out text" in shown  # its quality beside it
    assert f"sunfish sample {runs[objective]} --mode {values['mode']}" in panel.command_line.value
    saved = [f for f in got["files"] if f.endswith(".json")]
    assert len(saved) == 1 and json.loads(open(saved[0]).read())["texts"] == got["texts"]
    assert saved[0].startswith(str(runs[objective] / "samples" / "sample-"))


def test_panel_streams_intermediate_text_and_progress(runs):
    panel = SamplingPanel(checkpoint=runs["masked"], stream_every_s=0.0)
    seen = []
    panel.live.observe(lambda ch: seen.append(ch["new"]), "value")
    panel.prompt.value, panel.steps.value, panel.length.value, panel.num_samples.value = "ROMEO:", 4, 8, 1
    panel.sampler.value = "low_confidence"  # commits exactly 2 of the 8 masks per step
    gen = panel.generate()
    streamed = [v for v in seen if v][:-1]
    assert "streamed 4 steps; the samples are below" in panel.live.value  # after: the samples are shown once
    assert len(streamed) == 4  # one update per step (no throttling here)
    assert "step 1/4" in streamed[0] and "░" in streamed[0]  # still masked after the first step
    assert streamed[0].count("░") == 6 and "░" not in streamed[-1]  # 8 masks, 2 committed per step
    assert panel.progress.value == panel.progress.max == 4
    assert 0 < panel.timings["first_text_s"] <= panel.timings["total_s"] and gen.texts[0].startswith("ROMEO:")


def test_cli_loads_ckpt_records_trajectory_and_progress(runs, tmp_path, capsys):
    ckpt = runs["masked"] / "checkpoints" / "last.ckpt"
    traj_file = tmp_path / "t.safetensors"
    code = main(["sample", str(ckpt), "--steps", "3", "--length", "6", "--trajectory", str(traj_file), "--progress"])
    out, err = capsys.readouterr()
    assert code == 0 and "--- sample 1 ---" in out and "--- sample 2 ---" in out
    assert "3/3" in err  # the rich progress bar, driven by the sampler's callback
    traj = Trajectory.load(traj_file)
    assert len(traj) == 3 and traj.sampler == DEFAULT_SAMPLERS["masked"] and traj.start.shape == (2, 6)
    assert f"saved {runs['masked'] / 'samples'}" in out  # a checkpoint inside a run folder saves there


BAD = [  # (argv after the checkpoint, or a replacement path; the error's start)
    (["/no/such/run"], "/no/such/run does not exist"),
    (["{tmp}"], "is not a Sunfish run or model folder"),
    (["{tmp}/junk.ckpt"], "not a Sunfish checkpoint"),
    (["{masked}", "--prompt", "word " * 300], "past the model's limit 256"),
    (["{masked}", "--mode", "infill", "--prompt", "no mask " * 100 + "[MASK]", "--mask-length", "100"], "past the sequence limit 256"),
    (["{masked}", "--sampler", "ddim"], "sample.sampler='ddim' does not fit objective 'masked'"),
    (["{continuous}", "--sampler", "low_confidence"], "does not fit objective 'continuous'"),
    (["{masked}", "--mode", "infill", "--prompt", "no mask"], "infill mode needs a prompt with [MASK]"),
    (["{masked}", "--steps", "0"], "sample.steps=0"),
]


@pytest.mark.parametrize("argv,message", BAD, ids=[b[1][:30] for b in BAD])
def test_cli_bad_input_is_one_line_exit_2(runs, tmp_path, capsys, argv, message):
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    argv = [a.format(tmp=tmp_path, masked=runs["masked"], continuous=runs["continuous"]) for a in argv]
    assert main(["sample", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and err.startswith("error: ") and message in err


@pytest.mark.slow
def test_cli_error_has_no_traceback_in_a_real_process(runs):
    r = subprocess.run([sys.executable, "-m", "sunfish_lib.cli", "sample", str(runs["masked"]), "--sampler", "ddpm"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == ["error: sample.sampler='ddpm' does not fit objective 'masked'; "
                                             f"choose one of {', '.join(SAMPLERS['masked'])}"]


@pytest.mark.parametrize("change,message", [
    ({"path": "/no/such/run"}, "/no/such/run does not exist"),
    ({"path": "{tmp}"}, "is not a Sunfish run or model folder"),
    ({"prompt": "word " * 300}, "past the model's limit 256"),
    ({"mode": "infill", "prompt": "no mask"}, "infill mode needs a prompt with [MASK]"),
    ({"steps": 0}, "sample.steps=0"),
])
def test_panel_bad_input_shows_one_line_and_stays_usable(runs, tmp_path, change, message):
    panel = SamplingPanel(checkpoint=runs["masked"])
    for name, value in change.items():
        getattr(panel, name).value = value.format(tmp=tmp_path) if isinstance(value, str) else value
    panel.generate_button.click()
    assert panel.error is not None and message in panel.error and "\n" not in panel.error
    assert 'class="sunfish-error"' in panel.output.value and html.escape(message.split("[")[0]) in panel.output.value
    assert panel.last is None and not panel.generate_button.disabled
    # fix the input: the same panel samples
    panel.path.value, panel.mode.value, panel.prompt.value, panel.steps.value = str(runs["masked"]), "uncond", "", 3
    panel.generate_button.click()
    assert panel.error is None and len(panel.last.texts) == 2 and "sunfish-sample" in panel.output.value


def test_panel_sampler_choices_follow_the_objective(runs, tmp_path):
    from traitlets import TraitError

    panel = SamplingPanel(checkpoint=runs["masked"])
    assert panel.sampler.options == ("ancestral", "low_confidence", "random", "threshold", "margin")
    with pytest.raises(TraitError):
        panel.sampler.value = "ddim"  # the dropdown only offers what the objective supports
    panel.path.value = str(runs["continuous"])
    assert panel.sampler.options == ("ddpm", "ddim") and panel.sampler.value == "ddim"
    # the run folder is re-trained with another objective under the panel: one line, then usable
    run = make_run(tmp_path / "run", "masked")
    panel.path.value = str(run)
    panel.sampler.value = "threshold"
    make_run(run, "continuous")
    panel.generate_button.click()
    assert panel.error == ("sampler 'threshold' does not fit this continuous checkpoint; choose one of ddpm, ddim")
    panel.generate_button.click()
    assert panel.error is None and panel.last.sample.sampler == "ddim"
    assert not torch.equal(panel.last.start, torch.zeros_like(panel.last.start))
