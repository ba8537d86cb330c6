"""Where diffusion wins: masked, AR and AR-on-reversed-targets trained at equal token budgets on the tasks.

One *job* is one model on one task: it trains in stages (`sunfish train` and its resume, constant LR after
warm-up so a resumed stage continues the same schedule) and after each stage answers the task's test rows
(`task_eval.evaluate_task`, every decoding order asked for), so every job leaves a learning curve. Jobs of
one task share the task's steps, batch and sequence length: equal tokens seen. A job stops after the stage
that used up its wall-clock budget; the table compares the objectives at the largest stage all reached.

`SETUPS[scale]` holds the sizes: `full` (the bench), `workbook` (notebook 10, <= 5 minutes on 2 cores),
`smoke` (seconds, for the tests). `PUBLISHED` holds the papers' numbers and their conditions.
"""

from __future__ import annotations

import json
import math
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from sunfish_lib.config import get_config
from sunfish_lib.errors import SunfishError
from sunfish_lib.io.export import load_for_inference
from sunfish_lib.sampling.analysis import commit_order
from sunfish_lib.eval.tasks import evaluate_task
from sunfish_lib.tasks import make_task
from sunfish_lib.train.trainer import train

MODEL = {"model.n_layers": 3, "model.d_model": 64, "model.n_heads": 4, "model.vocab_size": 128,
         "model.max_seq_len": 64}
_TASKS = {
    "reversal": {"params": {"n_facts": 200, "pool": 30, "qa_share": 0.8}, "seq_len": 8, "batch": 64},
    "path_star": {"params": {"n_train": 4000, "n_test": 200, "degree": 2, "path_length": 4, "n_labels": 20},
                  "seq_len": 26, "batch": 32},
    "sudoku": {"params": {"n_train": 4000, "n_test": 200, "size": 4, "givens": [6, 9]}, "seq_len": 34, "batch": 32},
}
SETUPS = {
    # full: masked reversal needs >= 12k steps (measured: held-out backward 0.025 at 6k, 0.825 at 12k steps)
    "full": {"tasks": _TASKS, "stages": [500, 1000, 2000, 4000, 8000, 12000, 16000], "minutes": 10.0, "limit": None},
    "workbook": {"tasks": {k: v for k, v in _TASKS.items() if k != "sudoku"}, "stages": [150, 300],
                 "minutes": 1.0, "limit": 100},
    "smoke": {"tasks": {"reversal": {**_TASKS["reversal"], "params": {"n_facts": 20, "pool": 10, "qa_share": 0.8}},
                        "path_star": {**_TASKS["path_star"], "params": {**_TASKS["path_star"]["params"],
                                                                         "n_train": 40, "n_test": 8}}},
              "stages": [2], "minutes": 1.0, "limit": 8, "model": {"model.n_layers": 1, "model.d_model": 32,
                                                                     "model.n_heads": 2}},
}
JOBS = {  # task -> [(label, objective, reversed targets)]
    "reversal": [("masked", "masked", False), ("ar", "ar", False)],
    "path_star": [("masked", "masked", False), ("ar", "ar", False), ("ar_reversed", "ar", True)],
    "sudoku": [("masked", "masked", False)],
}
ORDERS = {"reversal": ["margin"], "path_star": ["random", "low_confidence", "margin"], "sudoku": ["random", "margin"]}
PUBLISHED = [
    {"task": "reversal, backward", "masked": "100 (MLM-U)", "ar": "0", "conditions":
     "Kitouni et al. 2024 (arXiv 2406.05183): retrieval of held-out key-value facts queried backwards, "
     "GPT-2-size transformers trained to convergence"},
    {"task": "path-star (degree 2)", "masked": "100 (MLM-U)", "ar": "~50 (1/degree); reversed targets: 100",
     "conditions": "Bachmann & Nagarajan 2024 (arXiv 2403.06963), Kitouni et al. Fig. 5a: larger graphs, "
                   "GPT-2-size models, 100k+ graphs"},
    {"task": "Sudoku (easy, 9x9)", "masked": "100 (6M params)", "ar": "20.7", "conditions":
     "Ye et al. ICLR 2025 (HKUNLP/diffusion-vs-ar); hard Sudoku margin 89.5 vs vanilla order 6.9: Kim et al. "
     "ICML 2025"},
]


