"""`sunfish estimate`: parameters, FLOPs/token, memory per GPU and fits/does-not-fit verdicts (sunfish_lib/sizing/estimate.py)."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from sunfish_lib.config import PRESETS, parse_set_args
from sunfish_lib.sizing.estimate import advise, config_for, report


def add_parser(sub) -> None:
    p = sub.add_parser("estimate", help="parameters, FLOPs/token, memory per GPU and fits/does-not-fit verdicts")
    p.add_argument("--preset", required=True, help=f"one of {', '.join(PRESETS)}")
    p.add_argument("--objective", help="continuous, masked or ar (default: the preset's)")
    p.add_argument("--gpus", help="GPU memory sizes in GB, comma-separated, e.g. 48,20")
    p.add_argument("--strategy", help="single, ddp or fsdp (default: train.strategy; auto = ddp on several GPUs)")
    p.add_argument("--precision", help="32-true, bf16-mixed, bf16-true or 16-mixed (default: train.precision)")
    p.add_argument("--activation-checkpointing", action="store_true", default=None, help="recompute block activations")
    p.add_argument("--cpu-offload", action="store_true", default=None, help="FSDP: weights, grads, AdamW state in host RAM")
    p.add_argument("--micro-batch", type=int, help="sequences per GPU per forward (default: data.micro_batch_size)")
    p.add_argument("--seq-len", type=int, help="tokens per sequence (default: data.seq_len)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override; repeatable")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    cfg = config_for(args.preset, args.objective, parse_set_args(args.set))
    rep = report(cfg, strategy=args.strategy, precision=args.precision, micro_batch=args.micro_batch,
                 seq_len=args.seq_len, activation_checkpointing=args.activation_checkpointing,
                 cpu_offload=args.cpu_offload, gpu_mem_gb=args.gpus)
    adv = advise(cfg, args.gpus, precision=args.precision, micro_batch=args.micro_batch,
                 seq_len=args.seq_len) if args.gpus and not args.strategy else None
    if args.json:
        print(json.dumps({**rep, **({"advice": adv} if adv else {})}))
        return 0
    gib = 2**30
    st = rep["settings"]
    t = Table(title=f"sunfish estimate: {rep['preset']} ({rep['objective']}), {rep['params']:,} parameters, "
                    f"{rep['flops_per_token'] / 1e9:.2f} GFLOPs/token at T={st['seq_len']}")
    t.add_column(f"per GPU at the {rep['peak_phase']} peak: {st['strategy']} x{st['n_gpus']}, {st['precision']}, "
                 f"micro-batch {st['micro_batch']}"
                 f"{', ckpt' if st['activation_checkpointing'] else ''}{', offload' if st['cpu_offload'] else ''}")
    t.add_column("GiB", justify="right")
    for k, v in rep["memory"].items():
        t.add_row(k, f"{v / gib:.2f}")
    t.add_row("checkpoint: weights / + AdamW", f"{rep['checkpoint']['weights'] / gib:.2f} / "
              f"{rep['checkpoint']['with_optimizer'] / gib:.2f}")
    for v in rep["verdicts"]:
        bound = " (bounds the run)" if v.get("bounds_run") else ""
        t.add_row(f"{v['gpu_gb']:g} GiB card{bound}: needs {v['needed_gb']} GiB, headroom {v['headroom_gb']:+.2f}",
                  "[green]fits[/]" if v["fits"] else "[red]no[/]")
    console = Console(width=160)
    console.print(t)
    console.print(f"tokens per optimizer step: {rep['tokens_per_step']:,} = micro-batch {st['micro_batch']} x "
                  f"seq {st['seq_len']} x accumulate {st['accumulate']} x {st['n_gpus']} GPUs")
    for line in (adv or {}).get("summary", []):
        console.print(line)
    return 0
