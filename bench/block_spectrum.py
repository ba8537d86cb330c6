"""The line from autoregressive to masked diffusion on one backbone: AR, block diffusion (K = 4, 16), masked.

    .venv/bin/python bench/block_spectrum.py [--steps 1500] [--blocks 4 16] [--val-batches 10] [--t-samples 8]
        [--parallel 2] [--out runs/bench-block-spectrum] [--samples 2] [--no-train] [--smoke]

Each model trains the workbook's `tiny` recipe (`workbook.recipe_config`: BPE-1024, 32 x 64 tokens a step,
--steps steps; only the objective and block size differ, so all see the same tokens) in its own 1-thread
process, at most --parallel at once (a shared CPU), or is reused from --out. Then, on the same held-out
batches (`evaluate.evaluate_run`): nats/token +- SE (AR: exact NLL; block and masked: their NELBO, an upper
bound) and bits per byte, beside BD3-LM's LM1B perplexities (Arriola et al. 2025, Table 1: 110M params,
65B tokens; context, not a target). Then --samples unconditional samples of each diffusion model with
unigram entropy and the AR model's perplexity as judge, and the same for held-out text.
Targets (issue #28): AR <= block 4 <= block 16 <= masked within noise (a pair is ordered when
a <= b + 2 SE of the difference), gap_closed_block4 = (masked - block4) / (masked - ar) >= 0.5.
--no-train evaluates what --out holds: a run still training is read from its last checkpoint, and its row
says at which step (`steps_trained`): not the equal budget, labelled as such.
Last line: JSON with `nats_per_token` per model and `gap_closed_block4`.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from sunfish_lib.eval.evaluate import evaluate_run
from sunfish_lib.eval.quality import load_judge, sample_quality
from sunfish_lib.sampling.session import load_checkpoint, sample
from sunfish_lib.train.launch import check_ended, launch
from sunfish_lib.notebook.workbook import recipe_config

LM1B_PPL = {"ar": 22.83, "block4": 28.23, "masked": 31.78}
"""BD3-LM Table 1 (LM1B, 110M params, 65B tokens): AR, BD3-LM L'=4 (a bound), MDLM (a bound)."""


def configs(args) -> dict:
    """name -> config: the tiny recipe for each objective, only the objective and block size changed."""
    out = {"ar": recipe_config("ar", "tiny", args.steps, smoke=args.smoke)}
    for k in args.blocks:
        out[f"block{k}"] = recipe_config("block", "tiny", args.steps, smoke=args.smoke,
                                         overrides={"block_size": k})  # masked's schedule: only K differs
    out["masked"] = recipe_config("masked", "tiny", args.steps, smoke=args.smoke)
    return out


def train_all(cfgs: dict, out: Path, parallel: int) -> dict:
    """Train what --out does not hold yet, `parallel` 1-thread processes at a time; name -> folder."""
    folders = {name: out.resolve() / name for name in cfgs}  # absolute: the trainer runs in its folder
    todo = [n for n in cfgs if not (folders[n] / "export" / "model.safetensors").is_file()]
    todo.sort(key=lambda n: n not in ("ar", "block4"))  # the gap_closed_block4 trio first, block 16 last
    running: list = []
    while todo or running:
        while todo and len(running) < parallel:
            name = todo.pop(0)
            print(f"training {name} -> {folders[name]}", flush=True)
            running.append((launch(cfgs[name], folders[name], threads=1), folders[name]))
        time.sleep(5)
        for proc, folder in [r for r in running if r[0].poll() is not None]:
            check_ended(proc, folder)
            running.remove((proc, folder))
    return folders


def evaluable(folders: dict, max_steps: int) -> dict:
    """name -> (path to evaluate, steps it trained): the export, else the last checkpoint (a run in progress)."""
    out = {}
    for name, folder in folders.items():
        if (folder / "export" / "model.safetensors").is_file():
            out[name] = (folder, max_steps)
        elif (folder / "checkpoints" / "last.ckpt").exists():
            out[name] = (folder / "checkpoints" / "last.ckpt",
                         json.loads((folder / "status.json").read_text())["checkpoint_step"])
    return out


def evaluated(folder: Path, path: Path, steps: int, args) -> dict:
    """`evaluate_run` of path, kept in folder/spectrum_eval.json and reused while steps and settings match."""
    key = {"path": str(path), "steps": steps, "val_batches": args.val_batches, "t_samples": args.t_samples}
    cache = folder / "spectrum_eval.json"
    if cache.is_file() and json.loads(cache.read_text())["key"] == key:
        return json.loads(cache.read_text())["result"]
    r = evaluate_run(path, val_batches=args.val_batches, t_samples=args.t_samples, device="cpu").to_dict()
    cache.write_text(json.dumps({"key": key, "result": r}))
    return r


