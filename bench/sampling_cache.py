"""Fast-dLLM's approximate KV cache for semi-AR masked decoding: speed and quality with and without it.

    .venv/bin/python bench/sampling_cache.py [--run RUN] [--judge RUN] [--length 256] [--block-length 32]
        [--samples 4] [--sampler low_confidence] [--train-steps 300] [--out runs/bench-sampling-cache]
        [--device D] [--smoke]

Samples a trained masked model: --run (a run folder, its export/ or a .ckpt), else the `tiny`
recipe (`workbook.recipe_config`, --train-steps steps) trained once into --out/masked through
`workbook.train_or_reuse` and reused after. The judge is --judge, else the workbook's ar model
next to --run, else an ar run at the masked run's budget trained into --out/ar.
Generates --samples unconditional samples of --length tokens in --block-length blocks (Fast-dLLM's
setting; steps = length, one token per pass for low_confidence), through `sample()`, with cache
none, prefix and dual, at the same seeds and temperature 0. Reported per mode: tokens/s (wall
time; noisy on a shared CPU), the model's token positions and an estimate of its FLOPs
(2 N_blocks per position for the linear layers + 4 L d per query-key pair for attention; the
vocabulary head runs only at decided positions, the same in every mode), and the quality figures
of `quality.sample_quality`: unigram entropy and judge perplexity, with their change against no
cache. Target (issue #15): >= 2x tokens/s at <= 10% judge-perplexity change. Last line: JSON. Not a test.

--objective block: a block-diffusion model (--run, else the tiny recipe with --block-size, trained into --out/block)
sampled block by block with and without its exact prefix cache (`sampling.block.BlockSampler`), greedy,
one token per step, the same seeds; reported: tokens/s of each, their ratio, whether every sample is
identical token for token, positions run. Target (issue #28): >= 3x tokens/s at length 256, block 16,
identical greedy samples (--batch rows a generation, default 8).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from sunfish_lib.eval.quality import judge_for, load_judge, sample_quality
from sunfish_lib.sampling.generate import initial_ids
from sunfish_lib.sampling.samplers import build_sampler
from sunfish_lib.sampling.session import Loaded, load_checkpoint, sample, sample_config
from sunfish_lib.notebook.workbook import equal_budget, recipe_config, train_or_reuse

MODES = ("none", "prefix", "dual")


def flops(model, positions: int, key_positions: int) -> float:
    """Backbone FLOPs: 2 per block parameter per position, 4 d per (query, key) pair per layer (QK^T and AV)."""
    block_params = sum(p.numel() for b in model.blocks for p in b.parameters())
    return 2.0 * block_params * positions + 4.0 * model.cfg.d_model * len(model.blocks) * key_positions


def run_mode(loaded, mode: str, args) -> dict:
    """--samples generations one by one (batch 1, as Fast-dLLM counts); times, work and the samples."""
    ids, starts, passes, positions, keys, seconds = [], [], 0, 0, 0, 0.0
    for i in range(args.samples):
        t0 = time.perf_counter()
        g = sample(loaded, seed=i, num_samples=1, length=args.length, steps=args.length, sampler=args.sampler,
                   block_length=args.block_length, temperature=0.0, threshold=args.threshold, cache=mode)
        seconds += time.perf_counter() - t0
        ids.append(g.ids)
        starts.append(g.start)
        passes += g.forward_passes
        positions += g.positions
        keys += g.positions * g.ids.shape[1]  # every query attends to all T keys (kept + window)
    n_tok = args.samples * args.length
    return {"cache": mode, "seconds": seconds, "tokens_per_s": n_tok / seconds, "forward_passes": passes,
            "positions": positions, "gflops": flops(loaded.model, positions, keys) / 1e9, "ids": ids,
            "starts": starts}


def models(args) -> tuple[Loaded, object]:
    """(the masked model to sample, the judge): given, or trained once into --out (see the module docstring)."""
    if args.run is None:
        cfg = recipe_config("masked", "tiny", args.train_steps, smoke=args.smoke)
        args.run = train_or_reuse(cfg, args.out / "masked")
    loaded = load_checkpoint(args.run, device=args.device)
    if args.judge is not None:
        return loaded, load_judge(args.judge)
    judge, _ = judge_for(None, loaded.run_dir or loaded.path)
    if judge is None:  # no ar model beside the run: one at its budget (its data, steps and shape)
        judge = load_judge(train_or_reuse(equal_budget(loaded.cfg, "ar"), args.out / "ar"))
    return loaded, judge


def compare(rows: list[dict]) -> None:
    """Speed, FLOPs and quality of each mode against no cache (rows[0]), in place."""
    base = rows[0]
    for r in rows:
        r["speedup"] = r["tokens_per_s"] / base["tokens_per_s"]
        r["flops_ratio"] = base["gflops"] / r["gflops"]
        r["judge_ppl_change"] = r["judge_ppl"] / base["judge_ppl"] - 1 if base["judge_ppl"] else None
        r["entropy_change"] = r["entropy"] / base["entropy"] - 1 if base["entropy"] else None  # None: 0 without cache


def _pct(change: float | None) -> str:
    return "n/a" if change is None else f"{100 * change:+.1f}%"


def block_mode(loaded: Loaded, cached: bool, args) -> dict:
    """--samples greedy generations of --batch rows with or without the exact cache: time, work, ids."""
    cfg = sample_config(loaded.cfg, {"sampler": args.sampler, "steps": args.length, "length": args.length,
                                     "temperature": 0.0, "num_samples": args.batch})
    sampler = build_sampler(loaded.model, cfg, loaded.tokenizer, cfg.sample)
    sampler.exact_cache = cached
    x = initial_ids(loaded.tokenizer, mode="uncond", length=args.length, mask_length=args.length,
                    num_samples=args.batch, max_len=cfg.model.max_seq_len).to(next(loaded.model.parameters()).device)
    ids, positions, passes, seconds = [], 0, 0, 0.0
    for i in range(args.samples):
        t0 = time.perf_counter()
        out = sampler(x, seed=i)
        seconds += time.perf_counter() - t0
        ids.append(out.ids.cpu())
        positions += out.positions
        passes += out.forward_passes
    return {"cache": "exact" if cached else "none", "seconds": seconds,
            "tokens_per_s": args.samples * args.batch * args.length / seconds, "forward_passes": passes, "positions": positions,
            "ids": torch.cat(ids)}


def block_main(args) -> None:
    """The block-diffusion comparison (module docstring): uncached, then cached, same seeds."""
    if args.run is None:
        cfg = recipe_config("block", "tiny", args.train_steps, smoke=args.smoke,
                            overrides={"block_size": args.block_size})
        args.run = train_or_reuse(cfg, args.out / "block")
    loaded = load_checkpoint(args.run, device=args.device)
    warm = {**vars(args), "samples": 1, "length": 2 * loaded.cfg.diffusion.block_size}
    block_mode(loaded, True, argparse.Namespace(**warm))
    rows = [block_mode(loaded, cached, args) for cached in (False, True)]
    same = bool(torch.equal(rows[0]["ids"], rows[1]["ids"]))
    speedup = rows[1]["tokens_per_s"] / rows[0]["tokens_per_s"]
    for r in rows:
        print(f"cache {r['cache']:>5}: {r['tokens_per_s']:8.1f} tok/s, {r['forward_passes']} passes, "
              f"{r['positions']:,} positions, {r['seconds']:.2f} s")
    print(loaded.tokenizer.decode(rows[1]["ids"][0].tolist())[:120].__repr__())
    hit = speedup >= 3 and same
    print(f"exact cache: {speedup:.2f}x tokens/s, greedy samples identical: {same} -> target {'met' if hit else 'missed'}")
    for r in rows:
        r.pop("ids")
    print(json.dumps({"objective": "block", "length": args.length, "block_size": loaded.cfg.diffusion.block_size,
                      "samples": args.samples, "batch": args.batch, "sampler": args.sampler, "model": str(args.run),
                      "device": str(next(loaded.model.parameters()).device), "speedup": speedup,
                      "identical_greedy": same, "target_met": hit, "modes": rows}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objective", default="masked", choices=("masked", "block"),
                    help="masked: Fast-dLLM's approximate cache; block: the exact prefix cache")
    ap.add_argument("--block-size", type=int, default=16, help="block: diffusion.block_size of the model trained here")
    ap.add_argument("--batch", type=int, default=8, help="block: rows per generation (at batch 1 per-pass overhead "
                    "hides the saved FLOPs on a CPU)")
    ap.add_argument("--run", type=Path, help="the masked run to sample (default: a tiny one trained into --out)")
    ap.add_argument("--judge", type=Path, help="the ar model that scores the samples (default: see above)")
    ap.add_argument("--length", type=int, default=256)
    ap.add_argument("--block-length", type=int, default=32)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--sampler", default="low_confidence",
                    choices=("low_confidence", "random", "threshold", "ancestral"), help="ancestral: block only")
    ap.add_argument("--threshold", type=float, default=0.9)
    ap.add_argument("--train-steps", type=int, default=300, help="steps of the tiny runs trained here")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-sampling-cache"))
    ap.add_argument("--device", help="cuda, mps or cpu (default: the best available)")
    ap.add_argument("--smoke", action="store_true", help="train smoke-shaped runs (seconds; the test)")
    args = ap.parse_args()
    if args.objective == "block":
        return block_main(args)
    loaded, judge = models(args)
    sample(loaded, seed=0, num_samples=1, length=8, steps=8, block_length=4, sampler=args.sampler)  # warm-up
    rows = []
    for mode in MODES:
        r = run_mode(loaded, mode, args)
        ids, starts = torch.cat(r.pop("ids")), torch.cat(r.pop("starts"))
        q = sample_quality(ids, starts, loaded.tokenizer, loaded.cfg, judge=judge, reference=False)
        r.update(entropy=q["entropy"], judge_ppl=q["judge_ppl"], text0=loaded.tokenizer.decode(ids[0].tolist())[:80])
        rows.append(r)
    compare(rows)
    for r in rows:
        print(f"cache {r['cache']:>6}: {r['tokens_per_s']:8.1f} tok/s ({r['speedup']:.2f}x), {r['forward_passes']} "
              f"passes, {r['positions']:,} positions, {r['gflops']:.2f} GFLOP ({r['flops_ratio']:.2f}x fewer), "
              f"entropy {r['entropy']:.3f} ({_pct(r['entropy_change'])}), judge ppl {r['judge_ppl']:.2f} "
              f"({_pct(r['judge_ppl_change'])})\n{'':>14}{r.pop('text0')!r}")
    best = max(rows[1:], key=lambda r: r["speedup"])
    hit = best["speedup"] >= 2 and abs(best["judge_ppl_change"]) <= 0.10
    print(f"best: cache {best['cache']}: {best['speedup']:.2f}x tokens/s, {best['flops_ratio']:.2f}x fewer FLOPs, "
          f"judge perplexity {_pct(best['judge_ppl_change'])} -> target {'met' if hit else 'missed'}")
    print(json.dumps({"length": args.length, "block_length": args.block_length, "samples": args.samples,
                      "sampler": args.sampler, "model": str(args.run), "judge": judge.name,
                      "train_steps": loaded.cfg.train.max_steps, "device": str(next(loaded.model.parameters()).device),
                      "target_met": hit, "modes": rows}))


if __name__ == "__main__":
    main()
