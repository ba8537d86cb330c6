"""ipywidgets panels for the notebooks, built on plain methods so tests drive them without a browser.

- `SamplingPanel` (notebook 06): checkpoint picker, mode, prompt, settings, Generate, a
  progress bar and the intermediate text streamed while it denoises. Clicking Generate
  calls `SamplingPanel.generate()`, which calls `sampling.session.sample` exactly as
  `sunfish sample` does: the same settings and seed give the same samples.
- `TrajectoryViewer` (notebook 07): a step slider over a recorded trajectory, the text at
  that step with changed and newly committed tokens highlighted.

Bad input never breaks a panel: it shows one line (`error: ...`) in the output area and
the next click works as before.
"""

from __future__ import annotations

import html
import json
import time
from pathlib import Path

from sunfish_lib.errors import SunfishError

SETTING_WIDGETS = ("sampler", "steps", "eta", "temperature", "length", "num_samples", "mask_length")


def _pre(text: str) -> str:
    return f'<pre style="white-space:pre-wrap;margin:2px 0">{html.escape(text)}</pre>'


def checkpoint_options(runs_root: str | Path | None) -> list[tuple[str, str]]:
    """Dropdown (label, path) pairs: run folders with a model under runs_root, newest first."""
    from sunfish_lib.sampling.session import find_checkpoints

    if runs_root is None:
        return []
    root = Path(runs_root)
    out = []
    for d in find_checkpoints(root):
        objective = ""
        for cfg in (d / "export" / "config.json", d / "config.json"):
            if cfg.is_file():
                try:
                    objective = f" ({json.loads(cfg.read_text())['diffusion']['objective']})"
                except (OSError, ValueError, KeyError, TypeError):
                    pass
                break
        out.append((f"{d.relative_to(root)}{objective}", str(d)))
    return out


def _checkpoint_key(path: str) -> tuple:
    """(path, newest mtime of the model files behind it): changes when the checkpoint is re-written."""
    p = Path(str(path).strip()).expanduser()
    files = [p, p / "model.safetensors", p / "export" / "model.safetensors", p / "checkpoints" / "last.ckpt"]
    return str(p), max((f.stat().st_mtime_ns for f in files if f.exists()), default=None)


