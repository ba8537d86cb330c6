"""The end of a notebook run: `summary.md` (what each notebook showed, read from the run) and `report.html`
(every executed notebook rendered to static HTML, figures embedded, linked from one index page that opens
in a browser with no server).

The summary reads only what the run wrote: run.json (status and time per notebook), each executed copy's
closing output (the "what this showed" cell), 04's `likelihoods.json` and 09's `compare.json`.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

import nbformat

from sunfish_lib.io.files import read_json
from sunfish_lib.runs.progress import duration
from sunfish_lib.notebook.tables import COMPARE_COLUMNS, COMPARE_HEADERS, compare_rows, markdown_table
from sunfish_lib.notebook.workbook import likelihood_markdown
from sunfish_lib.runs.discovery import MAIN_RUN

SUMMARY = "summary.md"
REPORT = "report.html"
PAGES = "report"
"""Subfolder of the run folder holding one rendered page per executed notebook."""
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def closing_text(notebook: Path, max_lines: int = 12) -> str:
    """The text the notebook's last code cell with output showed (its "what this showed" cell), or ''."""
    nb = nbformat.read(notebook, as_version=4)
    for cell in reversed(nb.cells):
        if cell.cell_type != "code":
            continue
        parts = []
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream" and out.get("name") == "stdout":
                parts.append(out.get("text", ""))
            data = out.get("data", {})
            if "text/markdown" in data:
                parts.append(_text(data["text/markdown"]))
            elif "text/plain" in data and set(data) == {"text/plain"}:  # else its repr stands in for a figure,
                parts.append(_text(data["text/plain"]))  # a table or a widget, which the report page shows
        text = "\n".join(p.strip() for p in parts if p.strip())
        if text:
            lines = text.splitlines()
            return "\n".join(lines[:max_lines] + (["…"] if len(lines) > max_lines else []))
    return ""


def _text(value) -> str:
    return value if isinstance(value, str) else "".join(value)


def _notebook_rows(run_dir: Path, info: dict) -> list[dict[str, Any]]:
    rows = []
    for entry in info.get("notebooks", []):
        attempt = (entry.get("attempts") or [{}])[-1]
        rows.append({"notebook": entry["notebook"], "status": entry.get("status", "?"),
                     "seconds": attempt.get("seconds"), "reason": attempt.get("reason")})
    done = {r["notebook"] for r in rows}
    rows += [{"notebook": p["notebook"], "status": "not run", "seconds": None, "reason": None}
             for p in info.get("plan", []) if p["notebook"] not in done]
    return rows


def _compare_markdown(compare: dict) -> str:
    """09's runs: likelihood beside sample quality (the columns a reader compares), held-out text's in brackets."""
    return markdown_table(compare_rows(compare.get("metrics", [])), COMPARE_COLUMNS, COMPARE_HEADERS)


def summary_markdown(run_dir: str | Path) -> str:
    """The run's summary: status and time per notebook, what each showed, the likelihood and quality tables."""
    run_dir = Path(run_dir)
    info = read_json(run_dir / "run.json")
    rows = _notebook_rows(run_dir, info)
    total = info.get("seconds") or sum(r["seconds"] or 0 for r in rows)
    commit = (info.get("git") or {}).get("commit") or "?"
    out = [f"# {run_dir.name}", "",
           f"Status **{info.get('status', '?')}**, {duration(total)} in all, commit `{commit[:10]}`.", "",
           "| notebook | status | time |", "|---|---|---|"]
    for r in rows:
        status = r["status"] + (f" ({r['reason']})" if r["reason"] else "")
        out.append(f"| {r['notebook']} | {status} | {duration(r['seconds']) if r['seconds'] is not None else '-'} |")
    likelihoods = run_dir / MAIN_RUN / "likelihoods.json"
    if likelihoods.is_file():
        out += ["", "## Held-out likelihood at equal budget (04)", "",
                likelihood_markdown(json.loads(likelihoods.read_text())),
                "", "AR is an exact NLL; the diffusion rows are upper bounds (their ELBO); the unigram row is the "
                "plateau a model that learned no context sits on."]
    compare = run_dir / "09_compare_runs" / "compare.json"
    if compare.is_file():
        out += ["", "## Runs side by side (09): likelihood beside sample quality", "",
                _compare_markdown(json.loads(compare.read_text()))]
    shown = [(r["notebook"], closing_text(run_dir / r["notebook"])) for r in rows
             if r["status"] == "ok" and (run_dir / r["notebook"]).is_file()]
    shown = [(n, t) for n, t in shown if t]
    if shown:
        out += ["", "## What each notebook showed (its closing output)"]
        for name, text in shown:
            out += ["", f"### {name}", "", "```text", text, "```"]
    out += ["", "## How to look at it", "",
            f"- `{REPORT}` in this folder: every executed notebook as a static page (open it in a browser, no server).",
            f"- `jupyter lab {run_dir}`: the executed notebooks, live.",
            f"- `sunfish runs {run_dir.parent}`: this run beside the others."]
    return "\n".join(out) + "\n"


def static_copy(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook without widget views: a saved copy keeps no widget state, so a view there shows as its
    text repr (`VBox(children=(Dropdown(...`) or "Error displaying widget: model not found"; each widget has a
    static twin beside it, which stays. The runner writes every executed copy so, and the report pages."""
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.get("outputs", []) if WIDGET_VIEW not in o.get("data", {})]
    nb.metadata.pop("widgets", None)
    return nb


def write_report(run_dir: str | Path) -> tuple[Path, Path]:
    """Write summary.md, report/<notebook>.html for each executed copy and the report.html index; return
    (summary, report)."""
    from nbconvert import HTMLExporter  # lazy: 1.1 s to import, needed only at the end of a notebook run
    from nbconvert.filters import markdown2html

    run_dir = Path(run_dir)
    summary = summary_markdown(run_dir)
    (run_dir / SUMMARY).write_text(summary)
    pages = run_dir / PAGES
    pages.mkdir(exist_ok=True)
    exporter = HTMLExporter(template_name="lab")
    links = []
    for row in _notebook_rows(run_dir, read_json(run_dir / "run.json")):
        src = run_dir / row["notebook"]
        if not src.is_file():
            continue
        body, _ = exporter.from_notebook_node(static_copy(nbformat.read(src, as_version=4)))
        page = pages / f"{src.stem}.html"
        page.write_text(body)
        links.append(f'<li><a href="{PAGES}/{page.name}">{html.escape(src.stem)}</a> — {html.escape(row["status"])}</li>')
    index = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>" + html.escape(run_dir.name) + "</title>"
             "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px}</style></head><body>"
             "<h2>Executed notebooks</h2><ul>" + "".join(links) + "</ul>" + markdown2html(summary) + "</body></html>")
    (run_dir / REPORT).write_text(index)
    return run_dir / SUMMARY, run_dir / REPORT
