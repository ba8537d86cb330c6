"""Estimator: exact parameter count, training FLOPs per token, memory per GPU, verdicts.

Everything is arithmetic on the config (torch is not imported), so a 1.4B model can be
sized on a laptop. `report(cfg, ...)` gathers it all into one JSON-able dict; the memory
model itself lives in `sunfish_lib.sizing.memory`; `advise(cfg, [48, 20])` says which
strategies fit a set of GPUs and what to change when none does.

Units: bytes everywhere; GPU sizes are given in GB as cards are sold, read as GiB
(a "48 GB" RTX A6000 reports 49140 MiB, a "20 GB" A4500 20470 MiB).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from sunfish_lib.config import PRESETS, SAMPLERS, Config, ModelConfig, accumulation_for
from sunfish_lib.sizing.counts import (
    checkpoint_bytes, flops_breakdown, check_choice, flops_per_token, matmul_params, model_of, num_params, param_counts,
)
from sunfish_lib.errors import ConfigError
from sunfish_lib.sizing.memory import GiB, PRECISIONS, STRATEGIES, MemoryEstimate, Setup, memory_per_gpu

CUDA_CONTEXT_BYTES = GiB // 2
"""Assumed: CUDA context + cuBLAS/cuDNN workspaces outside torch's allocator (not measured here)."""
ALLOCATOR_SLACK = 0.05
"""Assumed: the caching allocator reserves ~5% beyond what tensors use (fragmentation)."""


# ----------------------------------------------------------------------------
# Inputs
# ----------------------------------------------------------------------------

def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name}={value!r} must be a positive integer")
    if value >= 2**63:  # as config values (`overrides`): beyond int64 the float arithmetic below overflows
        raise ConfigError(f"{name}={value} is out of range; give an integer below 2**63")
    return value


def parse_gpus(value: str | float | Sequence[float] | None) -> list[float]:
    """GPU memory sizes in GB: "48,20", 48, or [48, 20] -> [48.0, 20.0]."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, (list, tuple)) else [value]
    try:
        gpus = [float(x) for x in items]
    except (TypeError, ValueError):
        gpus = []
    if not gpus or any(g <= 0 for g in gpus):
        raise ConfigError(f"gpus={value!r} must be GPU memory sizes in GB, comma-separated, e.g. 48,20")
    return gpus


def config_for(preset: str, objective: str | None = None, overrides: Mapping[str, Any] | None = None) -> Config:
    """A preset with an objective and overrides applied, validated.

    Changing the objective also switches the sampler to the objective's first one when
    the preset's sampler does not fit it (masked has no 'ddim').
    """
    if preset not in PRESETS:
        raise ConfigError(f"preset={preset!r} is not allowed; choose one of {', '.join(PRESETS)}")
    cfg = PRESETS[preset]
    if objective is not None:
        check_choice("objective", objective, tuple(SAMPLERS))
        cfg = cfg.override({"diffusion.objective": objective})
        if cfg.sample.sampler not in SAMPLERS[objective]:
            cfg = cfg.override({"sample.sampler": SAMPLERS[objective][0]})
    return cfg.override(overrides or {}).validate()


def make_setup(cfg: Config, *, strategy=None, n_gpus=None, precision=None, activation_checkpointing=None,
               cpu_offload=None, micro_batch=None, seq_len=None, device: str = "cuda") -> Setup:
    """A `memory.Setup` from explicit arguments, falling back to the config's train/data fields."""
    t, m = cfg.train, cfg.model
    strategy = check_choice("strategy", strategy or t.strategy, ("auto",) + STRATEGIES)
    n = _positive_int("n_gpus", n_gpus if n_gpus is not None else t.devices * t.num_nodes)
    if strategy == "auto":
        strategy = "ddp" if n > 1 else "single"
    if strategy == "single" and n != 1:
        raise ConfigError(f"n_gpus={n} needs strategy ddp or fsdp; single uses one GPU")
    precision = check_choice("precision", precision or t.precision, ("auto",) + tuple(PRECISIONS))
    if precision == "auto":
        precision = "32-true" if device == "cpu" else "bf16-mixed"
    offload = bool(t.cpu_offload if cpu_offload is None else cpu_offload)
    if offload and strategy != "fsdp":
        raise ConfigError(f"cpu_offload=True needs strategy='fsdp' (got {strategy!r})")
    T = _positive_int("seq_len", seq_len if seq_len is not None else cfg.data.seq_len)
    if T > m.max_seq_len:
        raise ConfigError(f"seq_len={T} exceeds model.max_seq_len={m.max_seq_len}; lower it or raise max_seq_len")
    ckpt = m.activation_checkpointing if activation_checkpointing is None else activation_checkpointing
    mb = _positive_int("micro_batch", micro_batch if micro_batch is not None else cfg.data.micro_batch_size)
    return Setup(
        micro_batch=mb, seq_len=T, strategy=strategy, n_gpus=n, precision=precision, activation_checkpointing=bool(ckpt),
        cpu_offload=offload, accumulate=accumulation_for(t.global_batch_size, mb * n, t.accumulate_grad_batches),
        device=check_choice("device", device, ("cuda", "cpu")),
        segment_mask=not cfg.data.cross_document_attention, ema=t.ema_decay > 0,
        objective=cfg.diffusion.objective, low_discrepancy=cfg.diffusion.low_discrepancy,
    )


