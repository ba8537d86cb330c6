"""One short GPU session (< 5 min on one GPU): bf16 MFU with compile and flash, memory estimate vs
the allocator's peak, FlexAttention vs SDPA document masks, FSDP2 over NCCL, sampling with and
without the cache.

    python bench/gpu_check.py [--presets 125M,350M] [--steps 6] [--fsdp-steps 4] [--no-compile] [--device D]

Needs only torch, Lightning and this package (no `datasets`/`papermill`: batches are random
tokens, which is all throughput and memory depend on). Per preset (masked objective,
bf16 autocast, the preset's micro-batch and sequence length):
  - tokens/s of a full training step (fwd + bwd + fused AdamW), MFU = executed FLOPs
    (`estimate.executed_flops_per_token`: the head only at masked positions) vs the datasheet
    bf16 peak (the step runs under bf16 autocast, so the bf16 peak is the right one; the
    fp32/TF32 choice of `callbacks.gpu_peak_flops` does not arise here);
  - torch.cuda.max_memory_allocated() vs `sunfish_lib.sizing.estimate.report(...)` total (single GPU);
  each block torch.compile'd (train.compile's default on CUDA) and SDPA held to the flash kernel
  (no mask: all-ones rows need none);
then FlexAttention's block mask against SDPA's dense mask on packed documents (logits, gradients,
step time); FSDP2 through the real `sunfish train` with 2 processes over NCCL when 2 GPUs exist
(sharded checkpoint, stop, resume), else a few steps in one process; and masked sampling tokens/s
with cache none/prefix/dual (random weights: speed only). A section that fails records its error
and the others still run. On CPU (`--device cpu`) it runs the tiny preset only, without compile
or flash, to check the script itself. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from sunfish_lib.config import get_config
from sunfish_lib.diffusion import build_objective
from sunfish_lib.sizing.counts import executed_flops_per_token
from sunfish_lib.sizing.estimate import report
from sunfish_lib.model import Backbone
from sunfish_lib.train.callbacks import device_peak_flops


def step_bench(preset: str, steps: int, device: torch.device, checkpointing: bool, compile_blocks: bool,
               flash: bool = True) -> dict:
    cfg = get_config(preset, {"objective": "masked", "sampler": "low_confidence",
                              "model.activation_checkpointing": checkpointing})
    B, T, V = cfg.data.micro_batch_size, cfg.data.seq_len, cfg.model.vocab_size
    amp = device.type == "cuda"
    if amp:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model = Backbone.from_config(cfg).to(device)
    if compile_blocks:
        for block in model.blocks:  # as SunfishModule.configure_model does (train.compile)
            block.compile()
    obj = build_objective(cfg, mask_token_id=V - 1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=amp)
    batch = {"input_ids": torch.randint(0, V - 1, (B, T), device=device)}
    gen = torch.Generator(device=device).manual_seed(0)
    times = []
    for i in range(steps + 2):
        if amp:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp), _flash_only(amp and flash):
            loss = obj.loss(model, batch, generator=gen)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if amp:
            torch.cuda.synchronize()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    sec = sorted(times)[len(times) // 2]
    tps = B * T / sec
    peak, source = device_peak_flops(device, "bf16-mixed")
    est = report(cfg, strategy="single", precision="bf16-mixed", activation_checkpointing=checkpointing,
                 micro_batch=B, seq_len=T, device=device.type)
    measured = torch.cuda.max_memory_allocated() if amp else float("nan")
    out = {"preset": preset, "checkpointing": checkpointing, "compile": compile_blocks, "flash": amp and flash, "params": sum(p.numel() for p in model.parameters()),
           "tokens_per_s": tps, "mfu": tps * executed_flops_per_token(cfg, T) / peak, "peak_source": source,
           "mem_estimated": est["memory"]["total"], "mem_measured": measured,
           "mem_ratio": est["memory"]["total"] / measured if amp else None, "loss": float(loss)}
    print(f"{preset:>5} ckpt={checkpointing!s:5} {out['params']:>13,} params  {tps:>10,.0f} tok/s  "
          f"MFU {out['mfu']:.3f}  mem est {out['mem_estimated'] / 2**30:.2f} GiB vs peak "
          f"{measured / 2**30:.2f} GiB (ratio {out['mem_ratio'] or float('nan'):.3f})")
    del model, opt
    return out


def fsdp_bench(preset: str, steps: int, device: torch.device) -> dict:
    """A few FSDP2 steps through SunfishModule + ModelParallelStrategy (NCCL on GPU)."""
    import tempfile

    import pytorch_lightning as pl

    from sunfish_lib.train.module import SunfishModule
    from sunfish_lib.train.trainer import build_strategy, resolve_precision

    cfg = get_config(preset, {"objective": "masked", "sampler": "low_confidence", "strategy": "fsdp",
                              "max_steps": steps, "warmup_steps": 1})
    V, B, T = cfg.model.vocab_size, cfg.data.micro_batch_size, cfg.data.seq_len
    data = [{"input_ids": torch.randint(0, V - 1, (B, T))} for _ in range(steps)]
    module = SunfishModule(cfg.to_dict(), mask_token_id=V - 1)
    losses = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    with tempfile.TemporaryDirectory() as d:
        trainer = pl.Trainer(accelerator="gpu" if device.type == "cuda" else "cpu", devices=1,
                             strategy=build_strategy(cfg), precision=resolve_precision("auto"), max_steps=steps,
                             logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             callbacks=[Record()], default_root_dir=d, enable_model_summary=False)
        t0 = time.perf_counter()
        trainer.fit(module, train_dataloaders=torch.utils.data.DataLoader(data, batch_size=None))
        sec = time.perf_counter() - t0
    backend = torch.distributed.get_backend() if torch.distributed.is_initialized() else "none"
    print(f"fsdp {preset}: {steps} steps in {sec:.1f} s over {backend}; losses {[round(x, 3) for x in losses]}")
    return {"preset": preset, "backend": backend, "losses": losses, "seconds": sec,
            "finite": all(x == x and abs(x) != float("inf") for x in losses)}


def _flash_only(on: bool):
    """SDPA restricted to the flash kernel (an error, not a silent fallback, if it cannot run)."""
    from contextlib import nullcontext

    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.FLASH_ATTENTION) if on else nullcontext()


def flex_check(device: torch.device, steps: int) -> dict:
    """Packed documents: FlexAttention block mask vs SDPA dense mask (logits, grads on CUDA, step time)."""
    cfg = get_config("125M" if device.type == "cuda" else "tiny", {"objective": "masked", "sampler": "low_confidence"})
    B, T, V = 4, cfg.data.seq_len, cfg.model.vocab_size
    model = Backbone.from_config(cfg).to(device)
    tokens = torch.randint(0, V, (B, T), device=device)
    lengths = torch.randint(16, T // 2, (B, 1), device=device)  # each row: documents of one length in 16..T/2
    segment_ids = torch.arange(T, device=device)[None] // lengths  # (B, T) document ids
    grad = device.type == "cuda"  # FlexAttention has no backward on CPUs
    out, grads, times = {}, {}, {}
    for kernel in ("flex", "sdpa"):
        model.attention_kernel = kernel
        model.zero_grad(set_to_none=True)
        for i in range(steps + 1):
            if grad:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            with torch.set_grad_enabled(grad):
                logits = model(tokens, segment_ids=segment_ids)
                if grad:
                    logits.float().logsumexp(-1).mean().backward()
            if grad:
                torch.cuda.synchronize()
            times.setdefault(kernel, []).append(time.perf_counter() - t0)
        out[kernel] = logits.detach().float()
        if grad:
            grads[kernel] = torch.cat([p.grad.flatten() / (steps + 1) for p in model.parameters() if p.grad is not None])
    res = {"T": T, "documents_per_row": int(segment_ids[:, -1].max()) + 1,
           "logits_max_diff": float((out["flex"] - out["sdpa"]).abs().max()),
           "grads_max_diff": float((grads["flex"] - grads["sdpa"]).abs().max()) if grad else None,
           "step_s": {k: sorted(v[1:])[len(v[1:]) // 2] for k, v in times.items()}}
    res["flex_speedup"] = res["step_s"]["sdpa"] / res["step_s"]["flex"]
    print(f"flex vs sdpa ({res['documents_per_row']} docs/row, T={T}): logits diff {res['logits_max_diff']:.2e}, "
          f"grads diff {res['grads_max_diff']}, speedup {res['flex_speedup']:.2f}x")
    return res


def fsdp_two_gpus(steps: int) -> dict:
    """`sunfish train --devices 2 --strategy fsdp` (NCCL, bf16 MixedPrecisionPolicy, sharded checkpoint):
    `steps` steps, stopped halfway and resumed; the sharded checkpoint consolidated by `sunfish export`."""
    import os
    import re
    import subprocess
    import sys
    import tempfile

    common = [sys.executable, "-m", "sunfish_lib.cli", "train", "--preset", "tiny", "--objective", "masked",
              "--devices", "2", "--strategy", "fsdp", "--max-steps", str(steps), "--no-progress",
              "--set", f"ckpt_every={max(1, steps // 2)}", "--set", "val_every=1000", "--set", "tensorboard=false"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        first = subprocess.run([*common, "--run-dir", d, "--stop-at-step", str(max(1, steps // 2))], env=env,
                               capture_output=True, text=True, timeout=240)
        second = subprocess.run([*common, "--run-dir", d, "--resume"], env=env, capture_output=True, text=True,
                                timeout=240)
        log = open(os.path.join(d, "train.log")).read() if os.path.exists(os.path.join(d, "train.log")) else ""
        sharded = os.path.isdir(os.path.join(d, "checkpoints", "last.ckpt"))
    res = {"processes": 2, "returncodes": [first.returncode, second.returncode], "seconds": time.perf_counter() - t0,
           "sharded_checkpoint": sharded, "precision": (re.findall(r"precision (\S+)", log) or [None])[-1],
           "launcher": (re.findall(r"world size \d+ \(([^)]*)\)", log) or [None])[-1],
           "errors": [r.stderr.strip().splitlines()[-1] for r in (first, second) if r.returncode and r.stderr.strip()]}
    print(f"fsdp x2: {res}")
    return res


def sampling_speed(device: torch.device, length: int) -> dict:
    """Masked low_confidence sampling tokens/s with cache none/prefix/dual (random `tiny` weights: speed only)."""
    from sunfish_lib.data import get_tokenizer
    from sunfish_lib.sampling.session import Loaded, sample

    cfg = get_config("tiny", {"objective": "masked", "sampler": "low_confidence"})
    tok = get_tokenizer(cfg.data.tokenizer, cfg.data.bpe_vocab_size)
    model = Backbone.from_config(cfg).to(device).eval()
    loaded = Loaded(model, cfg, tok)
    out = {}
    for mode in ("none", "prefix", "dual"):
        t0 = time.perf_counter()
        sample(loaded, seed=0, num_samples=1, length=length, steps=length, sampler="low_confidence",
               block_length=min(32, length), temperature=0.0, cache=mode)
        out[mode] = length / (time.perf_counter() - t0)
    print("sampling tokens/s: " + ", ".join(f"{k} {v:,.1f}" for k, v in out.items()))
    return {"length": length, "tokens_per_s": out}


def _section(results: dict, name: str, fn, *args) -> None:
    """Run one part; a failure is recorded (type and first line) and the next part runs."""
    try:
        results[name] = fn(*args)
    except Exception as e:  # noqa: BLE001 (a one-shot GPU session keeps every figure it can get)
        results[name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"}
        print(f"{name}: {results[name]['error']}")


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def parse_args(argv=None) -> argparse.Namespace:
    """Arguments, with one-line errors (exit 2) for an unknown preset, a missing device or a bad count."""
    from sunfish_lib.config import PRESETS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="125M,350M")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--fsdp-steps", type=int, default=4)
    ap.add_argument("--sample-length", type=int, default=256)
    ap.add_argument("--no-compile", action="store_true", help="eager blocks (compile is train.compile's CUDA default)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    unknown = [p for p in args.presets.split(",") if p not in PRESETS]
    if unknown:
        _fail(f"--presets {unknown[0]!r} is not a preset; choose from {', '.join(PRESETS)}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        _fail(f"--device {args.device}: this torch build sees no CUDA GPU; use --device cpu for the self-check")
    for name in ("steps", "fsdp_steps", "sample_length"):
        if getattr(args, name) < 1:
            _fail(f"--{name.replace('_', '-')} {getattr(args, name)} must be >= 1")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    presets = args.presets.split(",") if cuda else ["tiny"]
    if cuda:
        print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    results: dict = {"device": str(device), "steps": []}
    for p in presets:
        try:
            try:
                results["steps"].append(step_bench(p, args.steps, device, False, cuda and not args.no_compile))
            except RuntimeError as e:  # a batch that needs a mask cannot use flash: measured without it, and said
                if "kernel" not in str(e):
                    raise
                print(f"{p}: flash unavailable ({str(e).splitlines()[0][:120]}); SDPA's own choice")
                results["steps"].append(step_bench(p, args.steps, device, False, not args.no_compile, flash=False))
        except torch.OutOfMemoryError:
            print(f"{p}: out of memory")
            results["steps"].append({"preset": p, "oom": True})
        except Exception as e:  # noqa: BLE001 (see _section)
            results["steps"].append({"preset": p, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"})
            print(f"{p}: {results['steps'][-1]['error']}")
    _section(results, "flex", flex_check, device, 3)
    if cuda and torch.cuda.device_count() >= 2:
        _section(results, "fsdp", fsdp_two_gpus, args.fsdp_steps)
    else:
        _section(results, "fsdp", fsdp_bench, presets[0], args.fsdp_steps, device)
    _section(results, "sampling", sampling_speed, device, args.sample_length)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
