"""ipywidgets panels for the notebooks, built on plain methods so tests drive them without a browser.

- `SamplingPanel` (notebook 06): checkpoint picker, mode, prompt, settings, Generate, a
  progress bar and the intermediate text streamed while it denoises. Clicking Generate
  calls `SamplingPanel.generate()`, which calls `sampling.session.sample` exactly as
  `sunfish sample` does: the same settings and seed give the same samples. The samples are
  shown once (`display.SamplesView`) with their quality (`quality.quality_of`), then the exact
  `sunfish sample` command. Below them, the speed–quality view (`tradeoff.TradeoffLog`): this
  run's passes per token, wall time, entropy and judge perplexity, and a table and scatter of
  every run of the session on the same checkpoint, prompt and seed. Settings widgets are
  generated from `SampleConfig` fields (SETTING_WIDGETS), tooltips from their docstrings;
  controls that do not act on the checkpoint's objective (APPLIES) or the mode are disabled. `samples_html()` is the static
  twin a notebook displays for saved copies (they keep no widget state).
- `TrajectoryViewer` (notebook 07): a step slider over a recorded trajectory, the text at
  that step with changed and newly committed tokens highlighted (static twin:
  `display.step_strip_html`).

Bad input never breaks a panel: it shows one line (`error: ...`) in the output area and
the next click works as before.
"""

from __future__ import annotations

import html
import shlex
import time
from pathlib import Path

import ipywidgets as W

from sunfish_lib.notebook.display import SamplesView
from sunfish_lib.errors import SunfishError
from sunfish_lib.eval.quality import quality_of
from sunfish_lib.sampling.analysis import step_html, tokens
from sunfish_lib.runs.discovery import find_checkpoints, model_stamp, run_objective
from sunfish_lib.runs.paths import from_repo_root
from sunfish_lib.notebook.report import WIDGET_VIEW
from sunfish_lib.sampling.session import load_checkpoint, render_ids, sample
from sunfish_lib.config import DEVICE_HELP, DTYPE_NAMES
from sunfish_lib.sampling.settings import CHOICES, SETTINGS, applies, check_settings, defaults, field_docs
from sunfish_lib.notebook.tradeoff import TradeoffLog

SETTING_WIDGETS = SETTINGS
"""SampleConfig fields the panel shows, in order: all of them (`sampling.settings`); each widget is
built from the field's type, its tooltip from the field's docstring."""
PICKER_DEPTH = 4  # runs root / workbook / notebook folder / model folder


class Live:
    """A widget shown only where a live kernel draws it: its view, with an empty text stand-in.

    ipywidgets gives a widget a text/plain repr (`VBox(children=(Dropdown(...`) that a saved copy shows
    in its place, above the static twin; here that stand-in is empty. The runner also drops the view from
    executed copies (`report.static_copy`), where JupyterLab would say "model not found".
    """

    def __init__(self, widget):
        self.widget = widget

    def _repr_mimebundle_(self, include=None, exclude=None):
        return {WIDGET_VIEW: self.widget._repr_mimebundle_()[WIDGET_VIEW], "text/plain": ""}


def _pre(text: str) -> str:
    return f'<pre style="white-space:pre-wrap;margin:2px 0">{html.escape(text)}</pre>'


def checkpoint_options(runs_root: str | Path | None) -> list[tuple[str, str]]:
    """Dropdown (label, path) pairs: folders with a model under runs_root, nested ones included, newest first."""
    if runs_root is None:
        return []
    root = Path(runs_root)
    out = []
    for d in find_checkpoints(root, depth=PICKER_DEPTH):
        objective = run_objective(d)
        out.append((f"{d.relative_to(root)}{f' ({objective})' if objective else ''}", str(d)))
    return out


def _setting_widget(W, name: str):
    """A widget for SampleConfig field `name`, typed by its default, with the field's docstring as tooltip."""
    default = defaults()[name]
    if name == "sampler":
        w = W.Dropdown(options=[], description=name)
    elif name in CHOICES:
        w = W.Dropdown(options=list(CHOICES[name]), value=default, description=name)
    elif isinstance(default, bool):
        w = W.Checkbox(value=default, description=name)
    elif isinstance(default, int):
        w = W.IntText(value=default, description=name.replace("_", " "))
    elif isinstance(default, float):
        w = W.FloatText(value=default, description=name.replace("_", " "))
    else:
        w = W.Text(value=str(default), description=name.replace("_", " "))
    w.tooltip = field_docs().get(name, "")
    return w