def task_dirs(root: str | Path, scale: str, seed: int = 0) -> dict[str, Path]:
    """Make every task folder of `scale` under root (path_star twice: goal-first paths for the AR control)."""
    root, out = Path(root), {}
    for name, spec in SETUPS[scale]["tasks"].items():
        out[name] = root / name
        make_task(name, out[name], seed=seed, **spec["params"])
        if name == "path_star":
            out["path_star_reversed"] = root / "path_star_reversed"
            make_task(name, out["path_star_reversed"], seed=seed, reverse=True, **spec["params"])
    return out


def jobs(root: str | Path, scale: str, seed: int = 0) -> list[dict]:
    """Every (task, objective) job of `scale`, its task folder made."""
    dirs, setup = task_dirs(root, scale, seed), SETUPS[scale]
    out = []
    for name, spec in setup["tasks"].items():
        for label, objective, rev in JOBS[name]:
            folder = dirs["path_star_reversed" if rev else name]
            over = {**MODEL, **setup.get("model", {}), "diffusion.objective": objective,
                    "sample.sampler": "margin" if objective == "masked" else "ar",
                    "data.source": str(folder / "train.jsonl"), "data.tokenizer": str(folder / "tokenizer"),
                    "data.seq_len": spec["seq_len"], "sample.length": spec["seq_len"],
                    "data.micro_batch_size": spec["batch"], "train.lr": 2e-3, "train.warmup_steps": 50,
                    "train.decay": "constant", "train.weight_decay": 0.0, "train.val_batches": 2, "seed": seed,
                    "data.val_fraction": 0.0}  # every training row trains (a held-out fact must keep its statement)
            out.append({"task": name, "label": label, "task_dir": str(folder), "run_dir": str(Path(root) / "runs" /
                        f"{name}-{label}"), "overrides": over, "stages": setup["stages"], "minutes": setup["minutes"],
                        "orders": ORDERS[name] if objective == "masked" else ["ar"], "limit": setup["limit"],
                        "tokens_per_step": spec["seq_len"] * spec["batch"]})
    return out


