"""One likelihood table for AR, masked and continuous diffusion trained with an equal budget.

    .venv/bin/python bench/objectives_table.py [--steps N] [--val-batches 20] [--out runs/bench-objectives]
        [--set KEY=VALUE ...] [--smoke]

Each objective trains the `tiny` recipe (`sunfish_lib.notebook.workbook.recipe_config`: the preset's
steps unless --steps, same batch, sequence length, optimizer and schedule, so the same tokens)
with the real trainer, or reuses the run already in --out, then is evaluated on the same
held-out batches:
- AR: exact NLL;
- masked: the ELBO (an upper bound on the NLL) by antithetic Monte Carlo over t, with its SE;
- continuous: the chain's variational bound (`diffusion.continuous_bound`), an upper bound on the NLL.
Beside them, the unigram model of the same tokenizer (the plateau). Also: the real tokens per
step read from the config, and the masked/AR perplexity ratio at this budget; MDLM's 1.32
(Sahoo et al. 2024, Table 1: 23.21 / 17.54 on OpenWebText) is context at 1M steps of a 110M
model, not a target here. The runs stay under --out for bench/sampling_masked.py; the configs are notebook 04's, so links
`--out/masked -> <workbook run>/04_train`, `--out/ar -> .../04_baselines/ar`, ... reuse a workbook's models.
Last line: JSON.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from sunfish_lib.config import parse_set_args
from sunfish_lib.data import get_tokenizer
from sunfish_lib.eval.evaluate import evaluate_run, unigram_baseline
from sunfish_lib.notebook.workbook import recipe_config, train_or_reuse

MDLM_RATIO = 23.21 / 17.54


def objective_config(objective: str, steps: int | None, smoke: bool = False, overrides: dict | None = None):
    """The equal-budget config of one objective: exactly what notebook 04 trains (so a workbook's runs can be reused)."""
    return recipe_config(objective, "tiny", steps, smoke=smoke, overrides=overrides)


def train_objective(objective: str, steps: int | None, out: Path, smoke: bool = False,
                    overrides: dict | None = None) -> Path:
    """Train (or reuse) `out/<objective>` at the tiny recipe's budget."""
    return train_or_reuse(objective_config(objective, steps, smoke, overrides), out / objective)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=None, help="optimizer steps (default: the tiny preset's)")
    ap.add_argument("--val-batches", type=int, default=20)
    ap.add_argument("--t-samples", type=int, default=16, help="t draws per sequence for the masked ELBO")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-objectives"))
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--smoke", action="store_true", help="the smoke preset, a few steps (the test)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="config override for all three runs, e.g. lr=2e-3")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    overrides = parse_set_args(args.set)
    if args.smoke:
        args.val_batches, args.t_samples = 2, 2
    rows = {}
    for objective in ("ar", "masked", "continuous"):
        run_dir = train_objective(objective, args.steps, args.out, args.smoke, overrides)
        rows[objective] = evaluate_run(run_dir, val_batches=args.val_batches, t_samples=args.t_samples).to_dict()
    cfg = objective_config("masked", args.steps, args.smoke, overrides)
    tok = get_tokenizer(cfg.data.tokenizer, cfg.data.bpe_vocab_size)
    rows["unigram"] = {"objective": "unigram", "stderr": 0.0, **unigram_baseline(cfg, tok, val_batches=args.val_batches)}
    rows["unigram"]["perplexity"] = math.exp(rows["unigram"]["nats_per_token"])
    per_step, steps = cfg.tokens_per_step, cfg.train.max_steps
    print(f"\n{'objective':<11}{'what':<42}{'nats/tok':>10}{'± SE':>8}{'ppl':>10}{'bits/byte':>11}{'tokens':>9}")
    for name, r in rows.items():
        bpb = f"{r['bits_per_byte']:.3f}" if r.get("bits_per_byte") is not None else "-"
        ppl = f"{r['perplexity']:.1f}" if r.get("perplexity") is not None else "-"
        print(f"{name:<11}{r['kind']:<42}{r['nats_per_token']:>10.3f}{r['stderr']:>8.3f}{ppl:>10}{bpb:>11}"
              f"{r['tokens']:>9}")
    ratio = rows["masked"]["perplexity"] / rows["ar"]["perplexity"]
    elbo_over_unigram = rows["masked"]["nats_per_token"] / rows["unigram"]["nats_per_token"]
    print(f"\nequal budget: {steps} steps x {per_step} tokens/step = {steps * per_step:,} tokens per objective "
          f"(micro_batch_size {cfg.data.micro_batch_size} x seq_len {cfg.data.seq_len} x "
          f"{cfg.accumulation * cfg.train.devices * cfg.train.num_nodes} accumulation x devices)")
    print(f"masked/AR perplexity ratio at this budget: {ratio:.2f}  (context, not a target: MDLM reports "
          f"{MDLM_RATIO:.2f} on OpenWebText after 1M steps of a 110M model)")
    print(f"masked ELBO / unigram NLL: {elbo_over_unigram:.2f}")
    print(json.dumps({"steps": steps, "tokens_per_step": per_step, "tokens": steps * per_step, "overrides": overrides,
                      "objectives": rows, "masked_ar_ppl_ratio": ratio, "elbo_over_unigram": elbo_over_unigram,
                      "mdlm_context_ratio_1m_steps": MDLM_RATIO}))


if __name__ == "__main__":
    main()
