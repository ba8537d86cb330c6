"""The sweep that chooses the `tiny` recipe: held-out bits per byte for each config and objective.

    .venv/bin/python bench/tiny_recipe.py [--steps 1500] [--configs base,lr2e-3,...] [--ar-configs ...]
        [--val-batches 8] [--out runs/bench-tiny-recipe] [--threads 2] [--smoke]

Every config is the `tiny` preset (RoPE) plus the overrides named in CONFIGS, trained with the
real trainer for --steps optimizer steps on the embedded Shakespeare corpus, then scored on the
same held-out documents with `sunfish_lib.eval.evaluate.evaluate_run`: the masked ELBO (MDLM Eq. 10,
an upper bound on the NLL) and, for --ar-configs, the AR model's exact NLL at the same budget.
Beside each: the unigram model of that tokenizer (token frequencies of the training split,
add-1/2 smoothed, scored on the same held-out tokens) — the plateau a model that has learned
no context sits on — in nats/token and bits per byte. Bits per byte is the unit that compares
tokenizers; the choice is the lowest masked bits per byte. Tokens/s is training throughput on
this machine (contended when other jobs run: compare configs by steps, not seconds).
Runs already trained under --out are reused. Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

from sunfish_lib.data import get_tokenizer
from sunfish_lib.eval.evaluate import evaluate_run, unigram_baseline
from sunfish_lib.notebook.workbook import recipe_config, train_or_reuse

BPE = {"bpe_vocab_size": 1024, "vocab_size": 1024}
BPE4096 = {"bpe_vocab_size": 4096, "vocab_size": 4096}
S128 = {"seq_len": 128, "micro_batch_size": 16}  # the first sweep's rows: same 2048 tokens per step
# Held-out masked ELBO in nats/token (unigram 5.85 for BPE-1024) measured on a 2-core CPU, 1000 steps unless
# named; the val/loss trajectories in each run's train.log show when a run left the unigram plateau.
CONFIGS: dict[str, dict] = {
    "base": {**BPE4096, **S128, "lr": 1e-3},  # the recipe before the sweep (BPE-4096, lr 1e-3): 6.46, on its plateau
    "lr2e-3": {**BPE4096, **S128, "lr": 2e-3},
    "bpe2048": {"bpe_vocab_size": 2048, "vocab_size": 2048, **S128, "lr": 2e-3},  # plateau at step 500
    "bpe1024-s128": {**BPE, **S128, "lr": 2e-3},  # 5.15 (another run: 5.30)
    "bpe1024-s128-lr1e-3": {**BPE, **S128, "lr": 1e-3},  # 5.32
    "bpe1024-s128-lr3e-3": {**BPE, **S128, "lr": 3e-3},  # plateau through step 700
    "bpe1024-s128-lr5e-3": {**BPE, **S128, "lr": 5e-3},  # plateau through step 700
    "bpe1024-s128-wu200": {**BPE, **S128, "lr": 2e-3, "warmup_steps": 200},  # 5.40
    "bpe1024-s128-mmean": {**BPE, **S128, "lr": 2e-3, "masked_loss": "masked_mean"},  # 5.26
    "bpe1024-s128-mmean-lr3e-3": {**BPE, **S128, "lr": 3e-3, "masked_loss": "masked_mean"},  # 5.81
    "bpe1024-s128-qknorm": {**BPE, **S128, "lr": 2e-3, "qk_norm": True},  # slower off the plateau (6.41 at 400)
    "bpe1024-s128-curric16": {**BPE, **S128, "lr": 2e-3, "curriculum_steps": 400, "curriculum_start_len": 16},  # 5.58
    "bpe1024": {**BPE, "lr": 2e-3},  # the tiny preset: 32 x 64 tokens; 4.99 at 1000 steps, 4.88 at 1500
    "bpe1024-lr3e-3": {**BPE, "lr": 3e-3},  # 4.94 at 1000 steps
    "bpe1024-seq32x64": {**BPE, "lr": 2e-3, "seq_len": 32, "micro_batch_size": 64},  # 5.27
    "bpe1024-loglinear": {**BPE, "lr": 2e-3, "mask_schedule": "loglinear"},
    "bpe1024-timecond": {**BPE, "lr": 2e-3, "time_conditioning": True},
    "bpe1024-iid-t": {**BPE, "lr": 2e-3, "low_discrepancy": False},
    "bpe1024-6x128": {**BPE, "lr": 2e-3, "n_layers": 6},
    "bpe1024-4x192": {**BPE, "lr": 2e-3, "d_model": 192, "n_heads": 6},
    "bytes": {"bpe_vocab_size": 260, "vocab_size": 320, "lr": 2e-3},
}
SMOKE_CONFIGS = ("base", "bpe1024")


def overrides_of(name: str, smoke: bool) -> dict:
    """CONFIGS[name], less its shape and length when smoke (the smoke preset's shape and steps win)."""
    return {k: v for k, v in CONFIGS[name].items()
            if not (smoke and k in ("seq_len", "micro_batch_size", "max_steps"))}


def run_config(name: str, objective: str, args) -> dict:
    """Train (or reuse) one config for one objective; its held-out figures and throughput."""
    cfg = recipe_config(objective, max_steps=args.steps, smoke=args.smoke,
                        overrides={**overrides_of(name, args.smoke), "val_batches": 4, "log_every": max(1, args.steps // 20),
                                   "tensorboard": False, "keep_best": 0})
    folder = args.out / f"{name}-{objective}-{cfg.train.max_steps}"
    t0 = time.perf_counter()
    trained_here = not (folder / "export" / "model.safetensors").is_file()
    train_or_reuse(cfg, folder, quiet=True)
    wall = time.perf_counter() - t0
    res = evaluate_run(folder, val_batches=args.val_batches, t_samples=args.t_samples)
    tokens = cfg.tokens_per_step * cfg.train.max_steps
    return {"config": name, "objective": objective, "steps": cfg.train.max_steps, "tokens": tokens,
            "nats_per_token": res.nats_per_token, "stderr": res.stderr, "bits_per_byte": res.bits_per_byte,
            "tokens_per_s": tokens / wall if trained_here else None, "overrides": CONFIGS[name],
            "bpe_vocab_size": cfg.data.bpe_vocab_size}


def print_row(r: dict, uni: dict) -> None:
    tps = f"{r['tokens_per_s']:.0f}" if r["tokens_per_s"] else "reused"
    print(f"{r['config']:<20}{r['objective']:<8}{r['nats_per_token']:>8.3f}{r['stderr']:>7.3f}"
          f"{uni['nats_per_token']:>9.3f}{r['nats_per_token'] / uni['nats_per_token']:>7.2f}"
          f"{r['bits_per_byte']:>8.3f}{uni['bits_per_byte']:>8.3f}{tps:>9}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated names from {', '.join(CONFIGS)}")
    ap.add_argument("--ar-configs", default="base,bpe1024", help="configs also trained as AR at the same budget")
    ap.add_argument("--ar-only", action="store_true", help="train only the AR runs of --ar-configs")
    ap.add_argument("--val-batches", type=int, default=8)
    ap.add_argument("--t-samples", type=int, default=8, help="t draws per sequence for the masked ELBO")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-tiny-recipe"))
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (the machine may be shared)")
    ap.add_argument("--smoke", action="store_true", help="2 configs on the smoke preset, a few steps (the test)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    names = list(SMOKE_CONFIGS) if args.smoke else [n.strip() for n in args.configs.split(",") if n.strip()]
    bad = [n for n in names if n not in CONFIGS]
    if bad:
        sys.exit(f"--configs: unknown config {bad[0]!r}; choose from {', '.join(CONFIGS)}")
    if args.smoke:
        args.val_batches, args.t_samples = 1, 2
    ar_names = set(names) if args.smoke else {n.strip() for n in args.ar_configs.split(",")}
    print(f"{'config':<20}{'obj':<8}{'nats/tok':>8}{'± SE':>7}{'unigram':>9}{'ratio':>7}{'bpb':>8}{'uni bpb':>8}"
          f"{'tok/s':>9}")
    rows, unigrams = [], {}
    for name in names:
        for objective in [o for o in ("masked", "ar") if (o == "masked" and not args.ar_only) or
                          (o == "ar" and name in ar_names)]:
            r = run_config(name, objective, args)
            key = r["bpe_vocab_size"]
            if key not in unigrams:
                cfg = recipe_config("masked", smoke=args.smoke, overrides=overrides_of(name, args.smoke))
                tok = get_tokenizer(cfg.data.tokenizer, cfg.data.bpe_vocab_size)
                unigrams[key] = unigram_baseline(cfg, tok, val_batches=args.val_batches)
            r["unigram"] = unigrams[key]
            r["elbo_over_unigram"] = r["nats_per_token"] / unigrams[key]["nats_per_token"]
            print_row(r, unigrams[key])
            rows.append(r)
    masked = [r for r in rows if r["objective"] == "masked"] or rows
    best = min(masked, key=lambda r: r["bits_per_byte"])
    best_unigram_bpb = min(u["bits_per_byte"] for u in unigrams.values())
    ar = next((r for r in rows if r["objective"] == "ar" and r["config"] == best["config"]
               and best["objective"] == "masked"), None)
    ratio = math.exp(best["nats_per_token"] - ar["nats_per_token"]) if ar else None
    print(f"\nbest {best['objective']} recipe by held-out bits/byte: {best['config']} {best['overrides']}: "
          f"{best['bits_per_byte']:.3f} bpb (best unigram of any tokenizer {best_unigram_bpb:.3f}); "
          f"ELBO/unigram {best['elbo_over_unigram']:.2f}" + (f"; masked/AR perplexity ratio {ratio:.2f}" if ratio else ""))
    print(json.dumps({"steps": best["steps"], "best": best["config"], "best_overrides": best["overrides"],
                      "best_bits_per_byte": best["bits_per_byte"], "best_unigram_bits_per_byte": best_unigram_bpb,
                      "elbo_over_unigram": best["elbo_over_unigram"], "masked_ar_ppl_ratio": ratio,
                      "rows": rows}))


if __name__ == "__main__":
    main()
