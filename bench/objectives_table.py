"""One likelihood table for AR, masked and continuous diffusion trained with an equal budget.

    .venv/bin/python bench/objectives_table.py [--steps 300] [--val-batches 20] [--out runs/bench-objectives]
        [--set pos_encoding=rope ...]

Each objective trains the `tiny` preset on the embedded corpus with the same steps, batch,
sequence length, optimizer and schedule (through `sunfish_lib.train.train`, i.e. the real
trainer), then is evaluated on the same held-out batches:
- AR: exact NLL;
- masked: the ELBO (an upper bound on the NLL) by antithetic Monte Carlo over t, with its SE;
- continuous: its rounding cross-entropy at small t — not a likelihood, labelled as such.
Also: perplexity, bits per byte, and the masked/AR perplexity ratio next to MDLM's
(Sahoo et al. 2024, Table 1: 23.21 / 17.54 = 1.32 on OpenWebText at 1M steps).
The run folders stay under --out for bench/sampling_masked.py. Last line: JSON. Not a test.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from sunfish_lib.config import DEFAULT_SAMPLERS, get_config
from sunfish_lib.data import get_tokenizer
from sunfish_lib.evaluate import evaluate_run
from sunfish_lib.train.trainer import train

MDLM_RATIO = 23.21 / 17.54


def train_objective(objective: str, steps: int, out: Path, reuse: bool, **overrides) -> Path:
    """Train (or, with reuse, find) `out/<objective>`; overrides go on top of the tiny preset."""
    run_dir = out / objective
    if reuse and (run_dir / "export" / "model.safetensors").is_file():
        print(f"{objective}: reusing {run_dir}")
        return run_dir
    cfg = get_config("tiny", {"objective": objective, "sampler": DEFAULT_SAMPLERS[objective], "max_steps": steps,
                              "val_every": steps, "ckpt_every": steps,
                              "log_every": max(1, steps // 20), "tensorboard": False, "keep_best": 0,
                              **overrides})
    t0 = time.perf_counter()
    summary = train(cfg, run_dir, progress=False, resume=(run_dir / "checkpoints" / "last.ckpt").is_file())
    print(f"{objective}: trained {summary['global_step']} steps in {time.perf_counter() - t0:.0f} s")
    return run_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--val-batches", type=int, default=20)
    ap.add_argument("--t-samples", type=int, default=16, help="t draws per sequence for the masked ELBO")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-objectives"))
    ap.add_argument("--reuse", action="store_true", help="reuse trained runs in --out")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for all three runs, e.g. pos_encoding=rope")
    args = ap.parse_args()
    overrides = dict(kv.split("=", 1) for kv in args.set)
    get_tokenizer("bpe", 4096)  # fetch corpus and train the BPE once, outside the timings
    rows = {}
    for objective in ("ar", "masked", "continuous"):
        run_dir = train_objective(objective, args.steps, args.out, args.reuse, **overrides)
        rows[objective] = evaluate_run(run_dir, val_batches=args.val_batches, t_samples=args.t_samples).to_dict()
    print(f"\n{'objective':<11}{'what':<40}{'nats/tok':>10}{'± SE':>8}{'ppl':>10}{'bits/byte':>11}{'tokens':>9}")
    for name, r in rows.items():
        bpb = f"{r['bits_per_byte']:.3f}" if r["bits_per_byte"] is not None else "-"
        ppl = f"{r['perplexity']:.1f}" if r["perplexity"] is not None else "-"
        print(f"{name:<11}{r['kind']:<40}{r['nats_per_token']:>10.3f}{r['stderr']:>8.3f}{ppl:>10}"
              f"{bpb:>11}{r['tokens']:>9}")
    ratio = rows["masked"]["perplexity"] / rows["ar"]["perplexity"]
    print(f"\nmasked/AR perplexity ratio: {ratio:.2f} (MDLM on OpenWebText: {MDLM_RATIO:.2f}); "
          f"equal budget: {args.steps} steps x 16 x 128 tokens each")
    print(json.dumps({"steps": args.steps, "overrides": overrides, "objectives": rows, "masked_ar_ppl_ratio": ratio,
                      "mdlm_reference_ratio": MDLM_RATIO}))


if __name__ == "__main__":
    main()
