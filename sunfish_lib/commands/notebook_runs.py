"""What `sunfish run` and `sunfish workbook` share: `--resume RUN_DIR`, and saying how a notebook run went."""

from __future__ import annotations

import sys

from sunfish_lib.errors import SunfishError
from sunfish_lib.notebook.runner import NotebookFailed, resume_run


def resume(command: str, args, **conflicting) -> int:
    """`sunfish run|workbook --resume RUN_DIR`; the folder's run.json and params.json say what runs."""

    given = [flag for flag, value in conflicting.items() if value]
    if given:
        raise SunfishError(f"--resume re-runs {args.resume} with its own notebooks and params.json; "
                           f"drop {given[0] if given[0] != 'notebook' else 'the notebook'}")
    return report(command, lambda: resume_run(args.resume, log_output=args.log_output), resumed=True)


def report(command: str, execute, resumed: bool = False) -> int:
    """Run `execute() -> (run folder, notebooks executed)` and say how it went.

    A cell that raised a SunfishError is a user error: its one line, where the executed copy
    is, exit 2. Any other failing cell exits 1. Either way `--resume RUN_DIR` continues.
    """

    try:
        run_dir, executed = execute()
    except NotebookFailed as e:
        summarize(e.output.parent, quiet=True)
        again = f"fix it, then: sunfish {command} --resume {e.output.parent}"
        if e.user_error:
            print(f"error: {e.evalue} (in {e.notebook.name}; executed copy: {e.output}; {again})", file=sys.stderr)
            return 2
        print(f"sunfish {command}: {e}; {again}", file=sys.stderr)
        return 1
    if resumed and not executed:
        print(f"nothing to resume: every notebook in {run_dir} finished ok")
    for name in executed:
        print(f"executed {name} -> {run_dir / name}")
    summarize(run_dir)
    print(f"run folder: {run_dir}")
    return 0


def summarize(run_dir, *, quiet: bool = False) -> None:
    """Write the run's summary.md and report.html, and print the summary (unless quiet)."""
    # lazy: nbformat, nbconvert and the workbook tables, needed only once a run has ended (`sunfish --help` stays light)
    from sunfish_lib.notebook.report import write_report

    summary, page = write_report(run_dir)
    if not quiet:
        print(summary.read_text())
    print(f"summary: {summary}\nreport: {page} (open it in a browser)")
