"""Training-step time with and without the dense attention mask an all-ones `attention_mask` used to build.

    .venv/bin/python bench/attention_mask.py [--d-model 256] [--layers 4] [--seq-len 256] [--batch 8] [--repeats 7]

The data pipeline emits `attention_mask` whenever `data.random_length_fraction > 0` (LLaDA's 1%), so
most batches carry an all-ones mask. Before: the backbone turned it into a dense (B, 1, T, T) mask,
which keeps SDPA off its flash / memory-efficient kernels (and off `is_causal` for AR). Now
(`Backbone._restricting`) such a mask is dropped. Measured: forward + backward of the backbone on an
all-ones mask, the old path forced by skipping `_restricting`, the new path as shipped; masked
(bidirectional) and AR (causal). Median of `--repeats` after a warm-up, on this machine (CPU unless a
GPU is present). Prints a table, then one JSON line. Not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from sunfish_lib.config import ModelConfig
from sunfish_lib.model import Backbone


def step_ms(model: Backbone, tok: torch.Tensor, am: torch.Tensor, repeats: int) -> float:
    """Median ms of one forward + backward on (tok, am)."""
    times = []
    for i in range(repeats + 1):
        if tok.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(tok, attention_mask=am).float().square().mean().backward()
        if tok.is_cuda:
            torch.cuda.synchronize()
        if i:  # the first is warm-up
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    results = {}
    for name, causal in (("masked", False), ("ar", True)):
        cfg = ModelConfig(vocab_size=4096, n_layers=args.layers, n_heads=args.d_model // 64, d_model=args.d_model,
                          max_seq_len=args.seq_len, time_conditioning=False, causal=causal)
        model = Backbone(cfg).to(device)
        tok = torch.randint(0, 4096, (args.batch, args.seq_len), device=device)
        am = torch.ones_like(tok)
        new = step_ms(model, tok, am, args.repeats)
        model._restricting = lambda s, a: (s, a)  # the old path: every given mask becomes dense
        old = step_ms(model, tok, am, args.repeats)
        results[name] = {"dense_mask_ms": round(old, 2), "no_mask_ms": round(new, 2),
                         "speedup": round(old / new, 3)}
        print(f"{name:>7}: dense mask {old:8.2f} ms   no mask {new:8.2f} ms   x{old / new:.2f}")
    print(json.dumps({"bench": "attention_mask", "device": device, "threads": torch.get_num_threads(),
                      "shape": {"batch": args.batch, "seq_len": args.seq_len, "d_model": args.d_model,
                                "layers": args.layers}, **results}))


if __name__ == "__main__":
    main()