def run_job(job: dict) -> dict:
    """Train `job` in stages and score it after each; returns the job with its `curve` (one row per stage)."""
    torch.set_num_threads(1)
    start, curve, first = time.time(), [], job["stages"][0]
    fixed = {"train.warmup_steps": min(job["overrides"]["train.warmup_steps"], max(1, first // 4)),
             "train.val_every": first, "train.ckpt_every": first}  # a resumed run may change max_steps alone
    for i, steps in enumerate(job["stages"]):
        cfg = get_config("tiny", {**job["overrides"], **fixed, "train.max_steps": steps})
        train(cfg, job["run_dir"], resume=i > 0, progress=False)
        minutes = (time.time() - start) / 60
        bundle = load_for_inference(job["run_dir"])
        row = {"steps": steps, "tokens": steps * job["tokens_per_step"], "train_minutes": round(minutes, 2)}
        for order in job["orders"]:
            res = evaluate_task(job["run_dir"], job["task_dir"], sampler=order if order != "ar" else "margin",
                                limit=job["limit"], model_bundle=bundle)
            row[order] = {"accuracy": res.accuracy, "stderr": res.stderr, "n": res.n, "ar_ness": res.ar_ness,
                          "examples": res.examples[:4]}
        curve.append(row)
        nxt = job["stages"][i + 1] if i + 1 < len(job["stages"]) else None
        if nxt is None or (time.time() - start) / 60 * nxt / steps > job["minutes"]:
            break  # the next stage would end past the budget (stage time grows with its steps)
    return {**job, "curve": curve, "minutes": round((time.time() - start) / 60, 2)}


def run_lab(root: str | Path, scale: str = "full", *, parallel: int = 2, seed: int = 0, log=print) -> list[dict]:
    """Every job of `scale`, at most `parallel` at once (each one torch thread), learning curves in root/results.json."""
    if scale not in SETUPS:
        raise SunfishError(f"scale {scale!r}: choose one of {', '.join(SETUPS)}")
    todo = jobs(root, scale, seed)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    done = []
    if parallel <= 1:
        for j in todo:
            done.append(run_job(j))
            log(f"{j['task']} {j['label']}: {done[-1]['minutes']} min")
    else:
        with ProcessPoolExecutor(parallel, mp_context=get_context("spawn")) as pool:
            for j, res in zip(todo, pool.map(run_job, todo)):
                done.append(res)
                log(f"{j['task']} {j['label']}: {res['minutes']} min")
    Path(root, "results.json").write_text(json.dumps(done, indent=1), encoding="utf-8")
    return done


def summary(results: list[dict]) -> dict:
    """Accuracies at the largest stage every job of a task reached (equal tokens), best decoding order per masked job.

    Returns {task: {"steps", "tokens", label: {"accuracy": {direction: p}, "stderr": ..., "order", "ar_ness"}}}.
    """
    out = {}
    for task in dict.fromkeys(r["task"] for r in results):
        mine = [r for r in results if r["task"] == task]
        steps = min(r["curve"][-1]["steps"] for r in mine)
        entry = {"steps": steps}
        for r in mine:
            row = next(c for c in r["curve"] if c["steps"] == steps)
            entry["tokens"] = row["tokens"]
            best = max(r["orders"], key=lambda o: sum(row[o]["accuracy"].values()))
            entry[r["label"]] = {**{k: row[best][k] for k in ("accuracy", "stderr", "n", "ar_ness")}, "order": best,
                                 "orders": {o: row[o]["accuracy"] for o in r["orders"]},
                                 "train_minutes": row["train_minutes"]}
        out[task] = entry
    return out


def headline(results: list[dict]) -> dict:
    """The bench's JSON keys: reversal backward (masked infill, AR question form), path-star (masked best order)."""
    s = summary(results)

    def acc(task, label, direction):
        try:
            return round(s[task][label]["accuracy"][direction], 4)
        except KeyError:
            return None

    out = {"reversal_backward_masked": acc("reversal", "masked", "backward"),
           "reversal_backward_ar": acc("reversal", "ar", "backward"),
           "reversal_forward_masked": acc("reversal", "masked", "forward"),
           "reversal_forward_ar": acc("reversal", "ar", "forward"),
           "path_star_masked": acc("path_star", "masked", "path"), "path_star_ar": acc("path_star", "ar", "path"),
           "path_star_ar_reversed": acc("path_star", "ar_reversed", "path")}
    if "sudoku" in s:
        orders = s["sudoku"]["masked"]["orders"]
        out["sudoku_margin"] = round(orders["margin"]["solve"], 4)
        out["sudoku_random"] = round(orders["random"]["solve"], 4)
    out["minutes"] = round(max((r["minutes"] for r in results), default=0.0), 2)
    return out


def order_heatmap(run_dir, task_dir, order: str = "margin", row: int = 0) -> tuple[list[str], torch.Tensor, bool]:
    """(the row's final tokens as words, the step at which each was committed (T,), -1 = given; correct?) of one
    test row answered by a masked run in decoding order `order`."""
    res = evaluate_task(run_dir, task_dir, sampler=order, limit=row + 1)
    if res.trajectory is None:
        raise SunfishError(f"{run_dir} recorded no trajectory on {task_dir}; use a masked run on path_star or sudoku")
    _, _, tok = load_for_inference(run_dir)
    words = [tok.decode([int(i)]) for i in res.trajectory.steps[-1]["tokens"][row]]
    return words, commit_order(res.trajectory, row), bool(res.examples[row]["correct"]) if res.examples else False


def order_figure(words: list[str], steps: torch.Tensor, title: str) -> Figure:
    """The generated positions coloured by the step that committed them (given text grey): which cell came first."""
    gen = [i for i, s in enumerate(steps.tolist()) if s >= 0]
    fig, ax = plt.subplots(figsize=(max(6, 0.42 * len(gen)), 1.9))
    vals = steps[gen].float()[None].numpy()
    im = ax.imshow(vals, cmap="viridis_r", aspect="auto")
    for j, i in enumerate(gen):
        ax.text(j, 0, words[i].replace("<|endoftext|>", "EOS"), ha="center", va="center", fontsize=8,
                color="white" if vals[0, j] < vals.max() / 2 else "black", rotation=90)
    ax.set_xticks(range(len(gen)), [str(i) for i in gen], fontsize=7)
    ax.set_yticks([])
    ax.set_xlabel("position (the answer, then its EOS padding)")
    fig.colorbar(im, ax=ax, label="commit step", pad=0.01)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    plt.close(fig)
    return fig


def table_rows(results: list[dict]) -> list[dict]:
    """One row per (task, model): accuracy ± SE per direction at equal tokens, the decoding order, AR-ness."""
    rows = []
    for task, entry in summary(results).items():
        for label, r in entry.items():
            if not isinstance(r, dict):
                continue
            accs = "; ".join(f"{d} {a:.2f} ± {r['stderr'][d]:.2f}" for d, a in r["accuracy"].items())
            rows.append({"task": task, "model": label, "accuracy (exact / rules)": accs, "order": r["order"],
                         "AR-ness": r["ar_ness"], "steps": entry["steps"], "tokens": entry["tokens"],
                         "minutes": r["train_minutes"]})
    return rows


def takeaways(results: list[dict]) -> list[str]:
    """One sentence per task, read from the results (differences under 2 SE called ties)."""
    s, out = summary(results), []

    def cmp(a, sa, b, sb):
        return "ties with" if abs(a - b) < 2 * math.hypot(sa, sb) else ("beats" if a > b else "trails")

    if "reversal" in s:
        m, a = s["reversal"]["masked"], s["reversal"]["ar"]
        out.append(f"Reversal (held-out facts asked backwards, {s['reversal']['tokens']:,} tokens each): masked "
                   f"infilling {m['accuracy']['backward']:.2f} ± {m['stderr']['backward']:.2f} "
                   f"{cmp(m['accuracy']['backward'], m['stderr']['backward'], a['accuracy']['backward'], a['stderr']['backward'])}"
                   f" AR {a['accuracy']['backward']:.2f} ± {a['stderr']['backward']:.2f} (forward: masked "
                   f"{m['accuracy']['forward']:.2f}, AR {a['accuracy']['forward']:.2f}).")
    if "path_star" in s:
        e = s["path_star"]
        m, a = e["masked"], e["ar"]
        rev = e.get("ar_reversed")
        out.append(f"Path-star ({e['tokens']:,} tokens each): masked ({m['order']} order) {m['accuracy']['path']:.2f} ± "
                   f"{m['stderr']['path']:.2f} {cmp(m['accuracy']['path'], m['stderr']['path'], a['accuracy']['path'], a['stderr']['path'])}"
                   f" teacher-forced AR {a['accuracy']['path']:.2f} ± {a['stderr']['path']:.2f}"
                   + (f"; AR on reversed targets {rev['accuracy']['path']:.2f} ± {rev['stderr']['path']:.2f}" if rev else "")
                   + f"; the masked model's AR-ness is {m['ar_ness']:.2f}.")
    if "sudoku" in s:
        o = s["sudoku"]["masked"]["orders"]
        n = s["sudoku"]["masked"]["n"]["solve"]
        mg, rd = o["margin"]["solve"], o["random"]["solve"]
        se = math.hypot(math.sqrt(mg * (1 - mg) / n), math.sqrt(rd * (1 - rd) / n))
        out.append(f"Sudoku 4x4: margin decoding solves {mg:.2f}, random order {rd:.2f} "
                   f"({'a tie' if abs(mg - rd) < 2 * se else f'{100 * (mg - rd):+.0f} points'}).")
    return out
