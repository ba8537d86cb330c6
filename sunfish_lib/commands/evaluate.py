"""`sunfish evaluate`: the likelihood of a trained model on its held-out data, labelled for what it is."""

from __future__ import annotations

import json
from pathlib import Path

from sunfish_lib.sampling.settings import DEVICE_HELP, DTYPE_NAMES


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="validation NLL / ELBO (masked, continuous), perplexity and bits per byte of a run")
    p.add_argument("path", type=Path, help="run folder, exported model folder or .ckpt")
    p.add_argument("--batches", type=int, default=20, help="validation batches")
    p.add_argument("--t-samples", type=int, default=16, help="Monte-Carlo t draws per sequence (diffusion)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument("--dtype", choices=DTYPE_NAMES, help="weights' dtype (default float32)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    # lazy: torch and Lightning are behind these; `sunfish --help` and `runs` must not import them
    from sunfish_lib.evaluate import evaluate_run

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
