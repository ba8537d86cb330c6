"""Workbook helpers: one recipe per objective at an equal budget, trained once and reused.

Notebook 04 trains the workbook's masked model into `<run>/04_train`; the AR and continuous
baselines that later notebooks (06-09) need train with the same preset, steps, batch and
sequence length (so the same number of tokens) into `<run>/04_baselines/<objective>`.
Every notebook and bench that needs a model goes through `train_or_reuse`: it trains a
config into a folder once and hands back the folder when it already holds that run's export.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping

from sunfish_lib.config import DEFAULT_SAMPLERS, PRESETS, Config, get_config, with_max_steps
from sunfish_lib.data import load_tokenizer
from sunfish_lib.errors import SunfishError
from sunfish_lib.notebook.tables import markdown_table
from sunfish_lib.runs.discovery import baseline_folder, has_export
from sunfish_lib.train.launch import check_ended, config_for_run, launch

def recipe_config(objective: str, preset: str = "tiny", max_steps: int | None = None, *, smoke: bool = False,
                  overrides: Mapping[str, Any] | None = None) -> Config:
    """The preset's recipe for `objective` at `max_steps` (None: the preset's), validated.

    Only the objective (and its default sampler) changes between objectives, so runs built with
    the same preset, steps and overrides see the same tokens. Warmup follows
    `config.short_run_rules` (through `get_config`); validation and checkpoints happen every
    tenth of the run (>= 1). smoke: the `smoke` preset in place of `preset` (seconds on a CPU),
    at most its 8 steps, validating and saving every half of the run.
    """
    if smoke:
        preset = "smoke"
    if preset not in PRESETS:
        raise SunfishError(f"preset={preset!r} is not allowed; choose one of {', '.join(PRESETS)}")
    base = PRESETS[preset]
    steps = int(max_steps if max_steps is not None else base.train.max_steps)
    if smoke:
        steps = min(steps, base.train.max_steps)
    every = max(1, steps // 2 if smoke else steps // 10)
    settings: dict[str, Any] = {
        "objective": objective, "sampler": DEFAULT_SAMPLERS.get(objective, base.sample.sampler), "max_steps": steps,
        "val_every": every, "ckpt_every": every,
    }
    return get_config(preset, {**settings, **dict(overrides or {})})


def train_or_reuse(cfg: Config, folder: str | Path, *, quiet: bool = False) -> Path:
    """Train `cfg` into `folder`, or return `folder` at once when it already holds this run's export.

    A run there with more `max_steps` requested resumes from its last checkpoint (as 04 does);
    one whose config.json differs in anything else is an error naming the field: reusing it
    would silently compare unequal budgets.
    """
    # lazy: the trainer takes 9.3 s to import (Lightning, torch), the session 1.7 s (torch); notebooks
    # import this module for its tables and recipes without torch
    from sunfish_lib.sampling.session import training_samples
    from sunfish_lib.train.trainer import _differs, train

    folder = Path(folder)
    if has_export(folder):
        saved = Config.load(folder / "config.json")
        diff = _differs(with_max_steps(saved, cfg.train.max_steps), cfg)  # warmup capped if it no longer fits
        if diff:
            raise SunfishError(f"{folder} holds a different run ({diff}); pick another folder or delete it")
        if saved.train.max_steps == cfg.train.max_steps:
            if not quiet:
                print(f"reusing {folder}")
            return folder
    train(cfg, folder, progress=False, resume=(folder / "checkpoints" / "last.ckpt").exists(),
          sample_fn=training_samples)
    return folder


def cores_each(processes: int) -> int:
    """CPU threads for each of `processes` training processes that run at once (at least 1).

    On 2 cores, two 1-thread runs side by side train ~20% more tokens per second in all than one
    2-thread run (measured in bench/tiny_recipe.py's tokens/s), so 04 trains its objectives together.
    """
    return max(1, (os.cpu_count() or 1) // max(1, processes))


def launch_equal_budget(cfg: Config, run_dir: str | Path, objectives, *, threads: int | None = None) -> dict:
    """Start the equal-budget runs of `objectives` (`equal_budget(cfg, o)`) in background processes.

    Returns {objective: (process or None, folder)}: None where the folder already holds that run's
    export (reused, as `train_or_reuse` would). Wait for them with `wait_for`.
    """
    started = {}
    for objective in objectives:
        folder = baseline_folder(run_dir, objective)
        want = equal_budget(cfg, objective)
        if has_export(folder):
            train_or_reuse(want, folder, quiet=True)  # same run already trained (or a one-line error)
            started[objective] = (None, folder)
            continue
        want, _ = config_for_run(want, folder)
        started[objective] = (launch(want, folder, threads=threads), folder)
    return started


def wait_for(started: Mapping[str, tuple]) -> dict[str, Path]:
    """Wait for `launch_equal_budget`'s processes; {objective: folder}. A failed run raises its one line."""
    for proc, folder in started.values():
        if proc is not None:
            proc.wait()
            check_ended(proc, folder)
    return {o: folder for o, (_, folder) in started.items()}


def equal_budget(cfg: Config, objective: str) -> Config:
    """`cfg` with only the objective (and its default sampler) changed: same data, steps and tokens."""
    return cfg.override({"objective": objective, "sampler": DEFAULT_SAMPLERS[objective],
                         "time_conditioning": None, "causal": None, "self_cond_input": None}).validate()


def likelihood_table(models: Mapping[str, str | Path], *, val_batches: int = 10, t_samples: int = 8) -> list[dict]:
    """Held-out NLL / ELBO +- SE and bits per byte of each model, then the unigram plateau of the first's tokenizer.

    Rows: objective, kind, nats_per_token, stderr, perplexity, bits_per_byte (None where the
    figure is not a likelihood), tokens; last row the unigram model (no context) on the same text.
    """
    from sunfish_lib.eval.evaluate import evaluate_run, unigram_baseline  # lazy: torch, 6.9 s (see train_or_reuse)

    rows = [{"model": name, **evaluate_run(path, val_batches=val_batches, t_samples=t_samples).to_dict()}
            for name, path in models.items()]
    first = Path(next(iter(models.values())))
    cfg = Config.load(first / "config.json")
    uni = unigram_baseline(cfg, load_tokenizer(first), val_batches=val_batches)
    rows.append({"model": "unigram", "objective": "-", "stderr": 0.0, "perplexity": math.exp(uni["nats_per_token"]),
                 **uni})
    return rows


def likelihood_markdown(rows: list[dict]) -> str:
    """`likelihood_table` rows as a Markdown table (per-token figures; bits per byte compare tokenizers), figures
    written by `tables.number`."""
    return markdown_table(rows, ("model", "kind", "nats_per_token", "stderr", "perplexity", "bits_per_byte"),
                          {"kind": "what", "nats_per_token": "nats/token", "stderr": "± SE", "bits_per_byte": "bits/byte"})


def likelihood_notes(rows: list[dict]) -> list[str]:
    """Ratios under 04's likelihood table: masked/AR perplexity, the share of the masked-AR gap block
    diffusion closes (1: as good as AR, 0: as masked), and each bound over the unigram plateau."""
    by = {r["model"]: r for r in rows}
    nats = {k: r["nats_per_token"] for k, r in by.items()}
    notes = []
    if "masked" in by and "ar" in by:
        notes.append(f"masked/AR perplexity ratio {by['masked']['perplexity'] / by['ar']['perplexity']:.2f}")
    if {"ar", "block", "masked"} <= set(by):  # where block 4 sits on the line from AR to masked
        gap = (nats["masked"] - nats["block"]) / (nats["masked"] - nats["ar"])
        notes.append(f"block 4 closes {gap:.2f} of the masked-AR gap in nats/token")
    for name, what in (("masked", "masked ELBO"), ("continuous", "continuous bound")):
        if name in by:
            notes.append(f"{what} / unigram NLL {nats[name] / nats['unigram']:.2f}")
    return notes


def training_estimate(objective: str, preset: str, max_steps: int, others, *, cpus: int | None = None) -> str:
    """What 04 is about to train and how long that takes here, measured: one line, printed before it starts.

    The rate is one process's measured tokens/s (`train.pace`) at the threads 04 gives each run
    (`cores_each`), slowed by the share of the cores the runs have to split when they outnumber them.
    """
    # lazy: torch and the backbone (1.7 s); the workbook command pays it once, only when 04 is about to train
    from sunfish_lib.train.pace import tokens_per_second

    cfg = recipe_config(objective, preset, max_steps)
    models = 1 + len([o for o in others if o != objective])
    threads = cores_each(models)
    rate = tokens_per_second(cfg, threads)
    share = min(1.0, (cpus or os.cpu_count() or 1) / (models * threads))
    seconds = cfg.train.max_steps * cfg.tokens_per_step / (rate * share)
    return (f"04 trains {models} models x {cfg.train.max_steps:,} steps ({preset}, {cfg.tokens_per_step:,} tokens/step): "
            f"about {seconds / 60:.0f} min on this machine (measured {rate:,.0f} tokens/s per run at {threads} "
            f"thread{'s' if threads > 1 else ''}, {models} runs sharing {cpus or os.cpu_count()} cores)")
