"""Where one training step's time goes: per part, per shape and objective (torch.profiler), and Lightning's own overhead.

    .venv/bin/python bench/step_profile.py [--shapes tiny,mid] [--objectives masked,ar,continuous,block]
                                           [--steps 6] [--lightning-steps 40] [--rounds 3] [--no-lightning]

One training step as `sunfish train` runs it (`SunfishModule`'s objective, layer-wise AdamW from
`train.optim`, global-norm clipping, the LR schedule) on batches from the real data pipeline
(`data.pipeline.make_loader`), in a bare `for` loop, profiled with torch.profiler. Forward parts
are `record_function` ranges opened and closed by module hooks, so each is the wall time of its
ops (CPU ops run synchronously); a part named "x - y" is a range minus the ranges inside it:

- embed: token (and position) embedding; time: the time MLP and adaLN-single's shared Linear;
- adaLN+residual: the block's own code (modulation, residual adds) = block - its sublayers;
- attn.qkv, attn.proj: the projections; attn.sdpa: the attention module minus them (SDPA and
  the head reshapes); mlp; norms: ln1, ln2, ln_f; encode.other: positions (RoPE), masks;
- head: `Backbone.logits` (the vocabulary projection, only at the positions the loss reads);
  loss: the objective minus the backbone and head (noising, the masked-position gather, CE);
- backward; clip (global grad norm); optimizer (AdamW step, zero_grad, LR schedule);
  data (next batch from the loader); other: the step's wall time not in any part.

Timings are from the profiled steps (ms, % of the profiled step); `step_ms` is the same step
unprofiled (median), so the profiler's own cost reads off as profiled / unprofiled.

Lightning overhead: `build_trainer` (the workbook's callbacks, loggers and log cadence, `RunStatus`, no
progress bar as when piped) fits the same module on the same pre-drawn batches; its mean step interval
(`on_train_batch_start` to the next one, the log steps included) against the bare loop's over the same
batches, in `--rounds` alternating rounds (Lightning, bare, Lightning, ...): overhead = Lightning / bare - 1,
median and spread. Prints the table, then one JSON line. Not a test.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import pytorch_lightning as pl
import torch
from torch.profiler import ProfilerActivity, profile, record_function

from sunfish_lib.config import get_config
from sunfish_lib.config.validation import DEFAULT_SAMPLERS
from sunfish_lib.data.pipeline import make_loader
from sunfish_lib.data.tokenizer import get_tokenizer
from sunfish_lib.train.batches import FixedBatches
from sunfish_lib.train.module import SunfishModule
from sunfish_lib.train.optim import build_optimizer, build_scheduler
from sunfish_lib.train.status import RunStatus
from sunfish_lib.train.trainer import build_trainer

SHAPES = {
    "toy": {"n_layers": 2, "d_model": 64, "n_heads": 2, "seq_len": 32, "micro_batch_size": 4},  # the test's
    "tiny": {},  # the preset the workbook trains: 4 layers, d 128, 4 heads, seq 64, batch 32, vocab 1024
    "mid": {"n_layers": 6, "d_model": 512, "n_heads": 8, "seq_len": 256, "max_seq_len": 256,
            "micro_batch_size": 8, "vocab_size": 8192, "bpe_vocab_size": 4096},  # bench/train_throughput.py's
}
PARTS = ("data", "embed", "time", "adaLN+residual", "attn.qkv", "attn.sdpa", "attn.proj", "mlp", "norms",
         "encode.other", "head", "loss", "backward", "clip", "optimizer", "other")
"""The parts of a step, in the order the table prints them; they add up to the step."""


def config(shape: str, objective: str, **extra):
    return get_config("tiny", {"diffusion.objective": objective, "sample.sampler": DEFAULT_SAMPLERS[objective],
                               **SHAPES[shape], **extra})


class Ranges:
    """Module hooks that open a `record_function` range named `label` around each hooked forward."""

    def __init__(self):
        self.handles, self.open = [], []

    def add(self, module: torch.nn.Module | None, label: str) -> None:
        if module is None:
            return
        self.handles.append(module.register_forward_pre_hook(lambda m, a: self._enter(label)))
        self.handles.append(module.register_forward_hook(lambda m, a, o: self._exit()))

    def _enter(self, label):
        rf = record_function(label)
        rf.__enter__()
        self.open.append(rf)

    def _exit(self):
        self.open.pop().__exit__(None, None, None)

    def remove(self):
        for h in self.handles:
            h.remove()


@contextmanager
def labelled(module: SunfishModule):
    """Ranges on every part of the backbone, and on its `encode` and `logits` methods."""
    model, r = module.model, Ranges()
    for name in ("tok_emb", "pos_emb", "in_proj", "self_cond_proj"):
        r.add(getattr(model, name), "embed")
    r.add(model.time_emb, "time")
    r.add(model.time_mod, "time")
    r.add(model.ln_f, "norm.final")
    for blk in model.blocks:
        r.add(blk, "block")
        r.add(blk.ln1, "norm")
        r.add(blk.ln2, "norm")
        r.add(blk.attn, "attn")
        r.add(blk.attn.qkv, "attn.qkv")
        r.add(blk.attn.proj, "attn.proj")
        r.add(blk.mlp, "mlp")
    originals = {}
    for meth in ("encode", "logits"):
        fn = getattr(model, meth)
        originals[meth] = fn

        def wrapped(*a, _fn=fn, _label=meth, **kw):
            with record_function(_label):
                return _fn(*a, **kw)
        setattr(model, meth, wrapped)  # an instance attribute: shadows the method
    try:
        yield
    finally:
        r.remove()
        for meth in originals:
            delattr(model, meth)


def training_parts(module: SunfishModule):
    """(step(batch, i), optimizer): one bare training step as Lightning's loop runs it, without Lightning."""
    cfg = module.cfg
    opt = build_optimizer(module.model, cfg.train, cfg.model.n_layers)
    sched = build_scheduler(opt, cfg.train)
    max_norm = cfg.train.grad_clip or float("inf")
    params = list(module.model.parameters())

    def step(batch, i: int) -> None:
        with record_function("forward"):
            loss = module.objective.loss(module.model, batch, generator=module._generator(i))["loss"]
        with record_function("backward"):
            loss.backward()
        with record_function("clip"):
            torch.nn.utils.clip_grad_norm_([p for p in params if p.grad is not None], max_norm)
        with record_function("optimizer"):
            opt.step()
            opt.zero_grad(set_to_none=True)
            sched.step()
    return step


