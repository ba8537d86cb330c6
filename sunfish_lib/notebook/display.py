"""Showing results in notebooks and the terminal: samples (once, compactly, with their quality) and tables.

One helper for samples, used by notebooks 04, 06, 07, 08 and `sunfish sample`'s pretty output:

    view = SamplesView.of(gen, tokenizer, quality=quality.quality_of(gen, loaded))
    display(view)            # notebooks: HTML (`_repr_html_`)
    print(view.text(color))  # terminal

- newlines show as a visible mark (`↵`, tabs `→`), so a sample takes a few lines, not hundreds;
- each sample sits in a fixed-height box that scrolls;
- prompt, infilled span and generated tokens have distinct styles (grey / green / black);
- the quality figures (`sunfish_lib.eval.quality`) stand beside the samples, the held-out text's
  beside them: entropy always, judge perplexity only next to it (MDLM's caveat).

Text is decoded for display per token without splitting a UTF-8 character across tokens
(`decode_pieces`), so byte-level tokens never show as `�`.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from sunfish_lib.data.pieces import NEWLINE, decode_pieces
from sunfish_lib.sampling.analysis import step_html

KINDS = ("prompt", "infill", "generated")
KIND_STYLE = {"prompt": "color:#6a6a6a", "infill": "background:#c9efc4;color:#0b5d1e",
              "generated": "color:#000"}
KIND_ANSI = {"prompt": "\033[2m", "infill": "\033[1;32m", "generated": ""}
TAB = "→"
NOCHAR = "⍰"  # a byte token that forms no character on its own (never completed by the next tokens)
BOX_HEIGHT_PX = 96


def sample_segments(tokenizer, ids: Sequence[int], start: Sequence[int]) -> list[tuple[str, str]]:
    """(text, kind) runs of one sample; kind: prompt (given), infill (generated between given tokens) or
    generated (generated with no given token after it)."""
    mask_id = tokenizer.mask_token_id
    given = [int(s) != mask_id for s in start]
    last_given = max((i for i, g in enumerate(given) if g), default=-1)
    kinds = ["prompt" if g else "infill" if i < last_given else "generated" for i, g in enumerate(given)]
    specials = {tokenizer.mask_token_id, tokenizer.pad_token_id}
    runs: list[tuple[str, str]] = []
    for piece, kind, i in zip(decode_pieces(tokenizer, ids), kinds, ids):
        if int(i) in specials:
            piece = ""
        if runs and runs[-1][1] == kind:
            runs[-1] = (runs[-1][0] + piece, kind)
        else:
            runs.append((piece, kind))
    return [r for r in runs if r[0]]


def visible(text: str) -> str:
    """Text as a samples view shows it, on one line: newline ↵, tab →, a byte that forms no character ⍰."""
    return text.replace("\r", "").replace("\n", NEWLINE).replace("\t", TAB).replace("\ufffd", NOCHAR)


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.{digits}f}".rstrip("0").rstrip(".") or "0"
    return str(v)


QUALITY_ROWS = (("entropy", "unigram entropy (nats)"), ("distinct_2", "distinct-2"), ("distinct_3", "distinct-3"),
                ("judge_ppl", "judge perplexity"))


def quality_rows(q: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(measure, samples, held-out text) rows of a `quality.sample_quality` dict; judge only with a judge."""
    rows = []
    for key, label in QUALITY_ROWS:
        if key == "judge_ppl" and q.get("judge") is None:
            continue
        rows.append((label, _fmt(q.get(key)), _fmt(q.get(f"reference_{key}"))))
    return rows


def quality_html(q: Mapping[str, Any]) -> str:
    """The quality figures as a small table: samples next to held-out text."""
    head = "<tr><th style='text-align:left'>measure</th><th>samples</th><th>held-out text</th></tr>"
    body = "".join(f"<tr><td style='text-align:left'>{html.escape(a)}</td><td>{b}</td><td>{c}</td></tr>"
                   for a, b, c in quality_rows(q))
    n = q.get("tokens_per_sample")
    note = (f"judge: {html.escape(str(q['judge']))}" if q.get("judge") else html.escape(q.get("judge_note") or ""))
    foot = (f"<div style='font-size:80%;color:#555;max-width:22em'>{n} generated tokens per sample; "
            f"held-out: {q.get('reference_windows', 0)} windows of the same length. {note}</div>")
    return f"<table class='sunfish-quality' style='font-size:85%'>{head}{body}</table>{foot}"


def quality_text(q: Mapping[str, Any]) -> str:
    """The quality figures as one line per measure (terminal)."""
    lines = [f"{a:>24}: {b:>8} (held-out text {c})" for a, b, c in quality_rows(q)]
    lines.append(f"{'judge':>24}: {q['judge']}" if q.get("judge") else f"{'':>24}  {q.get('judge_note') or ''}")
    return "\n".join(lines)


