"""Figures for the notebooks: data in, `matplotlib.figure.Figure` out (never `plt.show()`).

Grouped by the notebook that uses them; each group takes plain data (lists of dicts,
arrays) produced by the library, so a figure can be tested by reading its artists back.
"""

from __future__ import annotations

from typing import Sequence

from matplotlib.figure import Figure

GiB = 2**30

# ----------------------------------------------------------------------------
# 01 · config and memory (data from sunfish_lib.estimate)
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
        ax.annotate(f"{gb:g} GB card", (len(rows) - 0.5, gb), ha="right", va="bottom", fontsize=8)
    ax.set_xticks(x, [_bar_label(r) for r in rows], fontsize=8)
    ax.set_ylabel("GiB per GPU at the step's peak")
    ax.set_title(title or "Memory per GPU by strategy and sequence length")
    ax.legend(loc="upper left", fontsize=8)
    return fig


def _bar_label(row: dict) -> str:
    n = row.get("n_gpus", 1)
    who = row.get("strategy", "") + (f" x{n}" if n and n > 1 else "")
    return f"{who}\nT={row['seq_len']}" if "seq_len" in row else who