def build(shape: str, objective: str):
    cfg = config(shape, objective)
    tok = get_tokenizer(cfg.data.tokenizer, cfg.data.bpe_vocab_size)
    torch.manual_seed(0)
    module = SunfishModule(cfg.to_dict(), mask_token_id=tok.mask_token_id, eos_token_id=tok.eos_token_id)
    module.train()
    loader = make_loader(cfg.data, tok, num_workers=0, seed=cfg.seed)
    return cfg, module, loader, tok


def _range_ms(events, name: str) -> float:
    return sum(e.cpu_time_total for e in events if e.name == name) / 1e3


def profile_step(shape: str, objective: str, steps: int, warmup: int = 2) -> dict:
    """Per-part ms of one step (mean over `steps` profiled steps) and the unprofiled step's median ms."""
    cfg, module, loader, _ = build(shape, objective)
    step = training_parts(module)
    it = iter(loader)
    for i in range(warmup):
        step(next(it), i)
    plain = []
    for i in range(steps):
        t0 = time.perf_counter()
        step(next(it), warmup + i)
        plain.append((time.perf_counter() - t0) * 1e3)
    walls = []
    with labelled(module), profile(activities=[ProfilerActivity.CPU]) as prof:
        for i in range(steps):
            t0 = time.perf_counter()
            with record_function("data"):
                batch = next(it)
            step(batch, warmup + steps + i)
            walls.append((time.perf_counter() - t0) * 1e3)
    ev = [e for e in prof.events() if e.name in {"data", "forward", "backward", "clip", "optimizer", "encode", "logits",
                                                   "embed", "time", "norm", "norm.final", "block", "attn", "attn.qkv", "attn.proj", "mlp"}]
    ms = {name: _range_ms(ev, name) / steps for name in {e.name for e in ev}}
    g = lambda k: ms.get(k, 0.0)  # noqa: E731
    parts = {
        "data": g("data"), "embed": g("embed"), "time": g("time"),
        "adaLN+residual": g("block") - g("attn") - g("mlp") - g("norm"),
        "attn.qkv": g("attn.qkv"), "attn.sdpa": g("attn") - g("attn.qkv") - g("attn.proj"), "attn.proj": g("attn.proj"),
        "mlp": g("mlp"), "norms": g("norm") + g("norm.final"),
        "encode.other": g("encode") - g("embed") - g("time") - g("block") - g("norm.final"),
        "head": g("logits"), "loss": g("forward") - g("encode") - g("logits"),
        "backward": g("backward"), "clip": g("clip"), "optimizer": g("optimizer"),
    }
    wall = statistics.fmean(walls)
    parts["other"] = wall - sum(parts.values())
    return {"shape": shape, "objective": objective, "tokens": cfg.data.micro_batch_size * cfg.data.seq_len,
            "step_ms": statistics.median(plain), "step_ms_spread": [min(plain), max(plain)],
            "profiled_step_ms": wall, "parts_ms": parts, "parts_pct": {k: 100 * v / wall for k, v in parts.items()}}


class StepClock(pl.Callback):
    """Wall time between consecutive `on_train_batch_start`s (one Lightning step each, accumulate 1)."""

    def __init__(self):
        self.starts = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.starts.append(time.perf_counter())


