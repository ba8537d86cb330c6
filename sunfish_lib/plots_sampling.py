"""Figures for notebooks 06 (sampling) and 07 (denoising trajectories): data in, Figure out.

The 06/07 group of `plots`, kept in its own module. Inputs are what
`sunfish_lib.sampling.analysis` returns: (positions, steps) arrays, per-step curves, and
per-step lists of (token text, state) for the animation.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure

FIELD_CMAPS = {"confidence": "viridis", "distance": "magma_r", "masked": "Greys", "entropy": "plasma"}
STATE_COLORS = {"context": "#555555", "mask": "#aaaaaa", "committed": "#1a7f37", "changed": "#b35900", "same": "#000000"}


def _heatmap_on(ax, values: np.ndarray, title: str, label: str, cmap: str, fig: Figure) -> None:
    values = np.asarray(values, dtype=float)
    im = ax.imshow(values, aspect="auto", origin="upper", interpolation="nearest", cmap=cmap,
                   extent=(0.5, values.shape[1] + 0.5, values.shape[0] - 0.5, -0.5))
    ax.set_xlabel("step")
    ax.set_ylabel("position")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, label=label, shrink=0.9)


def trajectory_heatmap(values: np.ndarray, *, title: str = "", label: str = "", field: str | None = None) -> Figure:
    """One (positions, steps) array as an image: rows are positions, columns steps 1..S."""
    fig = Figure(figsize=(7.0, 3.8), layout="constrained")
    _heatmap_on(fig.add_subplot(), values, title, label, FIELD_CMAPS.get(field or "", "viridis"), fig)
    return fig


def trajectory_heatmaps(panels: Mapping[str, tuple[np.ndarray, str, str]], *, title: str | None = None) -> Figure:
    """Several heatmaps side by side; panels maps a title to (values (T, S), field name, colorbar label)."""
    n = len(panels)
    fig = Figure(figsize=(5.2 * n, 3.8), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (name, (values, field, label)) in zip(axes, panels.items()):
        _heatmap_on(ax, values, name, label, FIELD_CMAPS.get(field, "viridis"), fig)
    if title:
        fig.suptitle(title)
    return fig


def entropy_curves(curves: Mapping[str, Sequence[float]], *, title: str | None = None) -> Figure:
    """Mean entropy (nats) per step, one line per trajectory; x is the step's fraction of the run (0..1]."""
    fig = Figure(figsize=(6.5, 3.6), layout="constrained")
    ax = fig.add_subplot()
    for name, ys in curves.items():
        n = len(ys)
        ax.plot([(i + 1) / n for i in range(n)], list(ys), marker="o" if n <= 30 else None, ms=3, label=name)
    ax.set_xlabel("fraction of the reverse steps done")
    ax.set_ylabel("mean entropy (nats)")
    ax.set_title(title or "Entropy of the token distribution per step")
    ax.legend(fontsize=8)
    return fig


def layout_tokens(tokens: Sequence[tuple[str, str]], width: int = 64) -> list[tuple[int, int, str, str]]:
    """(line, column, text, state) for each token piece, wrapping at `width` characters and at newlines."""
    out, line, col = [], 0, 0
    for text, state in tokens:
        text = "".join(c if c.isprintable() or c == "\n" else " " if c == "\t" else "\ufffd" for c in text)
        for k, part in enumerate(text.split("\n")):
            if k:
                line, col = line + 1, 0
            if not part:
                continue
            if col and col + len(part) > width:
                line, col = line + 1, 0
            out.append((line, col, part, state))
            col += len(part)
    return out


def denoising_animation(frames: Sequence[Sequence[tuple[str, str]]], *, width: int = 64, title: str = "",
                        interval_ms: int = 300):
    """A matplotlib FuncAnimation with one frame per step; tokens coloured by state (STATE_COLORS)."""
    from matplotlib.animation import FuncAnimation

    layouts = [layout_tokens(f, width) for f in frames]
    lines = max([1] + [lay[-1][0] + 1 for lay in layouts if lay])
    fig_w = 0.085 * width + 0.4
    fontsize = fig_w * 0.96 * 72 / width / 0.6  # one column = one monospace character (advance ~0.6 em)
    fig = Figure(figsize=(fig_w, 0.2 * lines + 0.6), dpi=90)
    ax = fig.add_axes((0.02, 0.02, 0.96, 0.80))
    ax.set_xlim(0, width)
    ax.set_ylim(lines, 0)
    ax.axis("off")
    header = fig.text(0.02, 0.97, "", va="top", fontsize=9)

    def draw(i: int):
        for t in list(ax.texts):
            t.remove()
        for line, col, text, state in layouts[i]:
            ax.text(col, line + 0.5, text, family="monospace", fontsize=fontsize, va="center", ha="left",
                    color=STATE_COLORS.get(state, "black"), fontweight="bold" if state == "committed" else "normal")
        header.set_text(f"{title}  step {i + 1}/{len(layouts)}".strip())
        return list(ax.texts) + [header]

    return fig, FuncAnimation(fig, draw, frames=len(layouts), interval=interval_ms, blit=False, repeat=False)


def save_denoising_gif(frames: Sequence[Sequence[tuple[str, str]]], path: str | Path, *, fps: int = 4,
                       width: int = 64, title: str = "") -> Path:
    """Write the denoising animation as a GIF (matplotlib's PillowWriter); returns the path."""
    from matplotlib.animation import PillowWriter

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, anim = denoising_animation(frames, width=width, title=title)
    anim.save(str(path), writer=PillowWriter(fps=fps))
    return path
