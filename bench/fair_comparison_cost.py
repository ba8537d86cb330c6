"""What notebook 08's fair comparison adds to a workbook run, measured on this machine.

    .venv/bin/python bench/fair_comparison_cost.py [--smoke]

08 now (issue 30) (1) trains an independent AR judge (`judge_steps`, the `tiny` preset, another seed) when
the run folder holds no ar model unrelated to the converted runs, (2) evaluates its three masked runs at
a quarter and half of their steps too (6 more `evaluate_run` calls at 08's val_batches and t_samples)
and the unigram model on the same text, (3) keeps a checkpoint at each of the 4 validations of each
run. This times each piece with 08's parameters (`--smoke`: its smoke parameters), beside `sunfish
check`'s tiny fwd+bwd reading (machines of one kind differ about 2x; scale by the ratio of readings).
Prints one line per piece, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

import torch

from sunfish_lib.check import _check_tiny_model
from sunfish_lib.config import PRESETS, get_config
from sunfish_lib.data import get_tokenizer
from sunfish_lib.eval.evaluate import evaluate_run, unigram_baseline
from sunfish_lib.io.checkpoint import atomic_torch_save
from sunfish_lib.io.export import export_model
from sunfish_lib.model import Backbone
from sunfish_lib.train.trainer import train

EXTRA_EVALS = 6  # 3 runs x 2 more budgets (a quarter and half of the steps)
EXTRA_CKPTS = 9  # 3 runs x 3 more kept checkpoints (4 validations, the last one was saved before)


def _seconds(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="08's smoke parameters (smoke preset, 4 judge steps)")
    ap.add_argument("--measure-steps", type=int, default=None,
                    help="judge steps to time (default: all of 08's); the judge's cost is scaled to 08's steps")
    args = ap.parse_args(argv)
    preset = "smoke" if args.smoke else "tiny"
    judge_steps, val_batches, t_samples = (4, 2, 2) if args.smoke else (200, 10, 8)
    measured = min(args.measure_steps or judge_steps, judge_steps)
    reading = float(re.search(r"fwd\+bwd (\d+) ms", _check_tiny_model().detail).group(1))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cfg = get_config(preset, {"objective": "masked", "sampler": "low_confidence"})
        torch.manual_seed(0)
        model = Backbone.from_config(cfg)
        tok = get_tokenizer("bpe", cfg.data.bpe_vocab_size)
        export_model(model, cfg, tmp / "masked" / "export", tok)
        cfg.save(tmp / "masked" / "config.json")
        eval_s, _ = _seconds(lambda: evaluate_run(tmp / "masked", val_batches=val_batches, t_samples=t_samples))
        uni_s, _ = _seconds(lambda: unigram_baseline(cfg, tok, val_batches=val_batches))
        state = {"state_dict": model.state_dict(), "optimizer_states": [
            {k: v.clone() for k, v in model.state_dict().items()}, {k: v.clone() for k, v in model.state_dict().items()}]}
        ckpt_s, _ = _seconds(lambda: atomic_torch_save(state, tmp / "c.ckpt"))  # weights + Adam's two moments
        judge_cfg = get_config(preset, {"objective": "ar", "sampler": "ar", "max_steps": measured,
                                        "val_every": measured, "ckpt_every": measured, "tensorboard": False,
                                        "keep_best": 0, "seed": 1, "val_batches": PRESETS["tiny"].train.val_batches,
                                        "log_every": max(1, measured // 30)})
        measured_s, summary = _seconds(lambda: train(judge_cfg, tmp / "ar-judge", progress=False))
    judge_s = measured_s * judge_steps / measured  # start-up and the one validation scale too: an upper side
    added = judge_s + EXTRA_EVALS * eval_s + uni_s + EXTRA_CKPTS * ckpt_s
    out = {"preset": preset, "fwd_bwd_ms": reading, "torch_threads": torch.get_num_threads(),
           "judge_steps": judge_steps, "measured_steps": measured, "measured_s": round(measured_s, 1),
           "judge_s": round(judge_s, 1),
           "judge_tokens_per_s": round(summary["metrics"].get("perf/tokens_per_s", float("nan")), 0),
           "evaluate_s": round(eval_s, 2), "extra_evals": EXTRA_EVALS, "unigram_s": round(uni_s, 2),
           "checkpoint_s": round(ckpt_s, 3), "extra_checkpoints": EXTRA_CKPTS, "added_s": round(added, 1),
           "added_s_at_64ms": round(added * 64 / reading, 1)}
    print(f"sunfish check: tiny fwd+bwd {reading:.0f} ms, torch threads {out['torch_threads']}")
    print(f"judge: {measured} {preset} AR steps in {measured_s:.1f} s ({out['judge_tokens_per_s']:.0f} tokens/s); "
          f"{judge_steps} steps about {judge_s:.0f} s")
    print(f"evaluate_run: {eval_s:.2f} s each x {EXTRA_EVALS}; unigram model {uni_s:.2f} s; "
          f"checkpoint {ckpt_s:.3f} s x {EXTRA_CKPTS}")
    print(f"08 adds about {added:.0f} s here; at a 64 ms reading about {out['added_s_at_64ms']:.0f} s")
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
