"""The speed–quality view of the sampling panel: one point per generation, kept for the session.

Each generation becomes a `Point`: its settings, its speed and its quality.
- Speed is the forward passes per generated token and the wall time. A pass runs the whole
  batch, so the count is per sample: passes / generated tokens of one sample. AR gives 1,
  masked one-token-per-step decoding gives steps / length, and threshold decoding gives fewer.
- Quality is the unigram entropy and the judge perplexity (`quality.sample_quality`), always
  shown together. MDLM's caveat (Sahoo et al. 2024, Sec. 4.1): low-entropy text games perplexity.

Points compare only when they share a checkpoint, mode, prompt and seed (`Point.basis`).
`TradeoffLog` keeps every point, and its table and scatter show the points that share the
latest basis. So turning threshold or block length and clicking Generate again adds a point
next to the earlier ones. `sweep` draws several settings in one call (notebooks, benches).

    log = TradeoffLog()
    log.add(gen, quality, seconds=1.2, checkpoint=path, mode="uncond", prompt="ROMEO:", seed=0)
    display(HTML(log.html()))       # current figures, one table row per point, the scatter
"""

from __future__ import annotations

import base64
import io
import time
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from matplotlib.figure import Figure

from sunfish_lib.notebook.display import visible
from sunfish_lib.notebook.tables import table_html
from sunfish_lib.eval.quality import quality_of
from sunfish_lib.sampling.session import sample
from sunfish_lib.sampling.settings import SETTINGS

TEXT_CHARS = 72  # of the first sample, in the table
COLUMNS = ("run", "settings", "passes_per_token", "forward_passes", "seconds", "tokens_per_s", "entropy",
           "judge_ppl", "text")
HEADERS = {"passes_per_token": "passes / token", "forward_passes": "passes", "seconds": "wall s",
           "tokens_per_s": "tokens / s", "entropy": "entropy (nats)", "judge_ppl": "judge ppl",
           "text": "sample 1"}


@dataclass(frozen=True)
class Point:
    """One generation on the speed–quality plane."""

    settings: dict[str, Any]
    """Every SampleConfig field the generation ran with."""
    basis: tuple
    """(checkpoint, mode, prompt, seed): points compare only within one basis."""
    forward_passes: int
    tokens_per_sample: int
    """Generated tokens ([MASK] positions filled) of one sample."""
    num_samples: int
    seconds: float
    entropy: float | None
    judge_ppl: float | None
    text: str
    """The first sample's text."""

    @property
    def passes_per_token(self) -> float:
        """Forward passes per generated token of one sample (each pass serves the whole batch)."""
        return self.forward_passes / max(self.tokens_per_sample, 1)

    @property
    def tokens_per_s(self) -> float:
        """Generated tokens of all samples per second of wall time."""
        return self.tokens_per_sample * self.num_samples / max(self.seconds, 1e-9)


def point_of(gen, quality: Mapping[str, Any], *, seconds: float, checkpoint: Any, mode: str, prompt: str,
             seed: int) -> Point:
    """A `Point` from a `sampling.generate.Generation` and its `quality.sample_quality` figures."""
    return Point(settings={k: getattr(gen.sample, k) for k in SETTINGS},
                 basis=(str(checkpoint), mode, prompt, seed), forward_passes=int(gen.forward_passes),
                 tokens_per_sample=int(quality.get("tokens_per_sample") or 0), num_samples=len(gen.texts),
                 seconds=float(seconds), entropy=quality.get("entropy"), judge_ppl=quality.get("judge_ppl"),
                 text=gen.texts[0] if gen.texts else "")


def varying(points: Sequence[Point]) -> list[str]:
    """The settings that differ between points (all of them the same: sampler and steps name the point)."""
    names = [k for k in SETTINGS if len({repr(p.settings.get(k)) for p in points}) > 1]
    return names or ["sampler", "steps"]


def label(point: Point, names: Sequence[str]) -> str:
    """'threshold 0.7, block_length 8': the point's values of `names`."""
    return ", ".join(f"{k} {point.settings.get(k)}" for k in names)


class TradeoffLog:
    """Every generation of a session as a `Point`; the view shows those sharing the latest basis."""

    def __init__(self) -> None:
        self.points: list[Point] = []

    def add(self, gen, quality: Mapping[str, Any], **where) -> Point:
        """Add a generation (`point_of` keywords: seconds, checkpoint, mode, prompt, seed); returns its point."""
        point = point_of(gen, quality, **where)
        self.points.append(point)
        return point

    def series(self) -> list[Point]:
        """The points that share the latest point's checkpoint, mode, prompt and seed, oldest first."""
        if not self.points:
            return []
        basis = self.points[-1].basis
        return [p for p in self.points if p.basis == basis]

    def rows(self) -> list[dict[str, Any]]:
        """One dict per point of the series (COLUMNS), numbered in the order they were drawn."""
        series = self.series()
        names = varying(series)
        return [{"run": i + 1, "settings": label(p, names), "passes_per_token": p.passes_per_token,
                 "forward_passes": p.forward_passes, "seconds": p.seconds, "tokens_per_s": p.tokens_per_s,
                 "entropy": p.entropy, "judge_ppl": p.judge_ppl,
                 "text": _short(visible(p.text), TEXT_CHARS)} for i, p in enumerate(series)]

    def figure(self) -> Figure | None:
        """`scatter` of the series (None before the first point)."""
        rows = self.rows()
        return scatter(rows) if rows else None

    def html(self) -> str:
        """The latest point's figures, the series as a table and the scatter (a PNG): the panel's view."""
        rows = self.rows()
        if not rows:
            return ""
        last = rows[-1]
        ppl = "–" if last["judge_ppl"] is None else f"{last['judge_ppl']:.2f}"
        ent = "–" if last["entropy"] is None else f"{last['entropy']:.3f}"
        head = (f"<div class='sunfish-tradeoff-current'><b>this run</b>: {last['passes_per_token']:.3f} forward "
                f"passes per generated token ({last['forward_passes']} passes), {last['seconds']:.2f} s wall, "
                f"entropy {ent} nats, judge perplexity {ppl}</div>")
        note = (f"<div style='font-size:80%;color:#555'>{len(rows)} run(s) on this checkpoint, mode, prompt and seed; "
                "change a setting and Generate again to add a point</div>")
        table = table_html(rows, COLUMNS, HEADERS)
        return (f"<div class='sunfish-tradeoff'>{head}{note}{table}"
                f"<img alt='speed vs quality' src='data:image/png;base64,{figure_png(self.figure())}'/></div>")


