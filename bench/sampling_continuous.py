"""DDPM-1000 vs DDIM-50 on the same batch: wall time and forward passes of the continuous sampler.

    .venv/bin/python bench/sampling_continuous.py                  # tiny preset, 4 x 128 tokens, ~15 s on one core
    .venv/bin/python bench/sampling_continuous.py --batch 16 --length 256 --device cuda

The model is the `tiny` preset's backbone at its (random) init: sampling cost does not
depend on the weights. Both samplers start from the same x_T (same seed) and end with
the same final rounding; the only difference is the number of reverse steps, so the
speedup should approach 1000 / 50 = 20 minus the fixed costs (rounding, setup). A
warm-up call runs first so allocator and thread-pool start-up is not billed to DDPM.
One CPU thread by default: with two threads on a busy 2-core machine, OpenMP's
spin-waiting made single forward passes swing between 7 and 750 ms.
DDIM runs `--repeats` times around the DDPM run (before and after) and its median is
reported; on a shared machine, if the DDIM timings before and after DDPM differ by
more than 30%, the machine's load changed during the run and the speedup is noise (the
script says so). Target: DDIM-50 at least 15x faster. The last line printed
is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _time(sampler, args, device) -> tuple[float, int]:
    import torch

    from sunfish_lib.sampling.noise import RowNoise

    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    sampler.sample(args.batch, args.length, noise=RowNoise(args.seed))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0, sampler.forward_passes


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--ddpm-steps", type=int, default=1000)
    p.add_argument("--ddim-steps", type=int, default=50)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (0: torch's default); 1 keeps timings stable on a shared machine")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="DDIM timings (median reported), split around DDPM")
    args = p.parse_args(argv)

    import torch

    from sunfish_lib.config import get_config
    from sunfish_lib.diffusion import build_objective
    from sunfish_lib.model import Backbone
    from sunfish_lib.sampling import ContinuousSampler

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cfg = get_config(args.preset, objective="continuous", sampler="ddim")
    torch.manual_seed(args.seed)
    model = Backbone.from_config(cfg).to(device).eval()
    objective = build_objective(cfg)
    ddpm = ContinuousSampler(model, objective, kind="ddpm", steps=args.ddpm_steps)
    ddim = ContinuousSampler(model, objective, kind="ddim", steps=args.ddim_steps, eta=0.0)
    ContinuousSampler(model, objective, kind="ddim", steps=3).sample(args.batch, args.length)  # warm-up

    before = [_time(ddim, args, device)[0] for _ in range((args.repeats + 1) // 2)]
    ddpm_s, ddpm_fp = _time(ddpm, args, device)
    after = [_time(ddim, args, device)[0] for _ in range(args.repeats // 2)]
    ddim_s, ddim_fp = statistics.median(before + after), ddim.forward_passes
    res = {
        "preset": args.preset, "device": str(device), "threads": torch.get_num_threads(),
        "batch": args.batch, "length": args.length, "params": model.num_params(),
        "ddpm_steps": args.ddpm_steps, "ddim_steps": args.ddim_steps,
        "ddpm_forward_passes": ddpm_fp, "ddim_forward_passes": ddim_fp,
        "ddpm_s": round(ddpm_s, 3), "ddim_s": round(ddim_s, 3), "speedup": round(ddpm_s / ddim_s, 2),
        "ddpm_ms_per_pass": round(1000 * ddpm_s / ddpm_fp, 2), "ddim_ms_per_pass": round(1000 * ddim_s / ddim_fp, 2),
    }
    print(f"{args.preset} backbone ({res['params']:,} params) on {device}, {res['threads']} threads, "
          f"batch {args.batch} x {args.length} tokens")
    print(f"DDPM-{args.ddpm_steps}: {ddpm_s:8.2f} s  {ddpm_fp:5d} forward passes  {res['ddpm_ms_per_pass']:.1f} ms/pass")
    print(f"DDIM-{args.ddim_steps}:  {ddim_s:8.2f} s  {ddim_fp:5d} forward passes  {res['ddim_ms_per_pass']:.1f} ms/pass")
    verdict = "meets" if res["speedup"] >= 15 else "MISSES"
    print(f"speedup {res['speedup']:.1f}x ({verdict} the 15x target; the pass-count ratio is {ddpm_fp / ddim_fp:.0f}x)")
    runs = before + after
    res["ddim_runs_s"] = [round(r, 3) for r in runs]
    res["load_changed"] = max(runs) > 1.3 * min(runs)
    if res["load_changed"]:
        print(f"WARNING: DDIM took {min(runs):.2f}-{max(runs):.2f} s across repeats: the machine's load changed; rerun")
    print(json.dumps(res))
    return res


if __name__ == "__main__":
    main()