class SamplingPanel:
    """The sampling panel of notebook 06; display `panel.widget` (see module docstring)."""

    def __init__(self, checkpoint: str | Path | None = None, runs_root: str | Path | None = None,
                 stream_every_s: float = 0.1, judge: str | Path | None = None, run_dir: str | Path | None = None,
                 device: str = "", dtype: str = "float32"):
        self.loaded = None
        self.last = None  # the last Generation
        self.quality: dict | None = None  # its quality figures (sunfish_lib.eval.quality)
        self.tradeoffs = TradeoffLog()  # every generation of this panel: the speed-quality view
        self.steps_run = 0  # reverse steps the last generation actually ran
        self.error: str | None = None
        self.timings: dict[str, float] = {}
        self.stream_every_s = stream_every_s
        self.judge, self.run_dir = judge, run_dir
        self._cache: dict = {}
        self._build(runs_root)
        self.device.value, self.dtype.value = device or "", dtype
        if checkpoint:
            self.path.value = str(checkpoint)  # loads it (observer)

    # -- layout ----------------------------------------------------------------------------
    def _build(self, runs_root) -> None:
        wide = W.Layout(width="95%")
        self.picker = W.Dropdown(options=[("(pick a run)", "")] + checkpoint_options(runs_root),
                                 description="run", layout=wide)
        self.path = W.Text(description="checkpoint", placeholder="run folder, exported model folder or .ckpt",
                           continuous_update=False, layout=wide)
        self.mode = W.ToggleButtons(options=["uncond", "infill"], description="mode")
        self.prompt = W.Textarea(description="prompt", placeholder="uncond: optional prefix; infill: text with [MASK]",
                                 layout=W.Layout(width="95%", height="60px"))
        for name in SETTING_WIDGETS:
            setattr(self, name, _setting_widget(W, name))
        self.device = W.Text(description="device", placeholder="auto", tooltip=DEVICE_HELP)
        self.dtype = W.Dropdown(options=list(DTYPE_NAMES), value="float32", description="dtype",
                                tooltip="the weights' dtype")
        self.seed = W.IntText(value=0, description="seed", tooltip="sampling seed: the same seed and settings "
                                                                   "give the same samples here and in the CLI")
        self.generate_button = W.Button(description="Generate", button_style="primary", icon="play")
        self.progress = W.IntProgress(value=0, min=0, max=1, description="steps")
        self.live = W.HTML()
        self.output = W.HTML()
        self.command_line = W.HTML()
        self.tradeoff = W.HTML()
        for name in ("path", "prompt", "generate_button", "output", "live", "picker", "mode", "command_line",
                     "tradeoff", "seed", *SETTING_WIDGETS):
            getattr(self, name).add_class(f"sunfish-{name.replace('_button', '').replace('_', '-')}")
        self.picker.observe(self._on_pick, "value")
        self.path.observe(lambda ch: self.load(), "value")
        self.mode.observe(lambda ch: self._enable(), "value")
        self.generate_button.on_click(lambda _b: self.generate())
        settings = [getattr(self, n) for n in SETTING_WIDGETS] + [self.seed, self.device, self.dtype]
        for w in settings:
            w.layout, w.style.description_width = W.Layout(width="auto"), "90px"
        grid = W.GridBox(settings, layout=W.Layout(grid_template_columns="repeat(4, minmax(0, 1fr))",
                                                   grid_gap="2px 8px", width="95%"))
        self.widget = W.VBox([self.picker, self.path, self.mode, self.prompt, grid,
                              W.HBox([self.generate_button, self.progress]), self.live, self.output,
                              self.command_line, self.tradeoff])

    def _on_pick(self, change) -> None:
        if change["new"] and change["new"] != self.path.value:
            self.path.value = change["new"]

    def _sync_picker(self) -> None:
        """Show the checkpoint box's path in the picker (added as an option when it is not listed)."""
        path = str(self.path.value).strip()
        values = [v for _, v in self.picker.options]
        if path and path not in values:
            match = next((v for v in values if v and Path(v).resolve() == Path(path).resolve()), None)
            if match is None:
                self.picker.options = list(self.picker.options) + [(f"{path} (typed)", path)]
                match = path
            path = match
        if self.picker.value != path:
            self.picker.value = path

    def _enable(self) -> None:
        """Disable the controls that do not act on the loaded checkpoint's objective or the mode."""
        objective = self.loaded.objective if self.loaded is not None else None
        for name in SETTING_WIDGETS:
            getattr(self, name).disabled = not applies(name, objective, self.mode.value)

    # -- checkpoint ------------------------------------------------------------------------
    def load(self) -> bool:
        """Load the checkpoint in the text box; set the sampler choices and the checkpoint's defaults."""
        self._sync_picker()
        try:
            self.loaded = self._load(self.path.value)
        except SunfishError as e:
            self.loaded = None
            self.show_error(str(e))
            return False
        cfg = self.loaded.cfg.sample
        self.sampler.options = list(self.loaded.samplers)
        for name in SETTING_WIDGETS:
            getattr(self, name).value = getattr(cfg, name)
        self._enable()
        n_params = sum(p.numel() for p in self.loaded.model.parameters())
        self.error = None
        self.output.value = _pre(f"loaded {self.loaded.path}: {self.loaded.objective} model, {n_params:,} parameters, "
                                 f"samplers {', '.join(self.loaded.samplers)}")
        return True
    def _key(self, path: str) -> tuple:
        """What a loaded model depends on: the checkpoint files, the device and the dtype."""
        return (*model_stamp(path), self.device.value.strip(), self.dtype.value)

    def _load(self, path: str):
        key = self._key(path)
        if key not in self._cache:
            self._cache = {key: load_checkpoint(str(path), device=self.device.value.strip() or None,
                                                dtype=self.dtype.value)}  # keep one model in memory
        return self._cache[key]

    def _refresh(self) -> bool:
        """Before sampling: reload when the path or the files behind it changed (e.g. re-trained).

        A sampler chosen for the previous checkpoint that the new one does not support is an
        error (one line); the choices are already updated, so the next click works.
        """
        if self.loaded is not None and self._key(self.path.value) in self._cache:
            return True
        chosen, before = self.sampler.value, self.loaded
        if not self.load():
            return False
        if before is not None and chosen and chosen not in self.loaded.samplers:
            self.show_error(f"sampler {chosen!r} does not fit this {self.loaded.objective} checkpoint; "
                            f"choose one of {', '.join(self.loaded.samplers)}")
            return False
        return True

    def set_settings(self, values) -> None:
        """Set the settings widgets from {SampleConfig field: value} (notebook 06's `sampling` parameter),
        checked by `settings.check_settings`; a sampler must fit the loaded checkpoint."""
        typed = check_settings(values)
        sampler = typed.get("sampler")
        if sampler is not None and sampler not in self.sampler.options:
            raise SunfishError(f"sample.sampler={sampler!r} does not fit this checkpoint; choose one of "
                               f"{', '.join(self.sampler.options) or '(load a checkpoint first)'}")
        for name, value in typed.items():
            getattr(self, name).value = value

    # -- generation --------------------------------------------------------------------------
    def settings(self) -> dict:
        """The sampling settings the widgets hold that act on the checkpoint and mode (SampleConfig field names)."""
        objective = self.loaded.objective if self.loaded is not None else None
        return {name: getattr(self, name).value for name in SETTING_WIDGETS
                if applies(name, objective, self.mode.value)}

    def command(self) -> str:
        """The `sunfish sample` command that draws the same samples (every setting spelled out), its paths as
        typed at the checkout's root."""
        flags = " ".join(f"--{k.replace('_', '-')} {shlex.quote(str(v))}" for k, v in self.settings().items())
        judge = f" --judge {shlex.quote(from_repo_root(self.judge))}" if self.judge else ""
        if self.device.value.strip():
            judge += f" --device {shlex.quote(self.device.value.strip())}"
        if self.dtype.value != "float32":
            judge += f" --dtype {self.dtype.value}"
        return (f"sunfish sample {shlex.quote(from_repo_root(self.path.value))} --mode {self.mode.value} "
                f"--prompt {shlex.quote(self.prompt.value)} --seed {self.seed.value} {flags}{judge}")

    def generate(self):
        """What the Generate button does: sample with the panel's settings; returns the Generation or None."""
        self.generate_button.disabled = True
        self.live.value, self.timings, self.steps_run = "", {}, 0
        self._t0 = self._last_stream = time.perf_counter()
        try:
            if not self._refresh():
                return None
            gen = sample(self.loaded, mode=self.mode.value, prompt=self.prompt.value, seed=self.seed.value,
                         callback=self._on_step, **self.settings())
            self.timings["total_s"] = time.perf_counter() - self._t0
            self.quality = quality_of(gen, self.loaded, judge=self.judge, run_dir=self.run_dir)
        except SunfishError as e:
            self.show_error(str(e))
            return None
        except Exception as e:  # a bug: one line here, the traceback in the log
            self.show_error(f"{type(e).__name__}: {e}")
            raise
        finally:
            self.generate_button.disabled = False
        self.last, self.error = gen, None
        self.progress.max = self.progress.value = max(self.steps_run, 1)
        self.live.value = (f'<div style="color:#666">streamed {self.steps_run} steps; the samples are below '
                           "(shown once)</div>")
        self.tradeoffs.add(gen, self.quality, seconds=self.timings["total_s"], checkpoint=self.loaded.path,
                           mode=self.mode.value, prompt=self.prompt.value, seed=self.seed.value)
        self.output.value = self.samples_html()
        self.tradeoff.value = self.tradeoffs.html()
        self.command_line.value = f"<code style='font-size:80%'>{html.escape(self.command())}</code>"
        return gen

    def _on_step(self, step: int, total: int, x) -> None:
        """Sampler callback: move the progress bar; stream the intermediate text (throttled)."""
        self.steps_run = step
        self.progress.max, self.progress.value = total, step
        now = time.perf_counter()
        if "first_text_s" in self.timings and now - self._last_stream < self.stream_every_s and step < total:
            return
        tok = self.loaded.tokenizer
        rows = "".join(_pre(f"{i + 1}: {render_ids(tok, row)}") for i, row in enumerate(x.cpu()))
        self.live.value = f'<div style="color:#666">step {step}/{total} (at most)</div>{rows}'
        self.timings.setdefault("first_text_s", time.perf_counter() - self._t0)
        self._last_stream = now

    def summary(self) -> str:
        """One line: objective, sampler, steps requested and run, forward passes, time."""
        s, gen = self.last.sample, self.last
        ran = f"{self.steps_run} steps run"
        if self.loaded.iterative and self.steps_run != s.steps:
            filled = int((gen.start == self.loaded.tokenizer.mask_token_id).sum(1).max())
            ran += f" of {s.steps} requested ({steps_note(s, self.steps_run, filled)})"
        return (f"{self.loaded.objective} / {s.sampler}, {ran}, seed {self.seed.value}: "
                f"{self.last.forward_passes} forward passes in {self.timings['total_s']:.2f} s")

    def samples_html(self) -> str:
        """The last generation (summary line, samples, quality) as HTML: the panel's output and its static twin."""
        view = SamplesView.of(self.last, self.loaded.tokenizer, self.quality, title=self.summary())
        return view.html()

    def show_error(self, message: str) -> None:
        """One line in the output area; the panel stays usable."""
        self.error = " ".join(str(message).split())
        self.output.value = f'<div class="sunfish-error" style="color:#b00020">error: {html.escape(self.error)}</div>'


