"""Where diffusion wins: masked vs AR vs AR on reversed targets, equal token budgets, on reversal, path-star, Sudoku 4x4.

    .venv/bin/python bench/where_diffusion_wins.py [--scale full|workbook|smoke] [--out DIR] [--parallel 2]

Each model trains in stages (`task_lab.run_job`: 500, 1000, 2000, ... 16000 steps, at most ~10 minutes of wall clock,
one torch thread, two models at once) and answers its task's test rows after every stage, so a missed
target comes with its learning curve. The table compares objectives at the largest stage all of a task's
models reached (equal tokens). Masked models report every decoding order (random, top probability,
margin) and the best; Sudoku compares margin with random order. Timing figures are wall clock on a
shared machine: `uptime` load is printed beside them. Last line: JSON with reversal_backward_masked,
reversal_backward_ar, path_star_masked, path_star_ar, minutes (and the rest).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from sunfish_lib.notebook.task_lab import headline, run_lab, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", default="full", choices=("full", "workbook", "smoke"))
    ap.add_argument("--out", type=Path, help="folder for tasks, runs and results.json (default: a temporary one)")
    ap.add_argument("--parallel", type=int, default=2, help="models trained at once (one torch thread each)")
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="where-diffusion-wins-"))
    results = run_lab(out, args.scale, parallel=args.parallel)
    for task, entry in summary(results).items():
        print(f"\n{task}: {entry['steps']} steps, {entry['tokens']:,} tokens per model")
        for label, r in entry.items():
            if isinstance(r, dict):
                accs = ", ".join(f"{d} {a:.3f} ± {r['stderr'][d]:.3f}" for d, a in r["accuracy"].items())
                extra = f" (order {r['order']}, AR-ness {r['ar_ness']:.2f})" if r["ar_ness"] is not None else ""
                print(f"  {label:<12} {accs}{extra}; {r['train_minutes']} min")
    print("\nlearning curves (accuracy per stage; masked: best order):")
    for r in results:
        pts = []
        for c in r["curve"]:
            best = max(r["orders"], key=lambda o: sum(c[o]["accuracy"].values()))
            pts.append(f"{c['steps']}: " + "/".join(f"{a:.2f}" for a in c[best]["accuracy"].values()))
        print(f"  {r['task']} {r['label']}: " + "; ".join(pts))
    print(f"results in {out / 'results.json'}; load {os.getloadavg()[0]:.1f} (1-min average, 2 cores)")
    print(json.dumps({**headline(results), "load_1min": round(os.getloadavg()[0], 1)}))


if __name__ == "__main__":
    main()
