"""Optimizer and learning-rate schedule: AdamW with layer-wise learning rates (RND1).

Every parameter falls in one category — attn, mlp, embed, norm, time — and, inside a
block, has a depth. Its learning rate is

    lr = train.lr * lr_mult_<category> * lr_depth_decay ** (n_layers - 1 - block)

and weight decay applies only to attention/MLP/time matrices (never to norms, biases,
embeddings or the adaLN tables; Loshchilov & Hutter 2019, and GPT-2/nanoGPT practice).
RND1 (Radical Numerics 2025, Sec. 3.2) keeps an AR parent's knowledge by giving
attention a higher and MLP a lower learning rate during conversion; the multipliers
here make that one config line.

The schedule is linear warmup from 0 to the peak over warmup_steps, then cosine (or
linear) decay to min_lr_ratio * peak at max_steps (Loshchilov & Hutter 2017).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import nn

from sunfish_lib.config import TrainConfig

CATEGORIES = ("attn", "mlp", "embed", "norm", "time")


def categorize(name: str) -> tuple[str, int | None]:
    """Parameter name -> (category, block index or None)."""
    m = re.match(r"blocks\.(\d+)\.(.*)", name)
    block, rest = (int(m.group(1)), m.group(2)) if m else (None, name)
    if rest.startswith("attn."):
        return "attn", block
    if rest.startswith("mlp."):
        return "mlp", block
    if rest.startswith(("ln", "ln_f")):
        return "norm", block
    if rest.startswith(("time_emb.", "time_mod.", "mod_table")):
        return "time", block
    if rest.startswith(("tok_emb.", "pos_emb.", "in_proj.", "self_cond_proj.", "out_proj.", "lm_head.")):
        return "embed", block
    raise ValueError(f"parameter {name!r} has no learning-rate category; add it to sunfish_lib/train/optim.py")


def uses_weight_decay(name: str, p: torch.Tensor, category: str) -> bool:
    return p.dim() >= 2 and category in ("attn", "mlp", "time") and not name.endswith("mod_table")


@dataclass
class GroupInfo:
    name: str
    lr_mult: float
    weight_decay: float
    n_params: int
    n_tensors: int


def param_groups(model: nn.Module, cfg: TrainConfig, n_layers: int) -> tuple[list[dict], list[GroupInfo]]:
    """AdamW parameter groups (one per category x block x decay) and a printable summary."""
    mults = {c: getattr(cfg, f"lr_mult_{c}") for c in CATEGORIES}
    groups: dict[tuple, dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        cat, block = categorize(name)
        depth = cfg.lr_depth_decay ** (n_layers - 1 - block) if block is not None else 1.0
        decay = cfg.weight_decay if uses_weight_decay(name, p, cat) else 0.0
        key = (cat, block, decay)
        g = groups.setdefault(key, {"params": [], "names": [], "lr_mult": mults[cat] * depth, "weight_decay": decay})
        g["params"].append(p)
        g["names"].append(name)
    out, info = [], []
    for (cat, block, decay), g in sorted(groups.items(), key=lambda kv: (kv[0][1] is not None, kv[0][1] or 0, kv[0][0], kv[0][2])):
        label = f"{cat}" + (f"[{block}]" if block is not None else "") + (" +wd" if decay else "")
        g["lr"] = cfg.lr * g["lr_mult"]
        g["group_name"] = g["name"] = label  # "name": what LearningRateMonitor logs it as
        out.append(g)
        info.append(GroupInfo(label, g["lr_mult"], decay, sum(p.numel() for p in g["params"]), len(g["params"])))
    return out, info


def format_groups(info: list[GroupInfo], base_lr: float) -> str:
    """A plain-text table of parameter groups (what `print` shows in notebooks and logs)."""
    rows = [f"{'group':<16}{'params':>12}{'tensors':>9}{'lr_mult':>9}{'lr':>11}{'wd':>6}"]
    for g in info:
        rows.append(f"{g.name:<16}{g.n_params:>12,}{g.n_tensors:>9}{g.lr_mult:>9.3g}{base_lr * g.lr_mult:>11.3g}{g.weight_decay:>6.2g}")
    rows.append(f"{'total':<16}{sum(g.n_params for g in info):>12,}")
    return "\n".join(rows)


FUSED_DEVICES = ("cuda", "cpu")
"""Where torch's fused AdamW kernel runs: one pass per parameter instead of a dozen foreach passes over all of them
(the same update up to fp32 rounding; its time is bench/step_profile.py's `optimizer` part)."""


def build_optimizer(model: nn.Module, cfg: TrainConfig, n_layers: int, fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW over layer-wise groups; the fused kernel on CUDA and CPU (None: when every parameter is on one of
    those), foreach elsewhere and where the caller says fused=False (FSDP2's DTensor shards)."""
    groups, _ = param_groups(model, cfg, n_layers)
    if fused is None:
        fused = all(p.device.type in FUSED_DEVICES for g in groups for p in g["params"])
    kw = {"fused": True} if fused else {"foreach": True}
    for g in groups:
        g.pop("names", None)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8, **kw)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier on each group's peak LR at optimizer step `step` (0-based)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.decay == "constant":
        return 1.0
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    shape = 0.5 * (1 + math.cos(math.pi * progress)) if cfg.decay == "cosine" else 1 - progress
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * shape


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))
