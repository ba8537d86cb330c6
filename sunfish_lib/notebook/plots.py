"""Figures for the notebooks: data in, `matplotlib.figure.Figure` out (never `plt.show()`).

Grouped by the notebook that uses them; each group takes plain data (lists of dicts,
arrays) produced by the library, so a figure can be tested by reading its artists back.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.animation import FuncAnimation, PillowWriter
from matplotlib.figure import Figure

GiB = 2**30

# ----------------------------------------------------------------------------
# 01 · config and memory (data from sunfish_lib.sizing.estimate)
# ----------------------------------------------------------------------------

MEMORY_COMPONENTS = ("weights", "grads", "optimizer", "activations", "temporaries")
MEMORY_COLORS = {"weights": "#4C72B0", "grads": "#55A868", "optimizer": "#C44E52",
                 "activations": "#8172B2", "temporaries": "#CCB974"}


def memory_bars(rows: Sequence[dict], gpu_mem_gb: Sequence[float] | None = None, *, title: str | None = None) -> Figure:
    """Stacked bars of per-GPU memory (GiB) by component, one bar per row.

    rows: dicts with the five components in bytes (as `estimate.memory_sweep` returns)
    plus `strategy`, `seq_len` and `n_gpus`; gpu_mem_gb: card sizes drawn as dashed lines.
    The bars stack what is resident at each setup's peak, so a bar's height is its total.
    """
    fig = Figure(figsize=(max(6.0, 0.9 * len(rows) + 2.5), 4.5), layout="constrained")
    ax = fig.add_subplot()
    x = list(range(len(rows)))
    bottom = [0.0] * len(rows)
    for comp in MEMORY_COMPONENTS:
        heights = [r[comp] / GiB for r in rows]
        ax.bar(x, heights, bottom=bottom, color=MEMORY_COLORS[comp], label=comp, width=0.7)
        bottom = [b + h for b, h in zip(bottom, heights)]
    for gb in sorted(set(gpu_mem_gb or []), reverse=True):
        ax.axhline(gb, color="black", linestyle="--", linewidth=1)
        ax.annotate(f"{gb:g} GiB card", (len(rows) - 0.5, gb), ha="right", va="bottom", fontsize=8)
    ax.set_xticks(x, [_bar_label(r) for r in rows], fontsize=8)
    ax.set_ylabel("GiB per GPU at the step's peak")
    ax.set_title(title or "Memory per GPU by strategy and sequence length")
    ax.legend(loc="upper left", fontsize=8)
    return fig


def _bar_label(row: dict) -> str:
    n = row.get("n_gpus", 1)
    who = row.get("strategy", "") + (f" x{n}" if n and n > 1 else "")
    return f"{who}\nT={row['seq_len']}" if "seq_len" in row else who


# ----------------------------------------------------------------------------
# 05 · noise schedules (data from sunfish_lib.diffusion.analysis)
# ----------------------------------------------------------------------------

SCHEDULE_COLORS = {"linear": "#4C72B0", "cosine": "#55A868", "sqrt": "#C44E52"}


def schedule_curves_figure(curves: dict) -> Figure:
    """alpha_bar, log10 SNR and beta against t, one line per schedule (`analysis.schedule_curves`)."""
    fig = Figure(figsize=(13.0, 3.6), layout="constrained")
    axes = fig.subplots(1, 3)
    for kind, c in curves.items():
        color = SCHEDULE_COLORS.get(kind)
        axes[0].plot(c["t"], c["alpha_bar"], label=kind, color=color)
        axes[1].plot(c["t"], [math.log10(max(v, 1e-30)) for v in c["snr"]], label=kind, color=color)
        axes[2].plot(c["t"], c["beta"], label=kind, color=color)
    for ax, name in zip(axes, ("alpha_bar(t)", "log10 SNR(t)", "beta(t)")):
        ax.set_xlabel("t = step / T")
        ax.set_title(name)
        ax.legend(fontsize=8)
    axes[2].set_yscale("log")
    return fig


def recovery_figure(recovery: dict, *, title: str | None = None) -> Figure:
    """Fraction of tokens recovered by rounding noisy embeddings against t (`analysis.recovery_accuracy`)."""
    fig = Figure(figsize=(6.0, 3.8), layout="constrained")
    ax = fig.add_subplot()
    for kind, r in recovery.items():
        ax.plot(r["t"], r["accuracy"], marker="o", ms=3, label=kind, color=SCHEDULE_COLORS.get(kind))
    ax.set_xlabel("t = step / T")
    ax.set_ylabel("tokens recovered by rounding")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(title or "Token recovery from x_t / sqrt(alpha_bar)")
    ax.legend(fontsize=8)
    return fig


def loss_by_t_figure(losses: dict, *, title: str | None = None) -> Figure:
    """A trained model's MSE and rounding CE (and accuracy) against t (`analysis.loss_by_t`)."""
    fig = Figure(figsize=(11.0, 3.6), layout="constrained")
    ax_mse, ax_ce = fig.subplots(1, 2)
    ax_mse.plot(losses["t"], losses["mse"], marker="o", ms=3)
    ax_mse.set_ylabel("MSE (prediction target)")
    ax_ce.plot(losses["t"], losses["rounding_ce"], marker="o", ms=3, color="#C44E52", label="rounding CE (nats)")
    ax_acc = ax_ce.twinx()
    ax_acc.plot(losses["t"], losses["rounding_acc"], ls="--", color="#55A868", label="rounding accuracy")
    ax_acc.set_ylim(0, 1)
    ax_acc.set_ylabel("accuracy")
    for ax in (ax_mse, ax_ce):
        ax.set_xlabel("t = step / T")
    fig.legend(loc="outside lower center", ncols=2, fontsize=8)
    fig.suptitle(title or "Loss against t")
    return fig


