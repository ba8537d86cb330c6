"""Training-step throughput and MFU: Sunfish vs a transformers reference encoder of identical shape.

    .venv/bin/python bench/train_throughput.py [--steps 8] [--configs tiny,mid] [--device cpu] [--compile]
                                               [--reference-adamw fused|foreach] [--repeats 1]

For each config, one training step (forward, backward, AdamW step) of
- Sunfish: `Backbone` + the masked-diffusion objective (logits only at masked positions), and
- reference: `transformers.BertForMaskedLM` with the same layers, width, heads, sequence,
  batch, vocabulary, SDPA attention, no dropout, and AdamW (torch's fused kernel, which Sunfish's
  `build_optimizer` uses; `--reference-adamw foreach` for the older foreach one), given the same
  head treatment: its MLM head (transform + decoder) runs only on the gathered masked
  positions (half the tokens, as the masked objective's expected fraction), and
- reference_full (the old comparison, kept for the side-by-side): BERT's MLM head on every token,
timed alternately (A, B, C, A, B, C, ...) after warm-up so machine noise hits all alike; the
median step time gives tokens/s. Sunfish's optimizer is `build_optimizer`'s (layer-wise groups, as `sunfish
train` steps). `--compile`: every layer of both sides under torch.compile (Sunfish's blocks as train.compile
does, BERT's encoder layers likewise), so compiled is compared with compiled, never with an eager reference.
`--repeats`: whole alternations per config, the medians reported with their spread (the measured peak moves
with the machine's load, so MFU's spread is part of the figure).

FLOPs are the executed ones (`estimate.executed_flops_per_token`, the convention `perf/mfu`
uses): the head only at masked positions. The reference's executed FLOPs add its head's
transform layer (d x d at the masked positions); both sides' are reported, and `work_ratio`
compares executed FLOP/s. MFU = tokens/s x executed FLOPs/token / peak, the peak = fp32 GEMM
FLOP/s measured in this run on CPU, a 2048^3 GEMM timed in the same alternation as the steps
(so machine contention hits peak and steps alike; per config) (on a GPU the datasheet fp32 peak, TF32 being off; see
`callbacks.gpu_peak_flops`). `legacy_*` are the old convention's figures (nominal FLOPs with
the head at every token, reference computing every logit) from the same run.
Targets: Sunfish >= 1.1x the reference at equal work; MFU >= 0.8. Prints the table, then one
JSON line. Not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from sunfish_lib.config import get_config
from sunfish_lib.diffusion import build_objective
from sunfish_lib.sizing.counts import executed_flops_per_token, flops_per_token
from sunfish_lib.model import Backbone
from sunfish_lib.train.callbacks import device_peak_flops, measure_cpu_matmul_peak
from sunfish_lib.train.optim import build_optimizer

GEMM = 2048
"""Side of the fp32 GEMM whose FLOP/s is the CPU peak."""
REFERENCE_MASK_FRACTION = 0.5
"""The reference's fixed masked fraction (the Sunfish objective's expected one is (1 + t_min) / 2)."""
CONFIGS = {
    "tiny": {},  # the preset: 4 layers, d 128, 4 heads, seq 128, batch 16, vocab 4096
    "mid": {"n_layers": 6, "d_model": 512, "n_heads": 8, "seq_len": 256, "max_seq_len": 256,
            "micro_batch_size": 8, "vocab_size": 8192, "bpe_vocab_size": 4096},
}


def adamw(params, kind: str) -> torch.optim.AdamW:
    """The reference's AdamW: torch's fused kernel (what `build_optimizer` gives Sunfish) or foreach."""
    return torch.optim.AdamW(params, lr=1e-4, **{kind: True})


def compile_layers(layers) -> None:
    """torch.compile each layer in place, as `SunfishModule.configure_model` does with train.compile."""
    for layer in layers:
        layer.compile()


def sunfish_step(cfg, device, compiled: bool = False):
    torch.manual_seed(0)
    model = Backbone.from_config(cfg).to(device)
    obj = build_objective(cfg, mask_token_id=cfg.model.vocab_size - 1)
    opt = build_optimizer(model, cfg.train, cfg.model.n_layers)  # what `sunfish train` steps with
    if compiled:
        compile_layers(model.blocks)
    B, T = cfg.data.micro_batch_size, cfg.data.seq_len
    batch = {"input_ids": torch.randint(0, cfg.model.vocab_size - 1, (B, T), device=device)}
    gen = torch.Generator(device=device).manual_seed(0)

    def step():
        loss = obj.loss(model, batch, generator=gen)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step, sum(p.numel() for p in model.parameters())


def reference_step(cfg, device, gather: bool = True, optimizer: str = "fused", compiled: bool = False):
    """BertForMaskedLM step; gather=True runs its MLM head on the masked positions only (equal head work)."""
    from transformers import BertConfig, BertForMaskedLM

    m = cfg.resolved_model
    bert_cfg = BertConfig(vocab_size=m.vocab_size, hidden_size=m.d_model, num_hidden_layers=m.n_layers,
                          num_attention_heads=m.n_heads, intermediate_size=m.d_ff, max_position_embeddings=m.max_seq_len,
                          type_vocab_size=1, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                          hidden_act="gelu_pytorch_tanh", attn_implementation="sdpa")
    torch.manual_seed(0)
    model = BertForMaskedLM(bert_cfg).to(device).train()
    opt = adamw(model.parameters(), optimizer)
    if compiled:
        compile_layers(model.bert.encoder.layer)
    B, T = cfg.data.micro_batch_size, cfg.data.seq_len
    ids = torch.randint(0, m.vocab_size - 1, (B, T), device=device)
    masked = torch.rand(B, T, device=device) < REFERENCE_MASK_FRACTION
    inputs = ids.masked_fill(masked, m.vocab_size - 1)
    labels = ids.masked_fill(~masked, -100)  # MLM loss on masked positions, as the masked objective

    def loss_fn():
        if not gather:
            return model(input_ids=inputs, labels=labels).loss  # head on every token
        h = model.bert(input_ids=inputs).last_hidden_state  # (B, T, d)
        logits = model.cls(h[masked])  # (N, V): transform + decoder at the masked positions only
        return F.cross_entropy(logits.float(), ids[masked])

    def step():
        loss = loss_fn()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step, sum(p.numel() for p in model.parameters())


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_alternating(steps: dict, n: int, device, warmup: int = 2) -> dict[str, float]:
    """Median seconds per call of each step function, calls interleaved."""
    for f in steps.values():
        for _ in range(warmup):
            f()
    times = {k: [] for k in steps}
    for _ in range(n):
        for k, f in steps.items():
            _sync(device)
            t0 = time.perf_counter()
            f()
            _sync(device)
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_config(name: str, overrides: dict, n: int, device, peak: float, optimizer: str = "fused",
                 compiled: bool = False) -> dict:
    cfg = get_config("tiny", {"objective": "masked", "sampler": "low_confidence", **overrides})
    tokens = cfg.data.micro_batch_size * cfg.data.seq_len
    ours, n_ours = sunfish_step(cfg, device, compiled)
    ref, n_ref = reference_step(cfg, device, gather=True, optimizer=optimizer, compiled=compiled)
    ref_full, _ = reference_step(cfg, device, gather=False, optimizer=optimizer, compiled=compiled)
    steps = {"sunfish": ours, "reference": ref, "reference_full": ref_full}
    if device.type == "cpu":
        a, b = torch.randn(GEMM, GEMM), torch.randn(GEMM, GEMM)
        steps["gemm"] = lambda: a @ b
    sec = time_alternating(steps, n, device)
    if device.type == "cpu":
        peak = 2 * GEMM**3 / sec.pop("gemm")  # fp32 GEMM FLOP/s under the same contention as the steps
    m = cfg.model
    fpt = executed_flops_per_token(cfg, cfg.data.seq_len)
    fpt_ref = executed_flops_per_token(cfg, cfg.data.seq_len, masked_fraction=REFERENCE_MASK_FRACTION) \
        + 6 * m.d_model**2 * REFERENCE_MASK_FRACTION  # + BERT's MLM transform (d x d) at the masked positions
    nominal = flops_per_token(cfg, cfg.data.seq_len)
    tps = {k: tokens / v for k, v in sec.items()}
    out = {
        "peak_flops": peak,
        "params_sunfish": n_ours, "params_reference": n_ref, "tokens_per_step": tokens,
        "sunfish_tokens_per_s": tps["sunfish"], "reference_tokens_per_s": tps["reference"],
        "flops_per_token": fpt, "reference_flops_per_token": fpt_ref,
        "ratio": tps["sunfish"] / tps["reference"],
        "work_ratio": tps["sunfish"] * fpt / (tps["reference"] * fpt_ref),  # executed FLOP/s, ours / reference
        "mfu": tps["sunfish"] * fpt / peak, "reference_mfu": tps["reference"] * fpt_ref / peak,
        "legacy_ratio": tps["sunfish"] / tps["reference_full"], "legacy_mfu": tps["sunfish"] * nominal / peak,
        "legacy_flops_per_token": nominal, "reference_full_tokens_per_s": tps["reference_full"],
    }
    print(f"{name:>5}: L={m.n_layers} d={m.d_model} h={m.n_heads} T={cfg.data.seq_len} B={cfg.data.micro_batch_size} "
          f"V={m.vocab_size} | peak {peak / 1e9:.1f} GFLOP/s | "
          f"sunfish {out['sunfish_tokens_per_s']:>9,.0f} tok/s (MFU {out['mfu']:.2f}) | "
          f"reference {out['reference_tokens_per_s']:>9,.0f} tok/s (MFU {out['reference_mfu']:.2f}) | "
          f"ratio {out['ratio']:.2f} (work {out['work_ratio']:.2f}) | old convention: ratio {out['legacy_ratio']:.2f} "
          f"MFU {out['legacy_mfu']:.2f} | params {n_ours:,} vs {n_ref:,}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8, help="timed steps per model per config")
    ap.add_argument("--configs", default="tiny,mid")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--compile", action="store_true", help="compiled vs compiled: every layer of both sides under "
                    "torch.compile (the warm-up steps compile)")
    ap.add_argument("--reference-adamw", choices=("fused", "foreach"), default="fused",
                    help="the reference's AdamW kernel (Sunfish uses build_optimizer's: fused)")
    ap.add_argument("--repeats", type=int, default=1, help="whole alternations per config: MFU and ratio spread")
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        peak, source = measure_cpu_matmul_peak(n=GEMM, repeats=5), "measured fp32 GEMM 2048^3 (per config: interleaved)"
    else:
        peak, source = device_peak_flops(device, "32-true")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}; "
          f"peak {peak / 1e9:,.1f} GFLOP/s ({source})")
    results = {}
    for name in args.configs.split(","):
        reps = [bench_config(name, CONFIGS[name], args.steps, device, peak, args.reference_adamw, args.compile)
                for _ in range(args.repeats)]
        results[name] = {k: statistics.median(r[k] for r in reps) for k in reps[0]}
        results[name]["spread"] = {k: [min(r[k] for r in reps), max(r[k] for r in reps)] for k in ("ratio", "mfu")}
        if args.repeats > 1:
            sp = results[name]["spread"]
            print(f"{name:>5}: median of {args.repeats}: ratio {results[name]['ratio']:.2f} ({sp['ratio'][0]:.2f}.."
                  f"{sp['ratio'][1]:.2f}), MFU {results[name]['mfu']:.2f} ({sp['mfu'][0]:.2f}..{sp['mfu'][1]:.2f})")
    headline = results.get("mid") or next(iter(results.values()))
    print(json.dumps({"peak_flops": peak, "peak_source": source, "compiled": args.compile,
                      "reference_adamw": args.reference_adamw, "repeats": args.repeats, "configs": results,
                      "sunfish_tokens_per_s": headline["sunfish_tokens_per_s"],
                      "reference_tokens_per_s": headline["reference_tokens_per_s"],
                      "ratio": headline["ratio"], "work_ratio": headline["work_ratio"], "mfu": headline["mfu"],
                      "legacy_ratio": headline["legacy_ratio"], "legacy_mfu": headline["legacy_mfu"]}))


if __name__ == "__main__":
    main()
