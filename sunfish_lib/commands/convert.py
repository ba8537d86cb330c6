"""`sunfish convert`: an AR parent (HF causal LM folder or a Sunfish ar run) -> an exported diffusion backbone."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sunfish_lib.errors import SunfishError
from sunfish_lib.config import parse_set_args


def add_parser(sub) -> None:
    p = sub.add_parser("convert", help="AR checkpoint (HF causal LM folder or Sunfish ar run) -> diffusion backbone")
    p.add_argument("--from", dest="source", required=True, metavar="HF_NAME_OR_DIR",
                   help="a save_pretrained folder (GPT-2, Llama incl. 3.x, Mistral, Qwen2, Qwen3, Gemma), a cached hub name, "
                        "or a Sunfish ar run")
    p.add_argument("--out", type=Path, required=True,
                   help="folder to write: a Hugging Face folder (model.safetensors, config.json, remote code, tokenizer)")
    p.add_argument("--objective", default="masked",
                   help="masked (bidirectional, default), ar (kept causal) or block (BD3-LM blocks, the shift kept)")
    p.add_argument("--block-size", type=int, default=4, help="--objective block: tokens per block (diffusion.block_size)")
    p.add_argument("--keep-shift", action=argparse.BooleanOptionalAction, default=None,
                   help="keep the AR shift: the token at i is scored by the logits at i-1 (diffusion.shift_logits); "
                        "default: on for --objective masked and block; --no-keep-shift opts out")
    p.add_argument("--time-conditioning", action="store_true", help="build the adaLN time pathway (a no-op at start)")
    p.add_argument("--tokenizer", help="the parent's tokenizer (name or folder) when --from has none")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for the written config.json, e.g. train.lr_mult_attn=2; repeatable")
    p.add_argument("--check", action="store_true", help="compare logits with the parent (causal mask kept, time neutral)")
    p.add_argument("--tol", type=float, default=1e-4, help="--check fails (exit 1) above this max |logit difference|")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=run)


def run(args) -> int:
    # lazy: torch and Lightning are behind these; `sunfish --help` and `runs` must not import them
    from sunfish_lib.convert import convert

    if not args.tol > 0:  # NaN too: no difference is <= NaN, so every --check would fail
        raise SunfishError(f"--tol={args.tol} must be > 0")
    conv = convert(args.source, args.out, objective=args.objective, shift_logits=args.keep_shift,
                   time_conditioning=args.time_conditioning, tokenizer=args.tokenizer, block_size=args.block_size,
                   overrides=parse_set_args(args.set), check=args.check)
    ok = conv.check is None or conv.check["max_abs_diff"] <= args.tol
    if args.json:
        print(json.dumps({**conv.summary(), "check_passed": ok if conv.check else None}))
    else:
        m = conv.config.model
        print(f"converted {args.source} ({conv.parent}): {conv.params:,} parameters, {m.n_layers} layers, "
              f"d_model {m.d_model}, {m.norm}/{m.mlp}/{m.pos_encoding}, vocab {conv.parent_vocab} -> {m.vocab_size}")
        if conv.added_tokens:
            print("added tokens: " + ", ".join(f"{k}={v}" for k, v in conv.added_tokens.items()))
        print(f"objective {conv.config.diffusion.objective}, shift_logits {conv.config.diffusion.shift_logits}; "
              f"continue pretraining with: sunfish train --config {conv.out_dir / 'config.json'}")
        if conv.check:
            c = conv.check
            print(f"check: max |logit diff| {c['max_abs_diff']:.3g} (max |logit| {c['max_abs_logit']:.3g}, "
                  f"{c['tokens']} tokens, argmax agreement {c['argmax_agreement']:.3f}): {'PASS' if ok else 'FAIL'}")
        print(f"written: {conv.out_dir}")
    if not ok:
        print(f"sunfish convert: logits differ by {conv.check['max_abs_diff']:.3g} > --tol {args.tol}", file=sys.stderr)
        return 1
    return 0
