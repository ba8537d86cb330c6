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

import json
import statistics
import time

import torch

from backbone_shape import backbone_and_tokens, shape, shape_parser
from sunfish_lib.model import Backbone


def step_s(model: Backbone, tok: torch.Tensor, am: torch.Tensor) -> float:
    """Seconds of one forward + backward on (tok, am)."""
    if tok.is_cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    model(tok, attention_mask=am).float().square().mean().backward()
    if tok.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def old_and_new_ms(model: Backbone, tok: torch.Tensor, am: torch.Tensor, repeats: int) -> tuple[float, float]:
    """Median ms (dense mask, no mask), the two paths alternated so that load changes hit both alike."""
    shipped = model._restricting
    times: dict[bool, list[float]] = {True: [], False: []}
    for i in range(repeats + 1):
        for dense in (True, False):
            model._restricting = (lambda s, a: (s, a)) if dense else shipped  # old path: every mask dense
            t = step_s(model, tok, am) * 1e3
            if i:  # the first round is warm-up
                times[dense].append(t)
    model._restricting = shipped
    return statistics.median(times[True]), statistics.median(times[False])


def main() -> None:
    args = shape_parser(__doc__.splitlines()[0], repeats=7).parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    results = {}
    for name, causal in (("masked", False), ("ar", True)):
        model, tok = backbone_and_tokens(args, causal, device)
        am = torch.ones_like(tok)
        old, new = old_and_new_ms(model, tok, am, args.repeats)
        results[name] = {"dense_mask_ms": round(old, 2), "no_mask_ms": round(new, 2),
                         "speedup": round(old / new, 3)}
        print(f"{name:>7}: dense mask {old:8.2f} ms   no mask {new:8.2f} ms   x{old / new:.2f}")
    print(json.dumps({"bench": "attention_mask", "device": device, "threads": torch.get_num_threads(),
                      "shape": shape(args), **results}))


if __name__ == "__main__":
    main()