def scatter(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """Forward passes per token (x; left is faster) against judge perplexity and entropy, one point per run.

    Each point carries its run number; the latest is ringed. Without a judge only the entropy panel shows.
    """
    panels = [("entropy", "unigram entropy (nats)")]
    if any(r.get("judge_ppl") is not None for r in rows):
        panels.insert(0, ("judge_ppl", "judge perplexity (lower: likelier text)"))
    fig = Figure(figsize=(4.2 * len(panels), 3.4), layout="constrained")
    for ax, (key, ylabel) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        pts = [(r["passes_per_token"], r[key], r["run"]) for r in rows if r.get(key) is not None]
        if pts:
            xs, ys, runs = zip(*pts)
            ax.scatter(xs, ys, s=28, color="#4C72B0", zorder=2)
            for x, y, n in pts:
                ax.annotate(str(n), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
            if runs[-1] == rows[-1]["run"]:
                ax.scatter([xs[-1]], [ys[-1]], s=110, facecolors="none", edgecolors="#C44E52", zorder=3)
        ax.set_xlabel("forward passes per generated token")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    fig.suptitle("speed vs quality (one point per run)", fontsize=10)
    return fig


OBJECTIVE_COLORS = {"ar": "#C44E52", "block": "#8172B2", "masked": "#4C72B0", "continuous": "#55A868"}


def models_scatter(rows: Sequence[Mapping[str, Any]]) -> Figure:
    """The speed–quality plane across models (notebook 09): forward passes per generated token against judge
    perplexity and entropy, one point per run, coloured by objective, so AR, block and masked models sit on
    one plot. rows: `compare.final_metrics` rows (`run`, `objective`, `passes_per_token`, `judge_ppl`,
    `sample_entropy`); the held-out text's judge perplexity and entropy are dashed lines (the scale)."""
    panels = [("sample_entropy", "reference_entropy", "unigram entropy (nats)")]
    if any(r.get("judge_ppl") is not None for r in rows):
        panels.insert(0, ("judge_ppl", "reference_judge_ppl", "judge perplexity (lower: likelier text)"))
    fig = Figure(figsize=(4.4 * len(panels), 3.6), layout="constrained")
    for ax, (key, ref, ylabel) in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        for r in rows:
            if r.get(key) is None or r.get("passes_per_token") is None:
                continue
            ax.scatter([r["passes_per_token"]], [r[key]], s=36, zorder=2, label=r["objective"],
                       color=OBJECTIVE_COLORS.get(r["objective"], "#555555"))
            ax.annotate(str(r["run"]), (r["passes_per_token"], r[key]), textcoords="offset points", xytext=(4, 4),
                        fontsize=7)
        refs = [r[ref] for r in rows if r.get(ref) is not None]
        if refs:
            ax.axhline(refs[0], color="#777777", ls="--", lw=1, label="held-out text")
        handles, labels = ax.get_legend_handles_labels()
        keep = {lab: h for h, lab in zip(handles, labels)}  # one legend entry per objective
        ax.legend(keep.values(), keep.keys(), fontsize=7)
        ax.set_xlabel("forward passes per generated token (left: faster)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    fig.suptitle("speed vs quality across models (one point per run)", fontsize=10)
    return fig


def figure_png(fig: Figure, dpi: int = 90) -> str:
    """The figure as a base64 PNG (for an <img> in a widget's HTML)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def sweep(loaded, grid: Sequence[Mapping[str, Any]], *, mode: str = "uncond", prompt: str = "", seed: int = 0,
          judge=None, run_dir=None, log: TradeoffLog | None = None) -> TradeoffLog:
    """Draw each settings dict of `grid` on the same prompt and seed through `session.sample`; one point each."""
    log = log if log is not None else TradeoffLog()
    for settings in grid:
        t0 = time.perf_counter()
        gen = sample(loaded, mode=mode, prompt=prompt, seed=seed, **settings)
        seconds = time.perf_counter() - t0
        q = quality_of(gen, loaded, judge=judge, run_dir=run_dir, reference=False)
        log.add(gen, q, seconds=seconds, checkpoint=loaded.path, mode=mode, prompt=prompt, seed=seed)
    return log


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"