def _per_sample(q: Mapping[str, Any] | None, i: int) -> str:
    per = (q or {}).get("per_sample") or []
    if i >= len(per):
        return ""
    m = per[i]
    parts = [f"H {_fmt(m.get('entropy'))}", f"d2 {_fmt(m.get('distinct_2'))}"]
    if m.get("judge_ppl") is not None:
        parts.append(f"ppl {_fmt(m['judge_ppl'])}")
    return " · ".join(parts)


@dataclass
class SamplesView:
    """Samples as (text, kind) runs with their quality; `_repr_html_` for notebooks, `text()` for terminals."""

    samples: list[list[tuple[str, str]]]
    quality: Mapping[str, Any] | None = None
    title: str = ""
    height_px: int = BOX_HEIGHT_PX
    labels: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, gen, tokenizer, quality: Mapping[str, Any] | None = None, title: str = "", **kw) -> "SamplesView":
        """From a `sampling.generate.Generation` (its final ids and the ids it started from)."""
        samples = [sample_segments(tokenizer, r.tolist(), s.tolist()) for r, s in zip(gen.ids, gen.start)]
        return cls(samples, quality, title, **kw)

    def _label(self, i: int) -> str:
        return self.labels[i] if i < len(self.labels) else f"sample {i + 1}"

    def html(self) -> str:
        """Samples in fixed-height scroll boxes on the left, quality on the right."""
        rows = []
        for i, runs in enumerate(self.samples):
            spans = "".join(f'<span class="sf-{k}" style="{KIND_STYLE[k]}">{html.escape(visible(t))}</span>'
                            for t, k in runs)
            rows.append(
                f'<div class="sunfish-sample" style="margin:2px 0"><div style="font-size:80%;color:#555">'
                f"<b>{html.escape(self._label(i))}</b> {html.escape(_per_sample(self.quality, i))}</div>"
                f'<div style="max-height:{self.height_px}px;overflow-y:auto;border:1px solid #ddd;padding:2px 4px;'
                f'font-family:monospace;font-size:85%;white-space:pre-wrap;word-break:break-word">{spans}</div></div>')
        legend = " ".join(f'<span style="{KIND_STYLE[k]}">{k}</span>' for k in KINDS)
        legend += f" · {NEWLINE} newline · {NOCHAR} byte that forms no character"
        left = f'<div style="flex:1 1 0;min-width:0">{"".join(rows)}</div>'
        right = f'<div style="flex:0 0 auto">{quality_html(self.quality)}</div>' if self.quality else ""
        title = f"<div><b>{html.escape(self.title)}</b></div>" if self.title else ""
        return (f'<div class="sunfish-samples">{title}<div style="font-size:80%">{legend}</div>'
                f'<div style="display:flex;gap:12px;align-items:flex-start">{left}{right}</div></div>')

    def _repr_html_(self) -> str:
        return self.html()

    def text(self, color: bool = False) -> str:
        """Plain text: newlines as `↵`; infilled spans in ⟦ ⟧ (or ANSI styles with color=True)."""
        out = [self.title] if self.title else []
        for i, runs in enumerate(self.samples):
            if color:
                body = "".join(f"{KIND_ANSI[k]}{visible(t)}\033[0m" if KIND_ANSI[k] else visible(t) for t, k in runs)
            else:
                body = "".join(f"⟦{visible(t)}⟧" if k == "infill" else visible(t) for t, k in runs)
            extra = _per_sample(self.quality, i)
            out.append(f"--- {self._label(i)} ---{'  ' + extra if extra else ''}\n{body}")
        if self.quality:
            out.append(quality_text(self.quality))
        return "\n".join(out)

    def __repr__(self) -> str:
        return self.text()


def readable(tokenizer, ids: Sequence[int]) -> str:
    """Text of ids for display: characters whole (`decode_pieces`), a byte that forms no character as ⍰."""
    return "".join(decode_pieces(tokenizer, ids)).replace("\ufffd", NOCHAR)


# ----------------------------------------------------------------------------
# Static twins of widgets (what a saved copy shows)
# ----------------------------------------------------------------------------

def strip_steps(n_steps: int, count: int = 5) -> list[int]:
    """`count` 0-based steps spread evenly from the first to the last (fewer when there are fewer steps)."""
    if n_steps <= count:
        return list(range(n_steps))
    return sorted({round(i * (n_steps - 1) / (count - 1)) for i in range(count)})


def step_strip_html(tokenizer, traj, row: int = 0, count: int = 5, width_px: int = 260) -> str:
    """Selected steps of a trajectory side by side (the slider's static twin), each as `analysis.step_html`."""
    cells = "".join(f'<div style="flex:0 0 {width_px}px;font-size:80%;border-left:1px solid #ddd;padding-left:4px">'
                    f"{step_html(tokenizer, traj, s, row)}</div>" for s in strip_steps(len(traj), count))
    return f'<div class="sunfish-strip" style="display:flex;gap:6px;overflow-x:auto">{cells}</div>'
