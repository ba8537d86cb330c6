"""Figures for the data notebook: data in, `matplotlib.figure.Figure` out (never shown here)."""

from __future__ import annotations

import numpy as np


def _figure(ncols: int = 1, width: float = 5.0, height: float = 3.2):
    from matplotlib.figure import Figure  # lazy: the data package imports with torch alone (tests/test_data_imports.py)

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    return fig, [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]


def document_length_figure(doc_chars, doc_tokens, bins: int = 30, title: str | None = None):
    """Histograms of characters and tokens per document (log-spaced bins); the median's label sits above the axes."""
    fig, (ax_c, ax_t) = _figure(2)
    for ax, values, label in ((ax_c, np.asarray(doc_chars), "characters"), (ax_t, np.asarray(doc_tokens), "tokens")):
        values = values[values > 0]
        if len(values):
            edges = np.geomspace(values.min(), values.max() + 1, bins + 1) if values.max() > values.min() else bins
            ax.hist(values, bins=edges, color="tab:blue" if label == "characters" else "tab:orange")
            ax.set_xscale("log")
            ax.axvline(np.median(values), color="k", ls="--", lw=1, label=f"median {np.median(values):,.0f}")
            ax.legend(loc="lower right", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False, borderaxespad=0.1)
        ax.set_xlabel(f"{label} per document")
        ax.set_ylabel("documents")
    fig.suptitle(title or f"{len(doc_chars)} documents")
    return fig


def packed_batch_figure(batch: dict, eos_id: int, pad_id: int | None = None, title: str | None = None):
    """A packed batch as an image: rows x positions, each document its own shade (documents run on from row to
    row), every EOS a red bar where one document ends and the next begins, padding white."""
    # lazy: the data package imports with torch alone (tests/test_data_imports.py)
    from matplotlib.colors import ListedColormap

    ids = np.asarray(batch["input_ids"])
    real = np.asarray(batch["attention_mask"]).astype(bool) if "attention_mask" in batch else np.ones_like(ids, bool)
    is_eos = (ids == eos_id) & real
    flat = is_eos.reshape(-1)
    doc = (np.cumsum(flat) - flat).reshape(ids.shape)  # document index along the stream: rows continue documents
    shades = ["#c6dbef", "#6baed6", "#fdd0a2", "#fd8d3c", "#c7e9c0", "#74c476"]
    image = np.where(real, doc % len(shades) + 1, 0)
    fig, (ax,) = _figure(1, width=9.0, height=max(2.0, 0.3 * len(ids) + 1))
    ax.imshow(image, aspect="auto", interpolation="nearest", vmin=0, vmax=len(shades),
              cmap=ListedColormap(["white", *shades]))
    rows, cols = np.nonzero(is_eos)
    for k, (r, c) in enumerate(zip(rows, cols)):
        ax.plot([c, c], [r - 0.5, r + 0.5], color="red", lw=2.5, label="EOS: a document ends" if k == 0 else None)
    ax.set_xlabel("position")
    ax.set_ylabel("sequence (row)")
    n_docs, n_pad = int(doc.max()) + 1, int((~real).sum())
    ax.set_title(title or "", loc="left", fontsize=9)
    fig.suptitle(f"packed batch {ids.shape[0]}x{ids.shape[1]}: {n_docs} document(s) in {real.mean():.1%} real tokens, "
                 f"{int(is_eos.sum())} EOS, {n_pad} padding", fontsize=10)
    if len(rows):
        ax.legend(loc="upper right", bbox_to_anchor=(1.0, 1.0 + 0.6 / max(len(ids), 1)), fontsize=8, frameon=False)
    return fig


def throughput_figure(labels: list[str], tokens_per_s: list[float]):
    """Horizontal bars of tokens/s (e.g. pipeline vs training step)."""
    fig, (ax,) = _figure(1, width=7.0, height=0.6 * len(labels) + 1.2)
    ax.barh(labels, tokens_per_s, color="tab:green")
    for y, v in enumerate(tokens_per_s):
        ax.text(v, y, f" {v:,.0f}", va="center", fontsize=9)
    ax.set_xscale("log")
    ax.set_xlim(min(tokens_per_s) / 10, max(tokens_per_s) * 5)
    ax.set_xlabel("tokens / s")
    return fig