class SamplingPanel:
    """The sampling panel of notebook 06; display `panel.widget` (see module docstring)."""

    def __init__(self, checkpoint: str | Path | None = None, runs_root: str | Path | None = None,
                 stream_every_s: float = 0.1):
        self.loaded = None
        self.last = None  # the last Generation
        self.error: str | None = None
        self.timings: dict[str, float] = {}
        self.stream_every_s = stream_every_s
        self._cache: dict = {}
        self._build(runs_root)
        if checkpoint:
            self.path.value = str(checkpoint)  # loads it (observer)

    # -- layout ----------------------------------------------------------------------------
    def _build(self, runs_root) -> None:
        import ipywidgets as W

        wide = W.Layout(width="95%")
        self.picker = W.Dropdown(options=[("(pick a run)", "")] + checkpoint_options(runs_root),
                                 description="run", layout=wide)
        self.path = W.Text(description="checkpoint", placeholder="run folder, exported model folder or .ckpt",
                           continuous_update=False, layout=wide)
        self.mode = W.ToggleButtons(options=["uncond", "infill"], description="mode")
        self.prompt = W.Textarea(description="prompt", placeholder="uncond: optional prefix; infill: text with [MASK]",
                                 layout=W.Layout(width="95%", height="60px"))
        self.sampler = W.Dropdown(options=[], description="sampler")
        self.steps = W.IntText(value=50, description="steps")
        self.eta = W.FloatText(value=0.0, description="eta")
        self.temperature = W.FloatText(value=1.0, description="temperature")
        self.length = W.IntText(value=64, description="length")
        self.mask_length = W.IntText(value=8, description="mask length")
        self.num_samples = W.IntText(value=4, description="samples")
        self.seed = W.IntText(value=0, description="seed")
        self.generate_button = W.Button(description="Generate", button_style="primary", icon="play")
        self.progress = W.IntProgress(value=0, min=0, max=1, description="steps")
        self.live = W.HTML()
        self.output = W.HTML()
        for name in ("path", "prompt", "generate_button", "output", "live", "picker", "sampler", "mode"):
            getattr(self, name).add_class(f"sunfish-{name.replace('_button', '')}")
        self.picker.observe(lambda ch: ch["new"] and setattr(self.path, "value", ch["new"]), "value")
        self.path.observe(lambda ch: self.load(), "value")
        self.generate_button.on_click(lambda _b: self.generate())
        settings = [self.sampler, self.steps, self.eta, self.temperature, self.length, self.mask_length,
                    self.num_samples, self.seed]
        for w in settings:
            w.layout, w.style.description_width = W.Layout(width="auto"), "90px"
        grid = W.GridBox(settings, layout=W.Layout(grid_template_columns="repeat(4, minmax(0, 1fr))",
                                                   grid_gap="2px 8px", width="95%"))
        self.widget = W.VBox([self.picker, self.path, self.mode, self.prompt, grid,
                              W.HBox([self.generate_button, self.progress]), self.live, self.output])

    # -- checkpoint ------------------------------------------------------------------------
    def load(self) -> bool:
        """Load the checkpoint in the text box; set the sampler choices and the checkpoint's defaults."""
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
        n_params = sum(p.numel() for p in self.loaded.model.parameters())
        self.error = None
        self.output.value = _pre(f"loaded {self.loaded.path}: {self.loaded.objective} model, {n_params:,} parameters, "
                                 f"samplers {', '.join(self.loaded.samplers)}")
        return True

    def _load(self, path: str):
        from sunfish_lib.sampling.session import load_checkpoint

        key = _checkpoint_key(path)
        if key not in self._cache:
            self._cache = {key: load_checkpoint(str(path))}  # keep one model in memory
        return self._cache[key]

    def _refresh(self) -> bool:
        """Before sampling: reload when the path or the files behind it changed (e.g. re-trained).

        A sampler chosen for the previous checkpoint that the new one does not support is an
        error (one line); the choices are already updated, so the next click works.
        """
        if self.loaded is not None and _checkpoint_key(self.path.value) in self._cache:
            return True
        chosen, before = self.sampler.value, self.loaded
        if not self.load():
            return False
        if before is not None and chosen and chosen not in self.loaded.samplers:
            self.show_error(f"sampler {chosen!r} does not fit this {self.loaded.objective} checkpoint; "
                            f"choose one of {', '.join(self.loaded.samplers)}")
            return False
        return True

    # -- generation --------------------------------------------------------------------------
    def settings(self) -> dict:
        """The sampling settings the widgets hold (SampleConfig field names)."""
        return {name: getattr(self, name).value for name in SETTING_WIDGETS}

    def generate(self):
        """What the Generate button does: sample with the panel's settings; returns the Generation or None."""
        from sunfish_lib.sampling.session import sample

        self.generate_button.disabled = True
        self.live.value, self.timings = "", {}
        self._t0 = self._last_stream = time.perf_counter()
        try:
            if not self._refresh():
                return None
            gen = sample(self.loaded, mode=self.mode.value, prompt=self.prompt.value, seed=self.seed.value,
                         callback=self._on_step, **self.settings())
        except SunfishError as e:
            self.show_error(str(e))
            return None
        except Exception as e:  # a bug: one line here, the traceback in the log
            self.show_error(f"{type(e).__name__}: {e}")
            raise
        finally:
            self.generate_button.disabled = False
        self.timings["total_s"] = time.perf_counter() - self._t0
        self.last, self.error = gen, None
        self.progress.value = self.progress.max
        self.output.value = self._samples_html(gen)
        return gen

    def _on_step(self, step: int, total: int, x) -> None:
        """Sampler callback: move the progress bar; stream the intermediate text (throttled)."""
        from sunfish_lib.sampling.session import render_ids

        self.progress.max, self.progress.value = total, step
        now = time.perf_counter()
        if "first_text_s" in self.timings and now - self._last_stream < self.stream_every_s and step < total:
            return
        tok = self.loaded.tokenizer
        rows = "".join(_pre(f"{i + 1}: {render_ids(tok, row)}") for i, row in enumerate(x.cpu()))
        self.live.value = f'<div style="color:#666">step {step}/{total}</div>{rows}'
        self.timings.setdefault("first_text_s", time.perf_counter() - self._t0)
        self._last_stream = now

    def _samples_html(self, gen) -> str:
        s = gen.sample
        head = (f"{self.loaded.objective} / {s.sampler}, {s.steps} steps, seed {self.seed.value}: "
                f"{gen.forward_passes} forward passes in {self.timings['total_s']:.2f} s")
        body = "".join(f'<div class="sunfish-sample"><b>sample {i + 1}</b>{_pre(t)}</div>'
                       for i, t in enumerate(gen.texts))
        return f"<div>{html.escape(head)}</div>{body}"

    def show_error(self, message: str) -> None:
        """One line in the output area; the panel stays usable."""
        self.error = " ".join(str(message).split())
        self.output.value = f'<div class="sunfish-error" style="color:#b00020">error: {html.escape(self.error)}</div>'


class TrajectoryViewer:
    """A step slider over a recorded trajectory (row `row`), showing `analysis.step_html` at each step."""

    def __init__(self, trajectory, tokenizer, row: int = 0):
        import ipywidgets as W

        from sunfish_lib.sampling.analysis import tokens

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
        from sunfish_lib.sampling.analysis import step_html

        self.html.value = step_html(self.tokenizer, self.trajectory, step - 1, self.row)
        return self.html.value
