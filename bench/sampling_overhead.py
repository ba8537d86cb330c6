"""Sampler overhead: how much of sampling wall time is the model's forward pass, per sampler.

    .venv/bin/python bench/sampling_overhead.py [--smoke] [--threads 1] [--vocab 4096 50304]

For every sampler (ddpm, ddim, ancestral, low_confidence, random, threshold, ar) at each
vocabulary size, it builds the sampler exactly as `sunfish sample` does (`build_sampler`,
default settings: temperature 1, no filters) on a randomly initialised backbone of the
objective and fills 8 x 128 [MASK] tokens in 50 steps (ar: 128 tokens, one pass each;
threshold: as many passes as its rule needs). The model is d_model 256, 4 layers, 4 heads,
RoPE, tied embeddings (about 3.2M body parameters; 1.0M + 12.9M in the embedding at
4,096 / 50,304): a forward pass of 8 x 128 tokens costs what the workbook's models cost.

Model-forward time is the time spent inside the backbone's `encode`, `logits` (vocabulary
head) and `to_embedding_space`, timed around each call in the same run as the wall time, so
the fraction is robust to a CPU shared with other jobs. Everything else (noise, softmax,
filters, commits) is the sampler's own work. A continuous model has no vocabulary head: its
decoder is the final rounding to the nearest of V embeddings (Diffusion-LM's p(w | x0), an
N x V x e product exactly like an LM head), so that rounding counts as model time too and is
also reported on its own (`rounding_s`, and `model_fraction_without_rounding`).

The reference is LLaDA's published `generate()` algorithm written out (Nie et al. 2025,
App. B.3): every step the full-vocabulary head at every position, float64 Gumbel noise over
the whole (B, T, V) tensor (`add_gumbel_noise`), a float64 softmax for the confidence,
low-confidence remasking; same model, same 8 x 128 tokens, same 50 steps.

Last line: JSON with per-sampler rows, `model_fraction_min` over samplers and vocabularies,
and `speedup_vs_reference` (low_confidence vs the reference at the largest vocabulary).
`--smoke` shrinks everything to seconds (what the test runs).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass

import torch

import sunfish_lib.sampling.continuous as continuous_sampling
from sunfish_lib.config import SAMPLERS, get_config
from sunfish_lib.model import Backbone
from sunfish_lib.sampling.filters import gumbel_noise
from sunfish_lib.sampling.noise import RowNoise
from sunfish_lib.sampling.samplers import build_sampler

ORDER = ("ddpm", "ddim", "ancestral", "low_confidence", "random", "threshold", "ar")
FULL = dict(d_model=256, n_layers=4, n_heads=4, batch=8, length=128, steps=50, vocab=(4096, 50304))
SMOKE = dict(d_model=32, n_layers=1, n_heads=2, batch=2, length=16, steps=4, vocab=(300, 600))


@dataclass
class SpecialIds:
    """The ids `build_sampler` asks a tokenizer for: the last three of the vocabulary."""

    vocab: int

    def __post_init__(self):
        self.mask_token_id, self.pad_token_id, self.eos_token_id = self.vocab - 1, self.vocab - 2, self.vocab - 3

    def __len__(self) -> int:
        return self.vocab


class Timed:
    """A function that adds the seconds spent in it to `.seconds` (synchronising CUDA around the call)."""

    def __init__(self, fn, device):
        self.fn, self.seconds = fn, 0.0
        self.sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)

    def __call__(self, *a, **kw):
        self.sync()
        t0 = time.perf_counter()
        out = self.fn(*a, **kw)
        self.sync()
        self.seconds += time.perf_counter() - t0
        return out


class ModelClock:
    """Times a backbone's encode / logits / to_embedding_space (total seconds in `.seconds`)."""

    def __init__(self, model):
        device = next(model.parameters()).device
        self.parts = [Timed(getattr(model, name), device) for name in ("encode", "logits", "to_embedding_space")]
        for name, part in zip(("encode", "logits", "to_embedding_space"), self.parts):
            setattr(model, name, part)

    @property
    def seconds(self) -> float:
        return sum(p.seconds for p in self.parts)


def build(objective: str, sampler: str, shape: dict, vocab: int, device: str):
    cfg = get_config("tiny", {"objective": objective, "sampler": sampler, "vocab_size": vocab,
                              "d_model": shape["d_model"], "n_layers": shape["n_layers"], "n_heads": shape["n_heads"],
                              "max_seq_len": shape["length"], "seq_len": shape["length"], "bpe_vocab_size": min(vocab, 4096), "pos_encoding": "rope", "steps": shape["steps"], "length": shape["length"],
                              "num_timesteps": max(shape["steps"], 100)})
    torch.manual_seed(0)
    model = Backbone.from_config(cfg).to(device).eval()
    return model, cfg


