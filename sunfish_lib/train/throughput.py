"""Throughput: tokens/s the data pipeline yields vs tokens/s a training step consumes.

The pipeline must never be what a run waits on; `bench/data_pipeline.py` and the data
notebook compare the two on the same machine. (Here, not in `data/`: `data` turns text into
batches; measuring a training step builds the model and the objective.)
"""

from __future__ import annotations

import time

import torch

from sunfish_lib.diffusion import build_objective
from sunfish_lib.model import Backbone


def pipeline_tokens_per_s(loader, n_batches: int = 50, warmup: int = 2) -> dict:
    """Real (non-padding) tokens/s from iterating `loader` (workers start during warm-up)."""
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    tokens, t0 = 0, time.perf_counter()
    for _ in range(n_batches):
        batch = next(it)
        mask = batch.get("attention_mask")
        tokens += int(mask.sum()) if mask is not None else batch["input_ids"].numel()
    seconds = time.perf_counter() - t0
    del it
    return {"tokens_per_s": tokens / seconds, "tokens": tokens, "batches": n_batches, "seconds": seconds}


def train_tokens_per_s(cfg, steps: int = 10, warmup: int = 2, device: str = "cpu", mask_token_id: int = 1) -> dict:
    """Tokens/s of forward + backward + AdamW on `Backbone.from_config(cfg)` with random batches of
    `data.micro_batch_size x data.seq_len`; the loss is `cfg`'s objective."""
    torch.manual_seed(cfg.seed)
    model = Backbone.from_config(cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    loss_fn, objective = _loss_fn(cfg, mask_token_id)
    B, T, V = cfg.data.micro_batch_size, cfg.data.seq_len, cfg.model.vocab_size
    batch = {"input_ids": torch.randint(3, V, (B, T), device=device)}

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model, batch).backward()
        opt.step()

    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    seconds = time.perf_counter() - t0
    return {"tokens_per_s": B * T * steps / seconds, "steps": steps, "seconds": seconds, "objective": objective,
            "params": sum(p.numel() for p in model.parameters())}


def _loss_fn(cfg, mask_token_id: int):
    obj = build_objective(cfg, mask_token_id=mask_token_id)
    return (lambda model, batch: obj.loss(model, batch)["loss"]), cfg.diffusion.objective


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
