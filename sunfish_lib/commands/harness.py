"""`sunfish eval-harness RUN --tasks ...`: lm-evaluation-harness tasks on a Sunfish run (the `sunfish` lm_eval model).

Needs the `eval` extra (`pip install -e ".[eval]"`); a run's scores mean what `sunfish_lib.eval.harness`
says: exact log-likelihoods for ar, Monte-Carlo ELBOs for masked.
"""

from __future__ import annotations

import json
from pathlib import Path

from sunfish_lib.errors import SunfishError


def add_parser(sub) -> None:
    p = sub.add_parser("eval-harness", help="lm-evaluation-harness tasks on a run (needs the eval extra)")
    p.add_argument("run", help="a run folder, an exported folder or a .ckpt file")
    p.add_argument("--tasks", required=True, help="comma-separated lm_eval task names, e.g. hellaswag,piqa")
    p.add_argument("--include-path", type=Path, help="folder of extra task YAMLs (local tasks)")
    p.add_argument("--draws", type=int, default=32, help="masked models: Monte-Carlo draws of t per ELBO")
    p.add_argument("--num-fewshot", type=int, default=None, help="few-shot examples per prompt")
    p.add_argument("--limit", type=float, default=None, help="only the first N documents of each task")
    p.add_argument("--batch-size", type=int, default=16, help="draws scored per forward pass")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=Path, help="write lm_eval's results dict here as JSON")
    p.add_argument("--json", action="store_true", help="print the metrics as one JSON object")
    p.set_defaults(func=run)


def check_numbers(args) -> None:
    """The numeric flags, checked before lm_eval (seconds to import) is loaded."""
    for flag, value in (("--draws", args.draws), ("--batch-size", args.batch_size)):
        if value < 1:
            raise SunfishError(f"{flag}={value} must be >= 1")
    if args.num_fewshot is not None and args.num_fewshot < 0:
        raise SunfishError(f"--num-fewshot={args.num_fewshot} must be >= 0")
    if args.limit is not None and not 0 < args.limit < float("inf"):
        raise SunfishError(f"--limit={args.limit} must be a positive number of documents (or a fraction < 1)")
    if not 0 <= args.seed < 2**32:
        raise SunfishError(f"--seed={args.seed} must be an integer in [0, 2**32 - 1]")


def run(args) -> int:
    check_numbers(args)
    try:
        # lazy: lm_eval is optional (the eval extra) and imports torch and datasets
        import lm_eval
        from lm_eval.tasks import TaskManager

        # lazy: torch and Lightning are behind these; `sunfish --help` and `runs` must not import them
        import sunfish_lib.eval.harness  # noqa: F401 (registers the `sunfish` model)
    except ImportError as e:
        raise SunfishError(f"eval-harness needs lm-eval ({e.name} is missing); install it with "
                           "`pip install -e \".[eval]\"`") from None
    if args.include_path is not None and not args.include_path.is_dir():
        raise SunfishError(f"--include-path {args.include_path}: no such folder of task YAMLs")
    manager = TaskManager(include_path=str(args.include_path) if args.include_path else None)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise SunfishError(f"--tasks: unknown task {unknown[0]!r}; list them with `lm_eval ls tasks` "
                           "or pass --include-path with its YAML")
    results = lm_eval.simple_evaluate(
        model="sunfish", model_args={"path": str(args.run), "draws": args.draws, "seed": args.seed,
                                     "device": args.device, "batch_size": args.batch_size},
        tasks=tasks, num_fewshot=args.num_fewshot, limit=args.limit, task_manager=manager, random_seed=args.seed,
        numpy_random_seed=args.seed, torch_random_seed=args.seed, fewshot_random_seed=args.seed)
    metrics = {task: {k: v for k, v in res.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
               for task, res in results["results"].items()}
    if args.output:
        args.output.write_text(json.dumps({"results": results["results"], "config": str(results.get("config"))},
                                          indent=2, default=str) + "\n")
    if args.json:
        print(json.dumps(metrics))
    else:
        for task, res in metrics.items():
            print(task + ": " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(res.items())))
    return 0
