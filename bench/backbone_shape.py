"""The backbone shape the step-time benches share (attention_mask.py, compile_speedup.py): flags and the model."""

from __future__ import annotations

import argparse

import torch

from sunfish_lib.config import ModelConfig
from sunfish_lib.model import Backbone


def shape_parser(description: str, repeats: int) -> argparse.ArgumentParser:
    """--d-model, --layers, --seq-len, --batch, --repeats."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=repeats)
    return ap


def backbone_and_tokens(args, causal: bool, device: str) -> tuple[Backbone, torch.Tensor]:
    """A 64-dim-head backbone without time conditioning, and a (batch, seq_len) token batch."""
    cfg = ModelConfig(vocab_size=4096, n_layers=args.layers, n_heads=args.d_model // 64, d_model=args.d_model,
                      max_seq_len=args.seq_len, time_conditioning=False, causal=causal).resolve("masked")
    return Backbone(cfg).to(device), torch.randint(0, 4096, (args.batch, args.seq_len), device=device)


def shape(args) -> dict:
    return {"batch": args.batch, "seq_len": args.seq_len, "d_model": args.d_model, "layers": args.layers}
