"""After how many training steps `train.compile` pays on this machine: compile time / per-step saving, per shape.

    .venv/bin/python bench/compile_breakeven.py [--shapes tiny,mid] [--objective masked] [--steps 10] [--rounds 3]

The full training step of `bench/step_profile.py` (objective, backward, clipping, AdamW, LR schedule) on the
same batches, eager vs with the blocks compiled as `SunfishModule.configure_model` does. The compile time is the
compiled module's first steps plus one validation-mode forward (eval, no_grad: a second graph) minus the eager
module's time for the same calls; the per-step saving is the difference of the medians of `--steps` steps timed
alternately (eager, compiled, eager, ...). break-even = compile time / saving, in steps; `--rounds` fresh compiles
give the spread (each round compiles anew: `torch._dynamo.reset()`, inductor's on-disk caches off, as on a
first run; a warm cache makes later runs of the same shape compile faster, so the constant errs long). `train.compile=auto` compiles on CPU when
`train.max_steps` exceeds `sunfish_lib.train.module.CPU_COMPILE_BREAK_EVEN_STEPS`, this bench's larger figure.
Prints the table, then one JSON line. Not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from step_profile import SHAPES, build, training_parts
from sunfish_lib.train.module import CPU_COMPILE_BREAK_EVEN_STEPS

WARM = 3
"""Steps that the compile time is read from (the first compiles forward and backward; a recompile may follow)."""


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def one_round(shape: str, objective: str, steps: int) -> dict:
    torch._dynamo.reset()
    torch._inductor.config.force_disable_caches = True  # a first compile: no kernels from an earlier run or round
    _, eager, loader, _ = build(shape, objective)
    _, compiled, _, _ = build(shape, objective)
    for block in compiled.model.blocks:
        block.compile()
    it = iter(loader)
    batches = [next(it) for _ in range(WARM + steps)]
    runs = {"eager": (eager, training_parts(eager)), "compiled": (compiled, training_parts(compiled))}

    def validation(module):
        module.eval()
        with torch.no_grad():
            module.objective.loss(module.model, batches[0], generator=module._generator(0, stream=1))
        module.train()

    first = {}
    for name, (module, step) in runs.items():
        first[name] = sum(_timed(lambda i=i: step(batches[i], i)) for i in range(WARM)) + _timed(lambda: validation(module))
        _timed(lambda: validation(module))  # the second eval pass: no compile left
    times = {name: [] for name in runs}
    for i in range(WARM, WARM + steps):
        for name, (module, step) in runs.items():
            times[name].append(_timed(lambda: step(batches[i], i)))
    eager_ms, compiled_ms = (1e3 * statistics.median(times[k]) for k in ("eager", "compiled"))
    compile_s = first["compiled"] - first["eager"]
    saving_ms = eager_ms - compiled_ms
    return {"eager_ms": eager_ms, "compiled_ms": compiled_ms, "compile_s": compile_s, "speedup": eager_ms / compiled_ms,
            "break_even_steps": compile_s / (saving_ms / 1e3) if saving_ms > 0 else float("inf")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="tiny,mid")
    ap.add_argument("--objective", default="masked")
    ap.add_argument("--steps", type=int, default=10, help="timed steps per mode per round")
    ap.add_argument("--rounds", type=int, default=3, help="fresh compiles (the spread)")
    args = ap.parse_args()
    for s in args.shapes.split(","):
        if s not in SHAPES:
            sys.exit(f"--shapes: unknown shape {s!r}; choose from {', '.join(SHAPES)}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; objective {args.objective}")
    results = {}
    for shape in args.shapes.split(","):
        rounds = [one_round(shape, args.objective, args.steps) for _ in range(args.rounds)]
        med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
        spread = {k: [min(r[k] for r in rounds), max(r[k] for r in rounds)] for k in rounds[0]}
        results[shape] = {**med, "spread": spread, "rounds": rounds}
        print(f"{shape:>5}: eager {med['eager_ms']:8.2f} ms  compiled {med['compiled_ms']:8.2f} ms  "
              f"x{med['speedup']:.2f} ({spread['speedup'][0]:.2f}..{spread['speedup'][1]:.2f})  "
              f"compile {med['compile_s']:5.1f} s ({spread['compile_s'][0]:.1f}..{spread['compile_s'][1]:.1f})  "
              f"break-even {med['break_even_steps']:7.0f} steps "
              f"({spread['break_even_steps'][0]:.0f}..{spread['break_even_steps'][1]:.0f})")
    worst = max(r["break_even_steps"] for r in results.values())
    print(f"largest break-even: {worst:.0f} steps; train.compile=auto uses {CPU_COMPILE_BREAK_EVEN_STEPS} "
          "(sunfish_lib.train.module.CPU_COMPILE_BREAK_EVEN_STEPS)")
    print(json.dumps({"bench": "compile_breakeven", "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "objective": args.objective, "configs": results, "largest_break_even_steps": worst,
                      "constant": CPU_COMPILE_BREAK_EVEN_STEPS}))


if __name__ == "__main__":
    main()