def estimate_memory(cfg: Config, setup: Setup) -> MemoryEstimate:
    """Peak bytes per GPU of one training step of `cfg` under `setup`."""
    m = model_of(cfg)
    return memory_per_gpu(m, setup, num_params(m), matmul_params(m))


# ----------------------------------------------------------------------------
# Verdicts and the report
# ----------------------------------------------------------------------------

def needed_bytes(total: int) -> int:
    """GPU memory a step needs: tensors + allocator slack + CUDA context (both assumed)."""
    return int(total * (1 + ALLOCATOR_SLACK)) + CUDA_CONTEXT_BYTES


def verdicts(total: int, strategy: str, gpu_mem_gb: Sequence[float]) -> list[dict]:
    """Fits / does not fit, per GPU, for a per-GPU peak of `total` bytes (card sizes in GiB).

    Each row judges its own card: `fits` and `headroom_gb` are that card's (card - needed).
    `single` runs on one card, so any card that fits will do. DDP replicates and FSDP shards
    evenly, so every rank holds the same bytes: the run fits when every card does, and
    `bounds_run` marks the smallest card, the one that decides it.
    """
    need = needed_bytes(total)
    bound = min(gpu_mem_gb) if gpu_mem_gb else 0
    return [{"gpu_gb": gb, "fits": need <= gb * GiB, "needed_gb": round(need / GiB, 2),
             "headroom_gb": round(gb - need / GiB, 2), "bounds_run": strategy != "single" and gb == bound}
            for gb in gpu_mem_gb]


def report(cfg: Config | str, *, strategy=None, n_gpus=None, precision=None, activation_checkpointing=None,
           cpu_offload=None, micro_batch=None, seq_len=None, gpu_mem_gb=None, device: str = "cuda") -> dict:
    """Everything the estimator knows about one training setup, as a JSON-able dict.

    Arguments left as None come from the config (train.strategy, train.precision, ...);
    `gpu_mem_gb` (a list, e.g. [48, 20], or "48,20") sets the GPU count for DDP/FSDP
    when `n_gpus` is not given. Keys: params, params_by_component, matmul_params,
    flops_per_token, flops, flops_per_step, settings, memory (per-GPU bytes by component
    and total), memory_detail, phases, host_bytes_per_process, checkpoint, verdicts, fits.
    """
    cfg = config_for(cfg) if isinstance(cfg, str) else cfg
    gpus = parse_gpus(gpu_mem_gb)
    if n_gpus is None and gpus and (strategy or cfg.train.strategy) != "single":
        n_gpus = len(gpus)
    s = make_setup(cfg, strategy=strategy, n_gpus=n_gpus, precision=precision, cpu_offload=cpu_offload,
                   activation_checkpointing=activation_checkpointing, micro_batch=micro_batch, seq_len=seq_len,
                   device=device)
    if s.strategy != "single" and len(gpus) > 1 and len(gpus) != s.n_gpus:
        raise ConfigError(f"gpus={','.join(f'{g:g}' for g in gpus)} lists {len(gpus)} GPUs but n_gpus={s.n_gpus}")
    mem = estimate_memory(cfg, s)
    flops = flops_breakdown(cfg, s.seq_len)
    tokens_per_step = s.micro_batch * s.seq_len * s.accumulate * s.n_gpus
    v = verdicts(mem.total, s.strategy, gpus)
    return {
        "preset": cfg.preset, "objective": cfg.diffusion.objective,
        "params": num_params(cfg), "params_by_component": param_counts(cfg), "matmul_params": matmul_params(cfg),
        "flops_per_token": flops["total"], "flops": flops,
        "tokens_per_step": tokens_per_step, "flops_per_step": flops["total"] * tokens_per_step,
        "settings": {k: getattr(s, k) for k in ("strategy", "n_gpus", "precision", "activation_checkpointing",
                                                "cpu_offload", "micro_batch", "seq_len", "accumulate", "device")},
        "memory": {**mem.breakdown(), "total": mem.total},
        "memory_detail": mem.detail, "phases": mem.phases, "peak_phase": mem.peak_phase,
        "host_bytes_per_process": mem.host,
        "checkpoint": checkpoint_bytes(cfg, s.precision, ema=s.ema),
        "assumptions": {"cuda_context_bytes": CUDA_CONTEXT_BYTES, "allocator_slack": ALLOCATOR_SLACK},
        "verdicts": v, "fits": _fits(v, s.strategy),
    }


