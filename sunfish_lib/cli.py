"""The `sunfish` command: the parser built from `sunfish_lib/commands/` (one module per subcommand), `--version`,
and how errors become exit codes. Every subcommand calls the same library functions the notebooks do.

User mistakes (unknown preset, bad value, missing file) print one line on stderr and
exit with code 2. A run stopped by a signal (SIGINT, SIGTERM, SIGUSR1) prints one line saying what
it saved and how to resume, and exits 128 + the signal (130, 143, 138). A failing notebook leaves its executed copy behind and exits 2 when a cell
raised a SunfishError (one line: what was wrong), 1 otherwise; `--resume RUN_DIR` continues it.
"""

from __future__ import annotations

import argparse
import sys
from importlib.metadata import PackageNotFoundError, version

from sunfish_lib.commands import (
    check, convert, data, estimate, evaluate, export, harness, run, runs, sample, tasks, train, workbook,
)
from sunfish_lib.errors import Interrupted, SunfishError


class _Parser(argparse.ArgumentParser):
    """argparse that raises SunfishError (one line, exit 2) instead of printing usage."""

    def error(self, message: str):  # noqa: D401
        raise SunfishError(f"{self.prog}: {message}; see `{self.prog} --help`")


COMMANDS = [check, run, workbook, data, estimate, train, evaluate, sample, convert, runs, export, harness, tasks]
"""The subcommands, in `sunfish --help` order: each module has `add_parser(sub)` and `run(args)`."""


def _version() -> str:
    """The installed distribution's version (pyproject.toml), or the source tree's when not installed."""
    try:
        return version("sunfish")
    except PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sunfish", description="Sunfish: a research workbook for diffusion language models")
    parser.add_argument("--version", action="version", version=f"sunfish {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args) or 0)
    except Interrupted as e:  # not an error: the line says what was saved and how to resume
        if e.show:
            print(str(e), file=sys.stderr)
        return e.exit_code
    except SunfishError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
