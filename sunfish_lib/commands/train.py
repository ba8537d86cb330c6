"""`sunfish train`: the training entry point on the command line (also under torchrun/SLURM)."""

from __future__ import annotations

import json
from pathlib import Path

import psutil

from sunfish_lib.errors import SunfishError
from sunfish_lib.data.sources import parse_source
from sunfish_lib.sizing.counts import num_params
from sunfish_lib.config import PRESETS, Config, get_config, parse_set_args, short_run_rules, with_max_steps


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model (any objective) into a run folder; resumable")
    p.add_argument("--preset", help=f"one of {', '.join(PRESETS)} (default tiny)")
    p.add_argument("--objective", help="continuous, masked or ar (default: the preset's)")
    p.add_argument("--data", help="shakespeare, fineweb[:CONFIG], fineweb-edu[:CONFIG] or a path/glob")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override; repeatable")
    p.add_argument("--config", type=Path, help="start from this config.json instead of a preset")
    p.add_argument("--run-dir", type=Path, help="run folder (default: a fresh runs/<timestamp>-train-...)")
    p.add_argument("--resume", nargs="?", const=True, type=Path, metavar="RUN_DIR",
                   help="continue RUN_DIR (or --run-dir) from its checkpoints/last.ckpt with its saved config; "
                        "flags change only what they name (--max-steps extends the run)")
    p.add_argument("--devices", type=int, help="devices (GPUs or CPU processes) per node")
    p.add_argument("--num-nodes", type=int, help="nodes")
    p.add_argument("--strategy", help="auto, single, ddp or fsdp")
    p.add_argument("--max-steps", type=int, help="optimizer steps")
    p.add_argument("--stop-at-step", type=int, help="stop after this step, keeping max_steps' LR schedule (resume later)")
    p.add_argument("--overfit-batches", type=int, default=0, help="train on the first N batches only (overfit check)")
    p.add_argument("--fast-dev-run", action="store_true", help="one training and one validation batch, nothing written")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (the text log still follows)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.set_defaults(func=run)


def config_from_args(args, saved=None):
    """The Config that `sunfish train ARGS` trains (preset or --config, then flags, then --set).

    `saved`: a resumed run's config.json; it is the starting config unless --preset/--config is given,
    and its max_steps holds unless --max-steps (or --set max_steps) changes it explicitly.
    """

    if args.config and args.preset:
        raise SunfishError(f"--preset {args.preset} and --config {args.config} both choose the starting config; "
                           "give one (change a loaded config with --set)")
    overrides: dict = {}  # what the command line names, nothing else
    if args.objective:
        overrides["diffusion.objective"] = args.objective  # brings its default sampler (Config.override)
    for flag, key in (("data", "data.source"), ("devices", "train.devices"), ("num_nodes", "train.num_nodes"),
                      ("strategy", "train.strategy"), ("max_steps", "train.max_steps")):
        if getattr(args, flag) is not None:
            overrides[key] = getattr(args, flag)
    overrides.update(parse_set_args(args.set))
    named = {str(k).split(".")[-1] for k in overrides}
    if saved is not None and not (args.config or args.preset):  # `--resume RUN [flags]`: the saved config, changed where named
        cfg = saved.override(overrides)
        if "warmup_steps" not in named:
            cfg = with_max_steps(cfg, cfg.train.max_steps)  # a resumed run keeps its warmup unless it no longer fits
        return cfg.validate()
    # The starting config and the flags, with the short-run rule: a pure function of the command line, so the
    # command that started a run, re-run with --resume appended, builds the very config the run saved (issue #31).
    cfg = Config.load(args.config) if args.config else get_config(args.preset or "tiny")
    cfg = short_run_rules(cfg.override(overrides), overrides)
    if saved is not None and "max_steps" not in named:
        cfg = with_max_steps(cfg, saved.train.max_steps)  # the run's length holds unless --max-steps changes it
    if saved is not None and "warmup_steps" not in named:  # a derived warmup follows the run being resumed
        cfg = with_max_steps(cfg.override({"train.warmup_steps": saved.train.warmup_steps}), cfg.train.max_steps)
    return cfg.validate()


def check_weights_fit_host(cfg: Config) -> None:
    """Every process builds the whole model in host memory before training (FSDP shards it afterwards): a config
    whose fp32 weights alone exceed this machine's memory is a typo (a --set n_layers=2000000000 ground on for
    minutes building modules, then died), refused in one line before anything is built."""
    params, have = num_params(cfg), psutil.virtual_memory().total
    need = params * 4
    if need > have:
        raise SunfishError(f"the model has {params:,} parameters ({need / 2**30:,.0f} GiB of fp32 weights), "
                           f"more than this machine's {have / 2**30:,.0f} GiB of memory; check model.n_layers, "
                           "d_model and vocab_size (sunfish estimate sizes a config)")


def resumed_folder(args) -> Path | None:
    """The run folder `--resume [RUN_DIR]` continues (None when not resuming)."""
    if not args.resume:
        return None
    if args.resume is True:
        if args.run_dir is None:
            raise SunfishError("--resume needs the run folder: --resume RUN_DIR (or --run-dir RUN_DIR --resume)")
        return args.run_dir
    if args.run_dir is not None and args.run_dir.resolve() != args.resume.resolve():
        raise SunfishError(f"--resume {args.resume} and --run-dir {args.run_dir} name different folders; give one")
    return args.resume


def run(args) -> int:
    # lazy: torch and Lightning are behind these: building the parser stays free of them (tests/test_cli.py;
    # importing Lightning takes ~4.5 s on top of torch's ~2.4 s)
    from sunfish_lib.sampling.session import training_samples
    from sunfish_lib.train.callbacks import StopAtStep
    from sunfish_lib.train.rundir import shared_run_dir
    from sunfish_lib.train.trainer import train

    if args.overfit_batches < 0:
        raise SunfishError(f"--overfit-batches={args.overfit_batches} must be >= 0")
    if args.stop_at_step is not None and args.stop_at_step < 1:
        raise SunfishError(f"--stop-at-step={args.stop_at_step} must be >= 1")
    resume_dir = resumed_folder(args)
    saved = Config.load(resume_dir / "config.json") if resume_dir and (resume_dir / "config.json").is_file() else None
    cfg = config_from_args(args, saved)
    if args.stop_at_step is not None and args.stop_at_step > cfg.train.max_steps:
        raise SunfishError(f"--stop-at-step={args.stop_at_step} is beyond train.max_steps={cfg.train.max_steps}; "
                           "it stops a run early, so give a step <= max_steps")
    parse_source(cfg.data.source, cfg.data.text_field)  # a missing or empty local source: one line, no run folder yet
    check_weights_fit_host(cfg)
    run_dir = resume_dir or args.run_dir or shared_run_dir(f"train-{cfg.preset}-{cfg.diffusion.objective}")
    extra = (StopAtStep(args.stop_at_step),) if args.stop_at_step else ()
    summary = train(cfg, run_dir, resume=bool(args.resume), fast_dev_run=args.fast_dev_run, callbacks=extra,
                    overfit_batches=args.overfit_batches, progress=False if args.no_progress else None,
                    sample_fn=training_samples)
    if not summary.pop("is_global_zero", True):
        return 0  # other ranks stay quiet
    if args.json:
        print(json.dumps(summary))
    else:
        loss = summary["metrics"].get("train/loss")
        print(f"trained to step {summary['global_step']}" + (f", train/loss {loss:.4f}" if loss is not None else ""))
        print(f"run folder: {summary['run_dir']}")
    return 0
