"""Training-step time of the backbone eager vs with `train.compile` (torch.compile per block, in place).

    .venv/bin/python bench/compile_speedup.py [--d-model 256] [--layers 4] [--seq-len 256] [--batch 8] [--repeats 5]

Forward + backward of a masked-diffusion-shaped backbone (bidirectional, no time conditioning) on this
machine (CPU unless a GPU is present). The compile time (first steps) is reported apart from the
steady-state median, because on CPUs it decides whether short runs gain (`train.compile=auto` compiles on CPU
past the full training step's break-even, which `bench/compile_breakeven.py` measures). Prints a table, then one
JSON line. Not a test.
"""

from __future__ import annotations

import json
import statistics
import time

import torch

from backbone_shape import backbone_and_tokens, shape, shape_parser
from sunfish_lib.model import Backbone


def timings(model: Backbone, tok: torch.Tensor, repeats: int) -> tuple[float, float]:
    """(first two steps in s: warm-up/compile, median ms of the next `repeats`)."""
    def step() -> float:
        if tok.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model(tok).float().square().mean().backward()
        if tok.is_cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    warm = step() + step()
    return warm, statistics.median(step() * 1e3 for _ in range(repeats))


def main() -> None:
    args = shape_parser(__doc__.splitlines()[0], repeats=5).parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model, tok = backbone_and_tokens(args, False, device)
    eager_warm, eager = timings(model, tok, args.repeats)
    for block in model.blocks:  # what SunfishModule.configure_model does with train.compile
        block.compile()
    compile_s, compiled = timings(model, tok, args.repeats)
    print(f"eager {eager:8.2f} ms   compiled {compiled:8.2f} ms   x{eager / compiled:.2f}   "
          f"(compile: {compile_s:.1f} s for the first two steps)")
    print(json.dumps({"bench": "compile_speedup", "device": device, "threads": torch.get_num_threads(),
                      "shape": shape(args),
                      "eager_ms": round(eager, 2), "compiled_ms": round(compiled, 2),
                      "speedup": round(eager / compiled, 3), "compile_s": round(compile_s - eager_warm, 1)}))


if __name__ == "__main__":
    main()
