"""`sunfish evaluate`: the likelihood of a trained model on its held-out data, labelled for what it is."""

from __future__ import annotations

import json
from pathlib import Path

from sunfish_lib.config import DEVICE_HELP, DTYPE_NAMES


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="validation NLL / ELBO (masked, continuous), perplexity and bits per byte of a run")
    p.add_argument("path", type=Path, help="run folder, exported model folder or .ckpt")
    p.add_argument("--batches", type=int, default=20, help="validation batches")
    p.add_argument("--t-samples", type=int, default=16, help="Monte-Carlo t draws per sequence (diffusion)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument("--dtype", choices=DTYPE_NAMES, help="weights' dtype (default float32)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--task", type=Path, metavar="DIR",
                   help="task accuracy instead: answer DIR's test rows (a `sunfish tasks make` folder), ± SE per "
                        "direction, worked examples, last line JSON")
    p.add_argument("--sampler", default="margin",
                   help="with --task, masked runs: decoding order random, low_confidence, margin (default margin)")
    p.add_argument("--remask", type=float, default=0.0, help="with --task, masked runs: ReMDM remasking rate")
    p.add_argument("--limit", type=int, help="with --task: the first N test rows only")
    p.set_defaults(func=run)


def run_task(args) -> int:
    """`sunfish evaluate RUN --task DIR`: accuracy ± SE per direction, examples, last line JSON."""
    # lazy: torch is behind task_eval; `sunfish --help` must not import it
    from sunfish_lib.eval.tasks import evaluate_task

    res = evaluate_task(args.path, args.task, sampler=args.sampler, remask=args.remask, limit=args.limit,
                        seed=args.seed, device=args.device)
    if not args.json:
        order = f", decoding order {res.sampler}" if res.objective == "masked" else ""
        print(f"{res.task}: {res.objective} run {args.path}{order}")
        for key, acc in res.accuracy.items():
            print(f"  {key:<14} accuracy {acc:.3f} ± {res.stderr[key]:.3f}  (n={res.n[key]})")
        if res.ar_ness is not None:
            print(f"  AR-ness {res.ar_ness:.3f} (share of commits at the leftmost open position)")
        for e in res.examples:
            mark = "correct" if e["correct"] else "wrong"
            print(f"  [{e['direction']}] {e['prompt']!r} -> {e['generated']!r} (expected {e['expected']!r}, {mark})")
    print(json.dumps(res.to_dict()))
    return 0


def run(args) -> int:
    if args.task is not None:
        return run_task(args)
    # lazy: torch and Lightning are behind these; `sunfish --help` and `runs` must not import them
    from sunfish_lib.eval.evaluate import evaluate_run

    res = evaluate_run(args.path, val_batches=args.batches, t_samples=args.t_samples, seed=args.seed,
                       device=args.device, dtype=args.dtype)
    d = res.to_dict()
    if args.json:
        print(json.dumps(d))
        return 0
    print(f"{res.objective}: {res.kind} = {res.nats_per_token:.4f} ± {res.stderr:.4f} nats/token "
          f"over {res.tokens:,} tokens ({res.sequences} sequences)")
    if res.is_likelihood:
        print(f"perplexity {res.perplexity:.2f}, bits per byte {res.bits_per_byte:.4f}")
    return 0
