"""Estimated vs measured peak memory of one training step on CPU (forward, backward, AdamW step).

    .venv/bin/python bench/memory_estimate.py            # tiny and mid, ~1-2 min on 2 cores
    .venv/bin/python bench/memory_estimate.py --cases tiny

How it measures: torch's profiler with `profile_memory=True` records every CPU
allocation and free made while it runs (the allocator reports them; blocks that existed
before profiling started are not reported when freed, so profiling starts right after
the model and the batch are made). Two steps run under it: the first creates AdamW's
state and leaves gradients behind, as in steady-state training; the second is the one
reported. Baseline: the bytes of the parameters and the batch, summed from the tensors
themselves; peak: baseline + the highest running sum of allocations minus frees within
the second step (also per phase: forward, backward, optimizer step). Each case runs in
a fresh subprocess so that no allocation of one case leaks into another's running sum.

The step mirrors Lightning's automatic optimisation at precision 32-true: training_step
(the objective's own `loss(model, batch)` from sunfish_lib.diffusion), then
zero_grad(set_to_none=True), backward, clip_grad_norm_, and the project's AdamW
(`sunfish_lib.train.optim.build_optimizer`: layer-wise groups, foreach on CPU).
The estimate is `sunfish_lib.sizing.estimate.report(..., device="cpu")`. Target: within +-15%.
The last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MiB = 2**20
CASES = {
    # the tiny preset as configured (continuous objective: time-conditioned backbone)
    "tiny": dict(preset="tiny", overrides={}),
    # 6 layers, d=512, GPT-2 vocabulary, seq 512, batch 8, masked objective
    "mid": dict(preset="125M", objective="masked",
                overrides={"n_layers": 6, "d_model": 512, "n_heads": 8, "max_seq_len": 512, "seq_len": 512,
                           "micro_batch_size": 8, "accumulate_grad_batches": 1}),
    # the same with activation checkpointing
    "mid_ckpt": dict(preset="125M", objective="masked",
                     overrides={"n_layers": 6, "d_model": 512, "n_heads": 8, "max_seq_len": 512, "seq_len": 512,
                                "micro_batch_size": 8, "accumulate_grad_batches": 1,
                                "activation_checkpointing": True}),
}
PHASES = ("forward", "backward", "optimizer_step")


def _config(case: str):
    from sunfish_lib.sizing.estimate import config_for

    spec = CASES[case]
    return config_for(spec["preset"], spec.get("objective"), spec["overrides"])


def _live_bytes(tensors) -> int:
    seen = {}
    for t in tensors:
        if t is not None and t.device.type == "cpu":
            st = t.untyped_storage()
            seen[st.data_ptr()] = st.nbytes()
    return sum(seen.values())


def _train_step(model, objective, opt, batch):
    import torch
    from torch.profiler import record_function

    with record_function("forward"):
        out = objective.loss(model, batch)
        loss = out["loss"]
    with record_function("backward"):
        opt.zero_grad(set_to_none=True)
        loss.backward()
    with record_function("optimizer_step"):
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return float(out.get("mask_fraction", 1.0))


def _running_peaks(prof) -> dict[str, int]:
    """Highest running sum of allocations - frees within the last range of each phase name."""
    from torch._C._profiler import _EventType

    allocs, ranges, stack = [], {}, list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        if node.typed[0] == _EventType.Allocation:
            allocs.append((node.start_time_ns, node.typed[1].alloc_size))
        elif node.name in PHASES and node.start_time_ns > ranges.get(node.name, (-1, 0))[0]:
            ranges[node.name] = (node.start_time_ns, node.end_time_ns)  # keep the second step's
        stack.extend(node.children)
    allocs.sort()
    cur, per_phase = 0, {k: 0 for k in PHASES}
    for ts, size in allocs:
        cur += size
        for name, (a, b) in ranges.items():
            if a <= ts <= b:
                per_phase[name] = max(per_phase[name], cur)
    return per_phase


def measure(case: str) -> dict:
    """Run one case in this process: estimate, then two profiled steps (the second is measured)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from sunfish_lib.diffusion import build_objective
    from sunfish_lib.sizing.estimate import estimate_memory, make_setup, report
    from sunfish_lib.model import Backbone
    from sunfish_lib.train.optim import build_optimizer

    torch.manual_seed(0)
    cfg = _config(case)
    B, T = cfg.data.micro_batch_size, cfg.data.seq_len
    est = report(cfg, strategy="single", n_gpus=1, precision="32-true", device="cpu")
    model = Backbone.from_config(cfg).train()
    opt = build_optimizer(model, cfg.train, cfg.model.n_layers)
    V = cfg.model.vocab_size
    objective = build_objective(cfg, mask_token_id=V - 1)  # stand-in [MASK] id: the last row
    batch = {"input_ids": torch.randint(0, V - 1, (B, T))}
    if not cfg.data.cross_document_attention:  # documents of ~100 tokens
        batch["segment_ids"] = (torch.rand(B, T) < 0.01).cumsum(1)
    baseline = _live_bytes([*model.parameters(), *batch.values()])
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        _train_step(model, objective, opt, batch)  # creates AdamW state; leaves grads behind
        t0 = time.perf_counter()
        frac = _train_step(model, objective, opt, batch)
        seconds = time.perf_counter() - t0
    per_phase = _running_peaks(prof)
    # the estimate bounds the masked fraction by the worst step's; also evaluate it at this step's
    setup = replace(make_setup(cfg, precision="32-true", device="cpu"), mask_fraction=frac)
    return {
        "estimated_at_step_mask_fraction": estimate_memory(cfg, setup).total, "mask_fraction": frac,
        "estimated": est["memory"]["total"], "measured": baseline + max(per_phase.values()),
        "estimated_phases": est["phases"], "measured_phases": {k: baseline + v for k, v in per_phase.items()},
        "estimated_components": est["memory"], "detail": est["memory_detail"], "baseline": baseline,
        "params": est["params"], "step_seconds": round(seconds, 2), "shape": {"B": B, "T": T},
    }


