"""Masked-diffusion sampling: fixed-step low-confidence remasking vs confidence-threshold parallel decoding.

    .venv/bin/python bench/sampling_masked.py [--length 64] [--samples 8] [--thresholds 0.9,0.7,0.5,0.3] [--runs runs/bench-objectives]

Both samplers generate the same number of tokens from the same trained `tiny` masked model
(trained by bench/objectives_table.py into --runs, or here if missing):
- fixed: LLaDA low-confidence remasking with steps = length (one token per forward pass);
- parallel: Fast-dLLM threshold decoding (commit every position above --threshold, >= 1 per pass).
Reported: forward passes and wall time per generated token, the unigram entropy of the
samples (bits), and the AR baseline's perplexity on them (generative perplexity, lower is
more AR-plausible) — the quality cost of fewer passes. Target: >= 3x fewer forward passes.
Last line: JSON with forward_passes_fixed, forward_passes_parallel, ratio. Not a test.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from objectives_table import train_objective  # noqa: E402

from sunfish_lib.diffusion import Autoregressive  # noqa: E402
from sunfish_lib.sampling.generate import generate  # noqa: E402
from sunfish_lib.train.checkpoint import load_for_inference  # noqa: E402


def unigram_entropy(ids: torch.Tensor) -> float:
    counts = Counter(ids.flatten().tolist())
    n = sum(counts.values())
    return -sum(c / n * math.log2(c / n) for c in counts.values())


@torch.no_grad()
def ar_perplexity(ar_model, ids: torch.Tensor, bos_id: int) -> float:
    x = torch.cat([torch.full((ids.shape[0], 1), bos_id), ids], 1)
    return math.exp(Autoregressive().loss(ar_model, {"input_ids": x})["loss"].item())


def run_sampler(model, cfg, tok, name: str, **settings) -> dict:
    t0 = time.perf_counter()
    g = generate(model, cfg, tok, mode="uncond", seed=0, **settings)
    sec = time.perf_counter() - t0
    n_tok = g.ids.numel()
    return {"sampler": name, "forward_passes": g.forward_passes, "seconds": sec,
            "passes_per_token": g.forward_passes / g.ids.shape[1], "ms_per_token": 1e3 * sec / n_tok,
            "ids": g.ids, "text0": g.texts[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--length", type=int, default=64)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--temperature", type=float, default=0.0, help="0: greedy (LLaDA, Fast-dLLM)")
    ap.add_argument("--thresholds", default="0.9,0.7,0.5,0.3", help="threshold sweep (Fast-dLLM uses 0.9)")
    ap.add_argument("--steps", type=int, default=300, help="training steps if the runs must be trained here")
    ap.add_argument("--runs", type=Path, default=Path("runs/bench-objectives"))
    ap.add_argument("--masked-run", type=Path, help="sample this masked run instead (e.g. a converted AR parent, "
                    "runs/bench-convert/converted-shift-r1 from bench/convert_vs_scratch.py)")
    args = ap.parse_args()
    masked_dir = args.masked_run or train_objective("masked", args.steps, args.runs, reuse=True)
    ar_dir = train_objective("ar", args.steps, args.runs, reuse=True)
    model, cfg, tok = load_for_inference(masked_dir)
    ar_model, _, _ = load_for_inference(ar_dir)
    # greedy, as LLaDA and Fast-dLLM decode: confidence = the top probability
    common = {"num_samples": args.samples, "length": args.length, "temperature": args.temperature}
    fixed = run_sampler(model, cfg, tok, "low_confidence", sampler="low_confidence", steps=args.length, **common)
    sweep = []
    for th in (float(x) for x in args.thresholds.split(",")):
        sweep.append(run_sampler(model, cfg, tok, f"threshold {th}", sampler="threshold", steps=args.length,
                                 threshold=th, **common))
    for r in (fixed, *sweep):
        r["unigram_entropy_bits"] = unigram_entropy(r["ids"])
        r["ar_perplexity"] = ar_perplexity(ar_model, r.pop("ids"), tok.eos_token_id)
        r["pass_ratio"] = fixed["forward_passes"] / max(1, r["forward_passes"])
        print(f"{r['sampler']:>15}: {r['forward_passes']:>4} passes ({r['passes_per_token']:.2f}/token, "
              f"{r['pass_ratio']:.2f}x fewer), {r['ms_per_token']:.2f} ms/token, "
              f"entropy {r['unigram_entropy_bits']:.2f} bits, AR perplexity {r['ar_perplexity']:.1f}\n"
              f"{'':>17}{r.pop('text0')[:100]!r}")
    # headline: the highest threshold that reaches the 3x target, else the one with the most saving
    hitting = [r for r in sweep if r["pass_ratio"] >= 3]
    par = max(hitting, key=lambda r: float(r["sampler"].split()[1])) if hitting else max(sweep, key=lambda r: r["pass_ratio"])
    print(f"{par['sampler']}: {par['pass_ratio']:.2f}x fewer forward passes than fixed-step; "
          f"AR perplexity {fixed['ar_perplexity']:.1f} -> {par['ar_perplexity']:.1f}, "
          f"entropy {fixed['unigram_entropy_bits']:.2f} -> {par['unigram_entropy_bits']:.2f} bits")
    print(json.dumps({"length": args.length, "samples": args.samples, "threshold": float(par["sampler"].split()[1]),
                      "forward_passes_fixed": fixed["forward_passes"], "forward_passes_parallel": par["forward_passes"],
                      "ratio": par["pass_ratio"], "fixed": fixed, "sweep": sweep}))


if __name__ == "__main__":
    main()
