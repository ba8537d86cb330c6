"""Sampling panel latency: time to the first intermediate text and total time per Generate click.

    .venv/bin/python bench/sampling_latency.py [--repeats 5] [--threads 1] [--checkpoint RUN]

The notebook 06 panel (`widgets.SamplingPanel`) with its default settings, which are the
checkpoint's own `sample` settings, clicked `--repeats` times after one warm-up click, for
a `tiny`-preset model of each diffusion objective (masked: low_confidence; continuous:
ddim). Untrained weights are exported to a temporary folder unless --checkpoint is given:
the time per step does not depend on what the weights are. Reported per objective: the
median and max of the time from the click to the first streamed intermediate text, and
of the total time to the finished samples. Last line: JSON. Not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import torch


def tiny_export(folder: Path, objective: str) -> Path:
    """An untrained `tiny` model of `objective` exported as a run folder (export/ + config.json)."""
    from sunfish_lib.config import get_config
    from sunfish_lib.data import get_tokenizer
    from sunfish_lib.model import Backbone
    from sunfish_lib.config import DEFAULT_SAMPLERS
    from sunfish_lib.io.export import export_model

    cfg = get_config("tiny", {"objective": objective, "sampler": DEFAULT_SAMPLERS[objective]})
    torch.manual_seed(0)
    run = folder / f"tiny-{objective}"
    export_model(Backbone.from_config(cfg), cfg, run / "export", get_tokenizer("bpe", cfg.data.bpe_vocab_size))
    cfg.save(run / "config.json")
    return run


def time_panel(checkpoint: Path, repeats: int) -> dict:
    """Click the panel's Generate (defaults) 1 + repeats times; the first click is a warm-up."""
    from sunfish_lib.notebook.widgets import SamplingPanel

    panel = SamplingPanel(checkpoint=checkpoint)
    if panel.loaded is None:
        raise SystemExit(f"cannot load {checkpoint}: {panel.error}")
    first, total = [], []
    for i in range(repeats + 1):
        panel.seed.value = i
        panel.generate_button.click()
        if panel.error:
            raise SystemExit(f"generate failed: {panel.error}")
        if i:
            first.append(panel.timings["first_text_s"])
            total.append(panel.timings["total_s"])
    s = panel.last.sample
    return {"objective": panel.loaded.objective, "sampler": s.sampler, "steps": s.steps, "length": s.length,
            "num_samples": s.num_samples, "forward_passes": panel.last.forward_passes,
            "first_text_ms_median": 1e3 * statistics.median(first), "first_text_ms_max": 1e3 * max(first),
            "total_ms_median": 1e3 * statistics.median(total), "total_ms_max": 1e3 * max(total)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5, help="timed clicks per objective (after one warm-up)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steady on a shared 2-core box)")
    ap.add_argument("--checkpoint", type=Path, action="append", help="time this checkpoint instead (repeatable)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = args.checkpoint or [tiny_export(Path(tmp), o) for o in ("masked", "continuous")]
        for path in paths:
            r = time_panel(path, args.repeats)
            rows.append(r)
            print(f"{r['objective']:>10} / {r['sampler']:<14} {r['steps']} steps, {r['num_samples']} x {r['length']} tokens: "
                  f"first text {r['first_text_ms_median']:.1f} ms (max {r['first_text_ms_max']:.1f}), "
                  f"total {r['total_ms_median']:.0f} ms (max {r['total_ms_max']:.0f}), "
                  f"{r['forward_passes']} forward passes")
    print(json.dumps({"device": "cpu", "threads": args.threads, "repeats": args.repeats, "results": rows}))


if __name__ == "__main__":
    main()