def _print_case(name: str, r: dict) -> None:
    print(f"\n== {name}: {r['params']:,} params, B={r['shape']['B']} T={r['shape']['T']}, "
          f"profiled step {r['step_seconds']} s")
    print(f"{'component (estimate, at its peak)':<36}{'MiB':>10}")
    for k, v in r["estimated_components"].items():
        print(f"  {k:<34}{v / MiB:>10.1f}")
    print(f"{'phase':<20}{'estimated MiB':>15}{'measured MiB':>15}{'ratio':>8}")
    for k in PHASES:
        e, m = r["estimated_phases"][k], r["measured_phases"][k]
        print(f"  {k:<18}{e / MiB:>15.1f}{m / MiB:>15.1f}{e / m:>8.3f}")
    print(f"  {'peak':<18}{r['estimated'] / MiB:>15.1f}{r['measured'] / MiB:>15.1f}{r['ratio']:>8.3f}"
          f"   (baseline: parameters + batch, {r['baseline'] / MiB:.1f} MiB)")
    if r["mask_fraction"] < 1.0:
        e = r["estimated_at_step_mask_fraction"]
        print(f"  masked fraction this step {r['mask_fraction']:.3f}: estimate at it {e / MiB:.1f} MiB, "
              f"ratio {e / r['measured']:.3f} (the estimate above assumes the worst step's fraction)")


def main(argv: list[str] | None = None) -> int:
    """Run each case in a subprocess, print its table, then one JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:  # one case, in a fresh process; print its JSON only
        print(json.dumps(measure(args.child)))
        return 0
    summary = {}
    for name in args.cases:
        out = subprocess.run([sys.executable, __file__, "--child", name], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        r["ratio"] = r["estimated"] / r["measured"]
        _print_case(name, r)
        summary[name] = {"estimated": r["estimated"], "measured": r["measured"], "ratio": round(r["ratio"], 4)}
        if r["mask_fraction"] < 1.0:
            summary[name]["ratio_at_step_mask_fraction"] = round(r["estimated_at_step_mask_fraction"] / r["measured"], 4)
    ok = all(abs(v["ratio"] - 1) <= 0.15 for v in summary.values())
    print(f"\nwithin +-15%: {'yes' if ok else 'NO'}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