def steps_note(s, run: int, filled: int) -> str:
    """Why a sampler with settings s ran `run` steps, not the `s.steps` requested, for `filled` [MASK] per row."""
    if run > s.steps and s.sampler == "threshold":
        return (f"threshold {s.threshold} commits fewer tokens per pass than the {s.steps}-step schedule asks; "
                "the fallback commits at least one per pass")
    if run > s.steps:
        return "the passes past the schedule commit the masks still left"
    if s.sampler == "threshold":
        return f"threshold {s.threshold} committed several tokens on some passes"
    if filled < s.steps and s.sampler != "ancestral":
        return f"{filled} positions to fill, at least one per step"
    return "every [MASK] was filled before the schedule ended"


class TrajectoryViewer:
    """A step slider over a recorded trajectory (row `row`), showing `analysis.step_html` at each step."""

    def __init__(self, trajectory, tokenizer, row: int = 0):
        tokens(trajectory, row)  # checks the row and that there are steps
        self.trajectory, self.tokenizer, self.row = trajectory, tokenizer, row
        self.slider = W.IntSlider(value=len(trajectory), min=1, max=len(trajectory), description="step",
                                  continuous_update=True, layout=W.Layout(width="95%"))
        self.html = W.HTML()
        self.slider.observe(lambda ch: self.show(ch["new"]), "value")
        self.widget = W.VBox([self.slider, self.html])
        self.show(self.slider.value)

    def show(self, step: int) -> str:
        """Render step `step` (1-based, as on the slider) into the HTML widget; returns the HTML."""
        self.html.value = step_html(self.tokenizer, self.trajectory, step - 1, self.row)
        return self.html.value