# ----------------------------------------------------------------------------
# 03/04 · training curves (data from sunfish_lib.io.metrics.read_metrics)
# ----------------------------------------------------------------------------

TRAINING_PANELS = (
    ("loss", ("train/loss", "val/loss")),
    ("learning rate", ("lr",)),
    ("tokens / s", ("perf/tokens_per_s",)),
    ("gradient norm", ("train/grad_norm",)),
)


def _lr_key(rows: Sequence[dict]) -> str | None:
    keys = sorted({k for r in rows for k in r if k.startswith("lr-")})
    return keys[0] if keys else None


def training_curves(rows: Sequence[dict], *, title: str | None = None,
                    panels: Sequence[tuple[str, Sequence[str]]] = TRAINING_PANELS,
                    references: Mapping[str, float] | None = None) -> Figure:
    """One panel per quantity against optimizer step; lines only for metrics present in `rows`.
    references: {label: y} dashed horizontal lines on the first panel (e.g. a loss to get below)."""
    fig = Figure(figsize=(4 * len(panels), 3.2), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    lr_key = _lr_key(rows)
    for ax, (name, keys) in zip(axes, panels):
        for key in keys:
            key = lr_key if key == "lr" else key
            pts = [(r["step"], r[key]) for r in rows if key and key in r and "step" in r]
            if pts:
                ax.plot(*zip(*pts), marker="." if len(pts) < 30 else None, label=key)
        for label, y in (references or {}).items() if ax is axes[0] else ():
            ax.axhline(y, color="k", ls="--", lw=1, label=label)
        ax.set_title(name)
        ax.set_xlabel("step")
        if ax.lines:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


# ----------------------------------------------------------------------------
# 08 · AR -> diffusion (data from sunfish_lib.io.metrics.read_metrics and evaluate.evaluate_run)
# ----------------------------------------------------------------------------

def conversion_curves(runs: dict[str, Sequence[dict]], elbo: dict[str, float] | None = None, *,
                      title: str | None = None) -> Figure:
    """Masked-diffusion loss against step, one line per run (converted ones and the from-scratch baseline).

    runs: label -> metric rows (`step`, `train/loss`, `val/loss`); training loss as lines,
    validation loss as markers of the same colour. elbo: label -> validation ELBO in
    nats/token, drawn as a second panel of bars (lower is better).
    """
    fig = Figure(figsize=(11.0 if elbo else 6.5, 3.8), layout="constrained")
    axes = fig.subplots(1, 2 if elbo else 1, squeeze=False)[0]
    ax = axes[0]
    for i, (label, rows) in enumerate(runs.items()):
        color = f"C{i}"
        train = [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r and "step" in r]
        val = [(r["step"], r["val/loss"]) for r in rows if "val/loss" in r and "step" in r]
        if train:
            ax.plot(*zip(*train), color=color, label=label, alpha=0.85)
        if val:
            ax.plot(*zip(*val), color=color, ls="none", marker="o", ms=5, label=f"{label} (val)")
    ax.set_xlabel("step")
    ax.set_ylabel("masked loss (ELBO estimate, nats/token)")
    ax.set_title("Masked-diffusion loss at equal steps")
    if ax.lines:
        ax.legend(fontsize=8)
    if elbo:
        bx = axes[1]
        labels = list(elbo)
        bars = bx.barh(labels, [elbo[k] for k in labels], color=[f"C{list(runs).index(k)}" if k in runs else "grey"
                                                                 for k in labels])
        bx.bar_label(bars, fmt="%.3f", fontsize=8)
        bx.invert_yaxis()
        bx.set_xlabel("validation ELBO (nats/token, lower is better)")
        bx.set_title("Masked ELBO on held-out text")
    if title:
        fig.suptitle(title)
    return fig


# ----------------------------------------------------------------------------
# 06/07 · sampling and denoising trajectories (data from sunfish_lib.sampling.analysis:
# (positions, steps) arrays, per-step curves, per-step (token text, state) lists)
# ----------------------------------------------------------------------------

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


def entropy_label(traj) -> str:
    """What `sampling.analysis.step_entropy` averages over for this trajectory, as an axis label."""
    if "masked" in traj.fields():
        return "mean entropy over still-masked positions (nats)"
    return "mean entropy over all generated positions (nats)"


def entropy_curves(curves: Mapping[str, Sequence[float]], *, ylabels: Mapping[str, str] | None = None,
                   title: str | None = None) -> Figure:
    """Mean entropy (nats) per step, one panel per trajectory with its own y axis and label (`entropy_label`):
    a masked sampler averages over the positions still masked, a continuous one over all positions, so the
    two are different quantities and never share an axis. x is the step's fraction of the run (0..1]."""
    ylabels = ylabels or {}
    fig = Figure(figsize=(4.2 * max(1, len(curves)), 3.4), layout="constrained")
    axes = fig.subplots(1, max(1, len(curves)), sharex=True, squeeze=False)[0]
    for ax, (name, ys) in zip(axes, curves.items()):
        n = len(ys)
        ax.plot([(i + 1) / n for i in range(n)], list(ys), marker="o" if n <= 30 else None, ms=3, label=name)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("fraction of the reverse steps done")
        ax.set_ylabel(ylabels.get(name, "mean entropy (nats)"), fontsize=8)
    fig.suptitle(title or "Entropy of the token distribution per step")
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, anim = denoising_animation(frames, width=width, title=title)
    anim.save(str(path), writer=PillowWriter(fps=fps))
    return path


# ----------------------------------------------------------------------------
# 09 · comparing runs (data from sunfish_lib.eval.compare.curves: metric rows with `tokens`, `wall_s`)
# ----------------------------------------------------------------------------

COMPARE_X = (("step", "step"), ("tokens", "tokens"), ("wall_s", "wall time (s)"))
LOSS_AXIS = {"ar": "AR loss: exact NLL (nats/token)", "masked": "masked loss: ELBO estimate (nats/token)",
             "block": "block loss: NELBO estimate (nats/token)",
             "continuous": "continuous training loss\n(not a likelihood: `sunfish evaluate` gives the bound)", "": "loss"}
"""y-axis label per objective: their losses are not on one scale, so each gets its own row."""


def compare_curves(runs: Mapping[str, Sequence[dict]], *, objectives: Mapping[str, str] | None = None,
                   keys: Sequence[str] = ("train/loss", "val/loss"), title: str | None = None) -> Figure:
    """One row per objective (losses that do not compare never share an axis), one column per x axis
    (step, tokens, wall time); one colour per run, training loss as a line, validation as markers.

    objectives: label -> objective name (None: one row). The legend sits outside the axes, on
    the right. A run without `wall_s` (trained before the time was logged) is left out of that
    column only.
    """
    objectives = objectives or {}
    groups = list(dict.fromkeys(objectives.get(label, "") for label in runs))
    fig = Figure(figsize=(15.0, 3.0 * len(groups) + 0.6), layout="constrained")
    axes = fig.subplots(len(groups), len(COMPARE_X), squeeze=False)
    for row, group in zip(axes, groups):
        for ax, (x, xlabel) in zip(row, COMPARE_X):
            for i, (label, rows) in enumerate(runs.items()):
                if objectives.get(label, "") != group:
                    continue
                for key in keys:
                    pts = [(r[x], r[key]) for r in rows if x in r and key in r]
                    val = key.startswith("val/")
                    if pts:
                        ax.plot(*zip(*pts), color=f"C{i}", label=f"{label} ({key.split('/')[0]})",
                                ls="none" if val else "-", marker="o" if val or len(pts) < 30 else None, ms=4)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(LOSS_AXIS.get(group, group))
    handles = {h.get_label(): h for ax in axes.flat for h in ax.lines}
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize=8)
    if title:
        fig.suptitle(title)
    return fig
