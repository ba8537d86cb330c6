"""`sunfish workbook`: every numbered notebook, in order, executed into one run folder."""

from __future__ import annotations

from pathlib import Path

from sunfish_lib.commands.notebook_runs import report, resume
from sunfish_lib.errors import SunfishError
from sunfish_lib.notebook.params import notebook_parameters
from sunfish_lib.notebook.workbook import training_estimate
from sunfish_lib.notebook.runner import run_notebooks, workbook_notebooks


def add_parser(sub) -> None:
    w = sub.add_parser("workbook", help="execute every numbered notebook in order into one run folder")
    w.add_argument("--smoke", action="store_true", help="run each notebook with smoke=True (seconds, for tests)")
    w.add_argument("--only", nargs="+", default=None, help="notebook name prefixes to run (e.g. 00 01)")
    w.add_argument("--runs-dir", type=Path, default=None, help="parent of run folders (default: runs/)")
    w.add_argument("--log-output", action="store_true", help="stream cell output to the terminal")
    w.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help="re-run a failed run folder in place: skip the notebooks that finished ok, "
                        "re-run the failed one and those after it with the same parameters")
    w.set_defaults(func=run)


def run(args) -> int:
    if args.resume is not None:
        return resume("workbook", args, **{"--smoke": args.smoke, "--only": args.only, "--runs-dir": args.runs_dir})
    notebooks = workbook_notebooks()
    if args.only:
        notebooks = [n for n in notebooks if any(n.name.startswith(o) for o in args.only)]
        if not notebooks:
            raise SunfishError(f"--only {' '.join(args.only)} matches no notebook in notebooks/")
    params = {n.name: {"smoke": True} for n in notebooks} if args.smoke else {}
    train = next((n for n in notebooks if n.name.startswith("04_")), None)
    if train is not None and not args.smoke:
        p = notebook_parameters(train)
        print(training_estimate(p["objective"], p["preset"], p["max_steps"], p["baselines"]), flush=True)
    return report("workbook", lambda: (run_notebooks(notebooks, params, name="workbook", runs_parent=args.runs_dir,
                                                     log_output=args.log_output), [n.name for n in notebooks]))