def lightning_overhead(shape: str, objective: str, steps: int, rounds: int, skip: int = 5) -> dict:
    """Mean step of Lightning (`build_trainer`, the run's callbacks) vs the bare loop, same module and batches."""
    cfg, _, loader, tok = build(shape, objective)
    it = iter(loader)
    batches = [next(it) for _ in range(steps)]
    light, bare = [], []
    for _ in range(rounds):
        torch.manual_seed(0)
        module = SunfishModule(cfg.to_dict(), mask_token_id=tok.mask_token_id, eos_token_id=tok.eos_token_id)
        with tempfile.TemporaryDirectory() as d:
            clock, status = StepClock(), RunStatus(d)  # what `train()` adds to build_trainer's callbacks
            status.begin(cfg, resume=False)
            trainer = build_trainer(cfg, Path(d), progress=False, extra_callbacks=(clock, status), max_steps=steps)
            loader = torch.utils.data.DataLoader(FixedBatches(batches), batch_size=None)
            trainer.fit(module, train_dataloaders=loader, val_dataloaders=loader)
        gaps = [b - a for a, b in zip(clock.starts[skip:-1], clock.starts[skip + 1:])]
        light.append(1e3 * statistics.fmean(gaps))
        torch.manual_seed(0)
        module = SunfishModule(cfg.to_dict(), mask_token_id=tok.mask_token_id, eos_token_id=tok.eos_token_id).train()
        step = training_parts(module)
        for i, b in enumerate(batches[:skip]):
            step(b, i)
        t0 = time.perf_counter()
        for i, b in enumerate(batches[skip:-1]):
            step(b, skip + i)
        bare.append(1e3 * (time.perf_counter() - t0) / (len(batches) - skip - 1))
    ratios = [lt / b - 1 for lt, b in zip(light, bare)]
    return {"shape": shape, "objective": objective, "lightning_step_ms": statistics.median(light),
            "bare_step_ms": statistics.median(bare), "overhead_pct": 100 * statistics.median(ratios),
            "overhead_pct_spread": [100 * min(ratios), 100 * max(ratios)], "rounds": rounds,
            "log_every": cfg.train.log_every}


def table(rows: list[dict]) -> str:
    head = f"{'part':<16}" + "".join(f"{r['shape'] + '/' + r['objective']:>22}" for r in rows)
    lines = [head, f"{'':<16}" + "".join(f"{'ms':>13}{'%':>9}" for _ in rows)]
    for p in PARTS:
        lines.append(f"{p:<16}" + "".join(f"{r['parts_ms'][p]:>13.2f}{r['parts_pct'][p]:>8.1f}%" for r in rows))
    lines.append(f"{'profiled step':<16}" + "".join(f"{r['profiled_step_ms']:>13.2f}{100.0:>8.1f}%" for r in rows))
    lines.append(f"{'step (no prof.)':<16}" + "".join(f"{r['step_ms']:>13.2f}{'':>9}" for r in rows))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="tiny,mid", help=f"comma-separated, of {', '.join(SHAPES)}")
    ap.add_argument("--objectives", default="masked,ar,continuous,block")
    ap.add_argument("--steps", type=int, default=6, help="profiled (and unprofiled) steps per shape and objective")
    ap.add_argument("--lightning-steps", type=int, default=40, help="steps per Lightning / bare round")
    ap.add_argument("--rounds", type=int, default=3, help="alternating Lightning / bare rounds")
    ap.add_argument("--lightning-shape", default="tiny", help="shape of the Lightning comparison (the workbook's)")
    ap.add_argument("--no-lightning", action="store_true")
    args = ap.parse_args(argv)
    shapes, objectives = args.shapes.split(","), args.objectives.split(",")
    for s in shapes:
        if s not in SHAPES:
            sys.exit(f"--shapes: unknown shape {s!r}; choose from {', '.join(SHAPES)}")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    rows = [profile_step(s, o, args.steps) for s in shapes for o in objectives]
    for s in shapes:
        print(table([r for r in rows if r["shape"] == s]))
        print()
    light = None
    if not args.no_lightning:
        light = lightning_overhead(args.lightning_shape, "masked", args.lightning_steps, args.rounds)
        print(f"Lightning ({light['shape']}/masked, log_every {light['log_every']}): {light['lightning_step_ms']:.2f} ms/step "
              f"vs bare loop {light['bare_step_ms']:.2f} ms -> overhead {light['overhead_pct']:.1f}% "
              f"(spread {light['overhead_pct_spread'][0]:.1f}..{light['overhead_pct_spread'][1]:.1f}%, {light['rounds']} rounds)")
    out = {"bench": "step_profile", "torch": torch.__version__, "threads": torch.get_num_threads(),
           "parts": list(PARTS), "profiles": rows, "lightning": light}
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