def time_sampler(sampler: str, shape: dict, vocab: int, device: str) -> dict:
    objective = next(o for o, names in SAMPLERS.items() if sampler in names)
    model, cfg = build(objective, sampler, shape, vocab, device)
    tok = SpecialIds(vocab)
    clock = ModelClock(model)
    rounding = Timed(continuous_sampling.nearest_tokens, device)
    s = build_sampler(model, cfg, tok)
    x = torch.full((shape["batch"], shape["length"]), tok.mask_token_id, device=device)
    continuous_sampling.nearest_tokens = rounding
    try:
        t0 = time.perf_counter()
        out = s.generate(x, noise=RowNoise(0))
        if device == "cuda":
            torch.cuda.synchronize()
        wall = time.perf_counter() - t0
    finally:
        continuous_sampling.nearest_tokens = rounding.fn
    assert not (out == tok.mask_token_id).any()
    model_s = clock.seconds + rounding.seconds
    return {"sampler": sampler, "vocab": vocab, "wall_s": round(wall, 3), "model_s": round(model_s, 3),
            "rounding_s": round(rounding.seconds, 3), "model_fraction": round(model_s / wall, 3),
            "model_fraction_without_rounding": round(clock.seconds / wall, 3), "forward_passes": int(s.forward_passes)}


@torch.no_grad()
def llada_reference(shape: dict, vocab: int, device: str) -> dict:
    """LLaDA's `generate()` as published (one block, temperature 1, low-confidence remasking)."""
    model, _ = build("masked", "low_confidence", shape, vocab, device)
    clock = ModelClock(model)
    mask_id, steps = vocab - 1, shape["steps"]
    x = torch.full((shape["batch"], shape["length"]), mask_id, device=device)
    gen = torch.Generator(device=device).manual_seed(0)
    n = (x == mask_id).sum(1, keepdim=True)
    k_sched = n // steps + (torch.arange(steps, device=device)[None] < n % steps).long()  # (B, steps)
    t0 = time.perf_counter()
    for i in range(steps):
        mask_index = x == mask_id
        logits = model.logits(model.encode(x, t=None))  # (B, T, V): every position
        noisy = logits.double() + gumbel_noise(logits.shape, device, gen)  # add_gumbel_noise, float64
        x0 = noisy.argmax(-1)
        p = logits.double().softmax(-1)  # float64 confidence over the whole vocabulary
        x0_p = p.gather(-1, x0[..., None]).squeeze(-1)
        x0 = torch.where(mask_index, x0, x)
        confidence = torch.where(mask_index, x0_p, torch.full_like(x0_p, float("-inf")))
        transfer = torch.zeros_like(mask_index)
        for b in range(x.shape[0]):
            _, idx = torch.topk(confidence[b], int(k_sched[b, i]))
            transfer[b, idx] = True
        x[transfer] = x0[transfer]
    if device == "cuda":
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    return {"sampler": "llada_reference", "vocab": vocab, "wall_s": round(wall, 3), "model_s": round(clock.seconds, 3),
            "model_fraction": round(clock.seconds / wall, 3), "forward_passes": steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, seconds (the test's run)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steady on a shared box)")
    ap.add_argument("--vocab", type=int, nargs="+", help="vocabulary sizes (default 4096 50304)")
    ap.add_argument("--samplers", nargs="+", default=list(ORDER), choices=ORDER)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-reference", dest="reference", action="store_false", help="skip the LLaDA-style loop")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    shape = dict(SMOKE if args.smoke else FULL)
    vocabs = args.vocab or shape["vocab"]
    rows, refs = [], []
    for vocab in vocabs:
        for name in args.samplers:
            r = time_sampler(name, shape, vocab, args.device)
            rows.append(r)
            print(f"V={vocab:>6} {name:<15} wall {r['wall_s']:8.2f} s  model {r['model_s']:8.2f} s  "
                  f"fraction {r['model_fraction']:.2f}  ({r['forward_passes']} passes)", flush=True)
        if not args.reference:
            continue
        ref = llada_reference(shape, vocab, args.device)
        refs.append(ref)
        print(f"V={vocab:>6} {'LLaDA reference':<15} wall {ref['wall_s']:8.2f} s  model {ref['model_s']:8.2f} s  "
              f"fraction {ref['model_fraction']:.2f}", flush=True)
    big = max(vocabs)
    ours = next((r for r in rows if r["sampler"] == "low_confidence" and r["vocab"] == big), None)
    ref = next((r for r in refs if r["vocab"] == big), None)
    speedup = round(ref["wall_s"] / ours["wall_s"], 2) if ours and ref else None
    print(json.dumps({"device": args.device, "threads": args.threads, "smoke": args.smoke,
                      "shape": {k: v for k, v in shape.items() if k != "vocab"}, "vocab": vocabs,
                      "model_fraction_min": min(r["model_fraction"] for r in rows),
                      "speedup_vs_reference": speedup, "speedup_vocab": big, "results": rows, "reference": refs}))


if __name__ == "__main__":
    main()
