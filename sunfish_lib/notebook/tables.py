"""Tables in notebooks, summary.md and report pages: one rule for how a figure is written (`number`).

`table_html` (notebooks) and `markdown_table` (summary.md) write every figure through `number`, so a
column reads at one precision everywhere: nats and bits to 3 decimals, perplexities to 1, counts with
thousands separators. `compare_rows` is the cut of notebook 09's metrics a reader compares (the
full row goes to compare.csv); `short_path` and `short_labels` keep long paths from widening a table.
Torch-free: the report at the end of a run imports it.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Mapping, Sequence


DECIMALS = {**dict.fromkeys(("nats_per_token", "stderr", "bits_per_byte", "train_loss", "val_loss", "entropy",
                             "sample_entropy", "reference_entropy", "denoise_entropy"), 3),
            **dict.fromkeys(("perplexity", "judge_ppl", "reference_judge_ppl"), 1),
            **dict.fromkeys(("distinct_2", "distinct_3", "passes_per_token"), 2), "wall_s": 0}
"""Decimals of a figure by its field: nats and bits 3 (SEs are ~0.01), perplexities 1, ratios 2, seconds 0."""


def number(v: Any, field: str | None = None) -> str:
    """A figure as a table shows it (the one rule for 09's tables, the summary and report pages).

    None or NaN '–', booleans yes/no, integers with thousands separators, floats at their field's
    decimals (DECIMALS); other floats: 1 decimal from 100 up, none from 1,000 up, 3 below 100
    (3 significant digits below 1); from a million up, 3 significant digits with an exponent.
    """
    if v is None or (isinstance(v, float) and v != v):
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return f"{v:,}"
    if not isinstance(v, float):
        return str(v)
    a = abs(v)
    if a >= 1e6:  # a loose bound's perplexity (exp of 150 nats): its size, not 67 digits
        return f"{v:.2e}"
    if field in DECIMALS:
        return f"{v:,.{DECIMALS[field]}f}"
    return f"{v:,.0f}" if a >= 1000 else f"{v:.1f}" if a >= 100 else f"{v:.3f}" if a >= 1 or a == 0 else f"{v:.3g}"


NOWRAP_CHARS = 40
"""Cells up to this long never wrap (a figure, a name, a path kept whole); longer text wraps, so no table is
wider than the page (notebook 10's sources, a long config value)."""


def table_html(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
               headers: Mapping[str, str] | None = None) -> str:
    """An HTML table of dict rows (figures by `number`, None as –); short cells never wrap, long text does."""
    columns = list(columns or (rows[0].keys() if rows else []))
    headers = headers or {}

    def cell(v, c):
        text = number(v, c)
        style = "white-space:nowrap" if len(text) <= NOWRAP_CHARS else "min-width:16em;max-width:36em"
        return f"<td style='{style}'>{html.escape(text)}</td>"

    head = "".join(f"<th>{html.escape(headers.get(c, c))}</th>" for c in columns)
    body = "".join("<tr>" + "".join(cell(r.get(c), c) for c in columns) + "</tr>" for r in rows)
    return f"<table class='sunfish-table'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None,
                   headers: Mapping[str, str] | None = None) -> str:
    """The same table as Markdown (summary.md): figures by `number`, `|` escaped."""
    columns = list(columns or (rows[0].keys() if rows else []))
    headers = headers or {}
    cell = lambda v, c: number(v, c).replace("|", "\\|")  # noqa: E731
    return "\n".join(["| " + " | ".join(headers.get(c, c) for c in columns) + " |",
                      "|" + "---|" * len(columns),
                      *("| " + " | ".join(cell(r.get(c), c) for c in columns) + " |" for r in rows)])


COMPARE_COLUMNS = ("run", "objective", "likelihood", "kind", "bits_per_byte", "entropy", "judge")
COMPARE_HEADERS = {"likelihood": "held-out nats/token ± SE", "kind": "what it is", "bits_per_byte": "bits/byte",
                   "entropy": "sample entropy, nats (held-out)", "judge": "judge ppl (held-out)"}
"""The columns a reader compares across runs (notebook 09, summary.md): likelihood beside sample quality."""


def compare_rows(metrics: Sequence[Mapping[str, Any]], labels: Mapping[str, str] | None = None) -> list[dict]:
    """`eval.compare.final_metrics` rows cut to COMPARE_COLUMNS, formatted by `number`: the likelihood with its
    SE and kind, bits/byte, and each sample figure with held-out text's in brackets (its scale, same judge)."""
    def pair(m, key, ref):
        return "–" if m.get(key) is None else f"{number(m[key], key)} ({number(m.get(ref), ref)})"

    out = []
    for m in metrics:
        nats = m.get("nats_per_token")
        out.append({"run": (labels or {}).get(m["run"], m["run"]), "objective": m.get("objective"),
                    "likelihood": "–" if nats is None else f"{number(nats, 'nats_per_token')} ± "
                                                           f"{number(m.get('stderr'), 'stderr')}",
                    "kind": m.get("eval_kind"), "bits_per_byte": m.get("bits_per_byte"),
                    "entropy": pair(m, "sample_entropy", "reference_entropy"),
                    "judge": pair(m, "judge_ppl", "reference_judge_ppl")})
    return out


def short_path(value: Any, base: str | Path | None = None, width: int = 32) -> Any:
    """A long path as a table shows it: relative to `base` when inside it, else …/ and its last two parts."""
    if not isinstance(value, str) or "/" not in value or len(value) <= width:
        return value
    p = Path(value)
    if base is not None:
        try:
            return str(p.resolve().relative_to(Path(base).resolve()))
        except ValueError:
            pass
    return "…/" + "/".join(p.parts[-2:])


def short_labels(labels: Sequence[str], width: int = 24) -> dict[str, str]:
    """label -> a short unique name: the last path part, with the parent part when names repeat; ellipsis past width."""
    parts = [str(label).rstrip("/").split("/") for label in labels]
    names = [p[-1] for p in parts]
    out = {}
    for label, p, name in zip(labels, parts, names):
        short = "/".join(p[-2:]) if names.count(name) > 1 else name
        out[label] = short if len(short) <= width else short[: width - 1] + "…"
    return out
