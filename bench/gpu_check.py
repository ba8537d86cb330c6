"""One short GPU session: bf16 MFU, FSDP2 over NCCL, memory estimate vs the allocator's peak.

    python bench/gpu_check.py [--presets 125M,350M,1.4B] [--steps 6] [--fsdp-steps 4]

Needs only torch, Lightning and this package (no `datasets`/`papermill`: batches are random
tokens, which is all throughput and memory depend on). Per preset (masked objective,
bf16 autocast, the preset's micro-batch and sequence length):
  - tokens/s of a full training step (fwd + bwd + fused AdamW), MFU = executed FLOPs
    (`estimate.executed_flops_per_token`: the head only at masked positions) vs the datasheet
    bf16 peak (the step runs under bf16 autocast, so the bf16 peak is the right one; the
    fp32/TF32 choice of `callbacks.gpu_peak_flops` does not arise here);
  - torch.cuda.max_memory_allocated() vs `sunfish_lib.estimate.report(...)` total (single GPU);
then a few FSDP2 steps (ModelParallelStrategy, NCCL, one process) of the smallest preset
through the real Lightning module, checking the loss is finite and falls.
On CPU (`--device cpu`) it runs the tiny preset only, to check the script itself.
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from sunfish_lib.config import get_config
from sunfish_lib.diffusion import build_objective
from sunfish_lib.estimate import executed_flops_per_token, report
from sunfish_lib.model import Backbone
from sunfish_lib.train.callbacks import device_peak_flops


def step_bench(preset: str, steps: int, device: torch.device, checkpointing: bool) -> dict:
    cfg = get_config(preset, {"objective": "masked", "sampler": "low_confidence",
                              "model.activation_checkpointing": checkpointing})
    B, T, V = cfg.data.micro_batch_size, cfg.data.seq_len, cfg.model.vocab_size
    amp = device.type == "cuda"
    if amp:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model = Backbone.from_config(cfg).to(device)
    obj = build_objective(cfg, mask_token_id=V - 1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=amp)
    batch = {"input_ids": torch.randint(0, V - 1, (B, T), device=device)}
    gen = torch.Generator(device=device).manual_seed(0)
    times = []
    for i in range(steps + 2):
        if amp:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
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
    out = {"preset": preset, "checkpointing": checkpointing, "params": sum(p.numel() for p in model.parameters()),
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", default="125M,350M,1.4B")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--fsdp-steps", type=int, default=4)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    device = torch.device(args.device)
    presets = args.presets.split(",") if device.type == "cuda" else ["tiny"]
    if device.type == "cuda":
        print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}")
    results = []
    for p in presets:
        for ckpt in (False, True):
            try:
                results.append(step_bench(p, args.steps, device, ckpt))
            except torch.OutOfMemoryError:
                print(f"{p} ckpt={ckpt}: out of memory")
                results.append({"preset": p, "checkpointing": ckpt, "oom": True})
    fsdp = fsdp_bench(presets[0], args.fsdp_steps, device)
    print(json.dumps({"device": str(device), "steps": results, "fsdp": fsdp}))


if __name__ == "__main__":
    main()