def ordered(a: dict, b: dict) -> bool:
    """a <= b within noise: a's value is below b's plus 2 SE of the difference."""
    return a["nats_per_token"] <= b["nats_per_token"] + 2 * math.hypot(a["stderr"], b["stderr"])


def sample_rows(folders: dict, n: int, smoke: bool) -> dict:
    """Unconditional samples of each diffusion model, judged by the AR model (never a sampled one)."""
    judge = load_judge(folders["ar"])
    out = {}
    for name, folder in folders.items():
        if name == "ar":
            continue
        loaded = load_checkpoint(folder)
        length = 16 if smoke else 64
        gen = sample(loaded, mode="uncond", num_samples=n, length=length, steps=length, seed=0)
        q = sample_quality(gen.ids, gen.start, loaded.tokenizer, loaded.cfg, judge=judge)
        out[name] = {"entropy": q["entropy"], "judge_ppl": q["judge_ppl"], "reference_entropy": q["reference_entropy"],
                     "reference_judge_ppl": q["reference_judge_ppl"], "text0": gen.texts[0][:120]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--blocks", type=int, nargs="+", default=[4, 16])
    ap.add_argument("--val-batches", type=int, default=10)
    ap.add_argument("--t-samples", type=int, default=8)
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-block-spectrum"))
    ap.add_argument("--no-train", action="store_true", help="evaluate what --out holds (runs in progress: last checkpoint)")
    ap.add_argument("--smoke", action="store_true", help="the smoke preset: seconds, for the test")
    args = ap.parse_args()
    cfgs = configs(args)
    if args.no_train:
        folders = {name: args.out.resolve() / name for name in cfgs}
    else:
        folders = train_all(cfgs, args.out, args.parallel)
    first = next(iter(cfgs.values()))
    paths = evaluable(folders, first.train.max_steps)
    folders = {n: f for n, f in folders.items() if n in paths}
    rows = {}
    for name, (path, steps) in paths.items():
        r = evaluated(folders[name], path, steps, args)
        rows[name] = {**{k: r[k] for k in ("kind", "nats_per_token", "stderr", "bits_per_byte", "tokens")},
                      "steps_trained": steps}
    print(f"{'model':>8} | steps | {'kind':>16} | nats/token ± SE | bits/byte | ppl    | LM1B ppl (BD3-LM, 110M, "
          "65B tokens: context)")
    for name, r in rows.items():
        lm1b = LM1B_PPL.get(name)
        print(f"{name:>8} | {r['steps_trained']:>5} | {r['kind']:>16} | {r['nats_per_token']:.3f} ± {r['stderr']:.3f} | "
              f"{r['bits_per_byte']:.3f}     | {math.exp(r['nats_per_token']):6.1f} | {'-' if lm1b is None else lm1b}")
    names = [n for n in rows if rows[n]["steps_trained"] == first.train.max_steps]  # the equal-budget ones
    chain = [ordered(rows[a], rows[b]) for a, b in zip(names, names[1:])]
    gap = None
    if {"ar", "block4", "masked"} <= set(names):
        gap = (rows["masked"]["nats_per_token"] - rows["block4"]["nats_per_token"]) / (
            rows["masked"]["nats_per_token"] - rows["ar"]["nats_per_token"])
    print(f"ordered {' <= '.join(names)} within 2 SE: {all(chain)} (pairs {chain}); gap_closed_block4 "
          f"{'n/a' if gap is None else f'{gap:.2f}'} (target >= 0.5)")
    exported = {n: f for n, f in folders.items() if paths[n][0] == f}
    samples = sample_rows(exported, args.samples, args.smoke) if args.samples and "ar" in exported else {}
    for name, q in samples.items():
        print(f"{name:>8} samples: entropy {q['entropy']:.3f} (held-out {q['reference_entropy']:.3f}), judge ppl "
              f"{q['judge_ppl']:.1f} (held-out {q['reference_judge_ppl']:.1f}) {q['text0']!r}")
    print(json.dumps({"steps": first.train.max_steps, "steps_trained": {n: r["steps_trained"] for n, r in rows.items()}, "tokens_per_step": first.data.seq_len * first.data.micro_batch_size,
                      "nats_per_token": {n: r["nats_per_token"] for n, r in rows.items()},
                      "stderr": {n: r["stderr"] for n, r in rows.items()},
                      "bits_per_byte": {n: r["bits_per_byte"] for n, r in rows.items()},
                      "kind": {n: r["kind"] for n, r in rows.items()}, "ordered": all(chain),
                      "gap_closed_block4": gap, "lm1b_context_ppl": LM1B_PPL, "samples": samples}))


if __name__ == "__main__":
    main()
