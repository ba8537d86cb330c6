"""Data pipeline vs training throughput on the `tiny` preset (embedded corpus, offline BPE).

    .venv/bin/python bench/data_pipeline.py [--batches 200] [--steps 10] [--workers 0] [--device cpu]

Prints the figures, then one JSON line with pipeline_tokens_per_s, train_tokens_per_s and
ratio (target: >= 10, so the pipeline is never what training waits on). Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform

import torch

from sunfish_lib.config import get_config
from sunfish_lib.data.pipeline import make_loader
from sunfish_lib.train.throughput import pipeline_tokens_per_s, train_tokens_per_s
from sunfish_lib.data.tokenizer import get_tokenizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--objective", default="masked", help="objective of the training step (masked, ar, continuous)")
    ap.add_argument("--batches", type=int, default=1000, help="pipeline batches to time (1000 x 2048 tokens > one pass)")
    ap.add_argument("--steps", type=int, default=10, help="training steps to time")
    ap.add_argument("--workers", type=int, default=0, help="DataLoader workers for the pipeline (0: in-process)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    sampler = {"masked": "ancestral", "ar": "ar", "continuous": "ddim"}[args.objective]
    cfg = get_config(args.preset, {"diffusion.objective": args.objective, "sample.sampler": sampler})
    tok = get_tokenizer(cfg.data.tokenizer, cfg.data.bpe_vocab_size)
    d = cfg.data
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {args.device}")
    print(f"preset {args.preset}: source={d.source} tokenizer={d.tokenizer}({len(tok)}) "
          f"batch {d.micro_batch_size} x {d.seq_len} tokens")

    loader = make_loader(d, tok, num_workers=args.workers, seed=cfg.seed)
    pipe = pipeline_tokens_per_s(loader, n_batches=args.batches)
    print(f"pipeline: {pipe['tokens']:,} tokens in {pipe['seconds']:.2f} s over {pipe['batches']} batches "
          f"({args.workers} workers) -> {pipe['tokens_per_s']:,.0f} tokens/s")

    train = train_tokens_per_s(cfg, steps=args.steps, device=args.device, mask_token_id=tok.mask_token_id)
    print(f"train step ({train['objective']} loss, {train['params']:,} params, fwd+bwd+AdamW): "
          f"{train['steps']} steps in {train['seconds']:.2f} s -> {train['tokens_per_s']:,.0f} tokens/s")
    ratio = pipe["tokens_per_s"] / train["tokens_per_s"]
    print(f"ratio pipeline/train: {ratio:.1f}x ({'meets' if ratio >= 10 else 'BELOW'} the 10x target)")
    print(json.dumps({"pipeline_tokens_per_s": round(pipe["tokens_per_s"]), "train_tokens_per_s":
                      round(train["tokens_per_s"]), "ratio": round(ratio, 2), "workers": args.workers,
                      "device": args.device, "objective": train["objective"], "preset": args.preset}))


if __name__ == "__main__":
    main()