def _fits(v: list[dict], strategy: str) -> bool | None:
    if not v:
        return None
    return any(x["fits"] for x in v) if strategy == "single" else all(x["fits"] for x in v)


# ----------------------------------------------------------------------------
# Advice: which strategies fit a set of GPUs, and the least change when none does
# ----------------------------------------------------------------------------

def _ladder(strategy: str, precision: str, mb: int) -> list[tuple[str, dict]]:
    """Changes to try, cheapest first (each a set of `report` arguments)."""
    smaller = [mb // 2**i for i in range(1, 12) if mb // 2**i >= 1]
    mbs = [(f" + micro-batch {k} (accumulate x{mb // k} more to keep the global batch)", {"micro_batch": k})
           for k in smaller]
    rungs = [("as configured", {})] + [(label[3:], kw) for label, kw in mbs]
    ckpt = {"activation_checkpointing": True}
    rungs += [("activation checkpointing" + lab, {**ckpt, **kw}) for lab, kw in [("", {})] + mbs]
    if precision != "bf16-true":
        bf16 = {**ckpt, "precision": "bf16-true"}
        rungs += [("bf16-true + activation checkpointing" + lab, {**bf16, **kw}) for lab, kw in [("", {})] + mbs]
    if strategy == "fsdp":
        off = {**ckpt, "cpu_offload": True}
        rungs += [("CPU offload + activation checkpointing" + lab, {**off, **kw}) for lab, kw in [("", {})] + mbs]
    return rungs


COSTS = {
    "micro-batch": "fewer tokens per matmul and more accumulation steps (cheap while micro-batch x seq_len >= ~2k)",
    "activation checkpointing": "one extra forward per step: ~8N instead of 6N FLOPs per token (~+33%)",
    "bf16-true": "bf16 weights and AdamW moments: updates below bf16 resolution are lost (quality risk)",
    "CPU offload": "weights, grads and AdamW state in host RAM, the step on the CPU: PCIe traffic every step",
}


def advise(cfg: Config | str, gpu_mem_gb=(48, 20), *, precision=None, micro_batch=None, seq_len=None) -> dict:
    """For each strategy over these GPUs: does the configured run fit, and if not, the first change that does.

    Changes are tried cheapest first: a smaller micro-batch, activation checkpointing,
    both, then bf16-true, then (FSDP) CPU offload. `single` uses the largest card;
    DDP and FSDP use every card, and the smallest one bounds them (FSDP shards evenly).
    """
    cfg = config_for(cfg) if isinstance(cfg, str) else cfg
    gpus = parse_gpus(gpu_mem_gb)
    base = report(cfg, strategy="single", gpu_mem_gb=gpus[:1], precision=precision, micro_batch=micro_batch,
                  seq_len=seq_len)["settings"]
    rows = []
    for strategy in STRATEGIES:
        n = 1 if strategy == "single" else len(gpus)
        if strategy != "single" and n < 2:
            continue
        first = None
        for label, kw in _ladder(strategy, base["precision"], base["micro_batch"]):
            args = {"precision": base["precision"], "micro_batch": base["micro_batch"], "seq_len": base["seq_len"],
                    "activation_checkpointing": False, "cpu_offload": False, **kw}
            r = report(cfg, strategy=strategy, n_gpus=n, gpu_mem_gb=gpus if n > 1 else [max(gpus)], **args)
            first = first or r
            if r["fits"]:
                break
        rows.append(_advice_row(strategy, n, gpus, first, r, label if r["fits"] else None))
    return {"gpus": gpus, "params": num_params(cfg), "baseline": base, "strategies": rows,
            "summary": [row["line"] for row in rows]}


def _advice_row(strategy: str, n: int, gpus: list[float], first: dict, fit: dict, change: str | None) -> dict:
    bound = max(gpus) if strategy == "single" else min(gpus)
    used = f"the {bound:g} GiB card" if strategy == "single" else f"{n} GPUs, bounded by the {bound:g} GiB card"
    need0 = first["verdicts"][0]["needed_gb"]
    if change == "as configured":
        line = f"{strategy}: fits as configured on {used} ({need0} of {bound:g} GiB needed)"
    elif change:
        costs = "; ".join(v for k, v in COSTS.items() if k in change)
        line = (f"{strategy}: needs {need0} GiB as configured on {used}; fits with {change} "
                f"({fit['verdicts'][0]['needed_gb']} GiB). Cost: {costs}")
    else:
        line = f"{strategy}: does not fit on {used} ({need0} GiB as configured), not even with every change tried"
    return {"strategy": strategy, "n_gpus": n, "bound_gb": bound, "needed_gb_as_configured": need0,
            "fits_as_configured": change == "as configured", "change": change,
            "needed_gb": fit["verdicts"][0]["needed_gb"] if change else None,
            "settings": fit["settings"] if change else None,
            "memory": fit["memory"] if change else first["memory"], "line": line}


# ----------------------------------------------------------------------------
# Tables for notebooks and the CLI
# ----------------------------------------------------------------------------

def param_table(cfg: Config | ModelConfig) -> list[dict]:
    """Rows (component, params, share) for the components that exist, plus a total row."""
    counts = {k: v for k, v in param_counts(cfg).items() if v}
    total = sum(counts.values())
    rows = [{"component": k, "params": v, "share": f"{100 * v / total:.1f}%"} for k, v in counts.items()]
    return rows + [{"component": "total", "params": total, "share": "100.0%"}]


def flops_table(flops: Mapping[str, float]) -> list[dict]:
    """Rows (term, GFLOPs per token) of `counts.flops_breakdown`, 3 decimals."""
    return [{"term": k, "GFLOPs per token": f"{v / 1e9:.3f}"} for k, v in flops.items()]


def fit_line(rep: Mapping[str, Any]) -> str:
    """The report's verdict as one Markdown line: peak and needed GiB per GPU, fits or not."""
    s, peak = rep["settings"], rep["memory"]["total"] / GiB
    held = rep["verdicts"][0]["needed_gb"] if rep["verdicts"] else None
    return (f"**{s['strategy']} over {s['n_gpus']} GPU(s)**: peak {peak:.2f} GiB per GPU (at the {rep['peak_phase']} "
            f"phase), needs {held} GiB per GPU with allocator slack and CUDA context; "
            f"**{'fits' if rep['fits'] else 'does not fit'}**")


def verdict_table(rep: Mapping[str, Any]) -> list[dict]:
    """One row per card of `report`'s verdicts: size, need, headroom, holds it, bounds the run."""
    return [{"card (GiB)": f"{v['gpu_gb']:g}", "needed per GPU (GiB)": f"{v['needed_gb']:.2f}",
             "headroom (GiB)": f"{v['headroom_gb']:+.2f}", "this card holds it": "yes" if v["fits"] else "no",
             "bounds the run": "yes" if v["bounds_run"] else ""} for v in rep["verdicts"]]


def advice_table(advice: Mapping[str, Any]) -> list[dict]:
    """One row per strategy of `advise`: the bounding card, the need as configured, the change that fits."""
    return [{"strategy": r["strategy"], "GPUs": r["n_gpus"], "bounding card (GiB)": f"{r['bound_gb']:g}",
             "needs as configured (GiB)": r["needed_gb_as_configured"], "change that fits": r["change"] or "none found",
             "needs after the change (GiB)": r["needed_gb"] if r["needed_gb"] is not None else "–"}
            for r in advice["strategies"]]


def memory_sweep(cfg: Config, strategies: Sequence[str] = STRATEGIES, seq_lens: Sequence[int] | None = None,
                 gpu_mem_gb=None, **kw) -> list[dict]:
    """One row per (strategy, seq_len): the per-GPU breakdown at the peak, total, and fits."""
    gpus = parse_gpus(gpu_mem_gb)
    rows = []
    for strategy in strategies:
        n = 1 if strategy == "single" else max(2, len(gpus))
        for T in seq_lens or [cfg.data.seq_len]:
            r = report(cfg, strategy=strategy, n_gpus=n, seq_len=T,
                       gpu_mem_gb=(gpus if n > 1 else [max(gpus)]) if gpus else None, **kw)
            rows.append({"strategy": strategy, "n_gpus": n, "seq_len": T, **r["memory"], "fits": r["fits"]})
    return rows


def markdown_table(rows: list[dict], columns: Sequence[str] | None = None) -> str:
    """A GitHub-markdown table; ints get thousands separators, byte columns are left as given."""
    columns = list(columns or (rows[0].keys() if rows else []))

    def cell(v):
        return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def save_estimate(run_dir, rep: dict, advice: dict | None = None, fig=None) -> dict:
    """Write estimate.json (the report, and the advice if given) and memory.png (if a figure) into run_dir."""
    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "estimate.json"}
    paths["json"].write_text(json.dumps({**rep, **({"advice": advice} if advice else {})}, indent=2) + "\n")
    if fig is not None:
        paths["figure"] = out / "memory.png"
        fig.savefig(paths["figure"], dpi=120)
    return paths
