"""`sunfish run NOTEBOOK -p NAME VALUE`: one notebook executed headlessly (papermill) into a fresh run folder."""

from __future__ import annotations

from pathlib import Path

from sunfish_lib.commands.notebook_runs import report, resume
from sunfish_lib.errors import SunfishError
from sunfish_lib.notebook.params import parse_cli_params
from sunfish_lib.notebook.runner import run_notebooks


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="execute a notebook headlessly (papermill) into a fresh run folder")
    p.add_argument("notebook", nargs="?", help="path to an .ipynb")
    p.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"), default=[],
                   help="notebook parameter (Python literal or plain string); repeatable")
    p.add_argument("--runs-dir", type=Path, default=None, help="parent of run folders (default: runs/)")
    p.add_argument("--log-output", action="store_true", help="stream cell output to the terminal")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="re-run a failed run folder in place (see workbook)")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.resume is not None:
        return resume("run", args, notebook=args.notebook, **{"-p": args.parameter, "--runs-dir": args.runs_dir})
    if args.notebook is None:
        raise SunfishError("sunfish run needs a notebook (e.g. notebooks/01_config_and_memory.ipynb) "
                           "or --resume RUN_DIR")
    nb = Path(args.notebook)
    if nb.suffix != ".ipynb":
        raise SunfishError(f"{nb} is not a notebook (.ipynb); e.g. sunfish run notebooks/01_config_and_memory.ipynb")
    params = parse_cli_params(nb, args.parameter)
    return report("run", lambda: (run_notebooks([nb], {nb.name: params}, runs_parent=args.runs_dir,
                                                log_output=args.log_output), [nb.name]))
