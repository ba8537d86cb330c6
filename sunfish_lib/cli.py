"""The `sunfish` command. Every subcommand calls the same library functions the notebooks do.

User mistakes (unknown preset, bad value, missing file) print one line on stderr and
exit with code 2. A run stopped by a signal (SIGINT, SIGTERM, SIGUSR1) prints one line saying what
it saved and how to resume, and exits 128 + the signal (130, 143, 138). A failing notebook leaves its executed copy behind and exits 2 when a cell
raised a SunfishError (one line: what was wrong), 1 otherwise; `--resume RUN_DIR` continues it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sunfish_lib.check import all_ok, run_checks
from sunfish_lib.commands import convert as convert_command
from sunfish_lib.commands import evaluate as evaluate_command
from sunfish_lib.commands import export as export_command
from sunfish_lib.commands import harness as harness_command
from sunfish_lib.commands import runs as runs_command
from sunfish_lib.commands import sample as sample_command
from sunfish_lib.commands import train as train_command
from sunfish_lib.config import parse_set_args
from sunfish_lib.errors import Interrupted, SunfishError
from sunfish_lib.estimate import advise, config_for, report
from sunfish_lib.notebook_params import parse_cli_params
from sunfish_lib.runs import NotebookFailed, resume_run, run_notebooks, workbook_notebooks


class _Parser(argparse.ArgumentParser):
    """argparse that raises SunfishError (one line, exit 2) instead of printing usage."""

    def error(self, message: str):  # noqa: D401
        raise SunfishError(f"{self.prog}: {message}; see `{self.prog} --help`")


# -- sunfish check ---------------------------------------------------------------------

def _add_check(sub) -> None:
    p = sub.add_parser("check", help="installation check: imports, torch, devices, a tiny forward/backward")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_check)


def _cmd_check(args) -> int:
    results = run_checks()
    ok = all_ok(results)
    if args.json:
        print(json.dumps({"ok": ok, "checks": [r.to_dict() for r in results]}))
        return 0 if ok else 1
    from rich.console import Console
    from rich.table import Table

    table = Table(title="sunfish check")
    for col in ("check", "status", "detail", "fix"):
        table.add_column(col)
    for r in results:
        table.add_row(r.name, "[green]ok[/]" if r.ok else "[red]FAIL[/]", r.detail, "" if r.ok else r.fix)
    Console(width=160).print(table)
    print("all checks passed" if ok else "some checks failed: see the fix column")
    return 0 if ok else 1


# -- sunfish run / workbook ------------------------------------------------------------

def _add_run(sub) -> None:
    p = sub.add_parser("run", help="execute a notebook headlessly (papermill) into a fresh run folder")
    p.add_argument("notebook", nargs="?", help="path to an .ipynb")
    p.add_argument("-p", "--parameter", nargs=2, action="append", metavar=("NAME", "VALUE"), default=[],
                   help="notebook parameter (Python literal or plain string); repeatable")
    p.add_argument("--runs-dir", type=Path, default=None, help="parent of run folders (default: runs/)")
    p.add_argument("--log-output", action="store_true", help="stream cell output to the terminal")
    p.add_argument("--resume", type=Path, metavar="RUN_DIR", help="re-run a failed run folder in place (see workbook)")
    p.set_defaults(func=_cmd_run)

    w = sub.add_parser("workbook", help="execute every numbered notebook in order into one run folder")
    w.add_argument("--smoke", action="store_true", help="run each notebook with smoke=True (seconds, for tests)")
    w.add_argument("--only", nargs="+", default=None, help="notebook name prefixes to run (e.g. 00 01)")
    w.add_argument("--runs-dir", type=Path, default=None, help="parent of run folders (default: runs/)")
    w.add_argument("--log-output", action="store_true", help="stream cell output to the terminal")
    w.add_argument("--resume", type=Path, metavar="RUN_DIR",
                   help="re-run a failed run folder in place: skip the notebooks that finished ok, "
                        "re-run the failed one and those after it with the same parameters")
    w.set_defaults(func=_cmd_workbook)


def _cmd_run(args) -> int:
    if args.resume is not None:
        return _resume("run", args, notebook=args.notebook, **{"-p": args.parameter, "--runs-dir": args.runs_dir})
    if args.notebook is None:
        raise SunfishError("sunfish run needs a notebook (e.g. notebooks/01_config_and_memory.ipynb) "
                           "or --resume RUN_DIR")
    nb = Path(args.notebook)
    if nb.suffix != ".ipynb":
        raise SunfishError(f"{nb} is not a notebook (.ipynb); e.g. sunfish run notebooks/01_config_and_memory.ipynb")
    params = parse_cli_params(nb, args.parameter)
    return _report("run", lambda: (run_notebooks([nb], {nb.name: params}, runs_parent=args.runs_dir,
                                                 log_output=args.log_output), [nb.name]))


def _cmd_workbook(args) -> int:
    if args.resume is not None:
        return _resume("workbook", args, **{"--smoke": args.smoke, "--only": args.only, "--runs-dir": args.runs_dir})
    notebooks = workbook_notebooks()
    if args.only:
        notebooks = [n for n in notebooks if any(n.name.startswith(o) for o in args.only)]
        if not notebooks:
            raise SunfishError(f"--only {' '.join(args.only)} matches no notebook in notebooks/")
    params = {n.name: {"smoke": True} for n in notebooks} if args.smoke else {}
    return _report("workbook", lambda: (run_notebooks(notebooks, params, name="workbook", runs_parent=args.runs_dir,
                                                      log_output=args.log_output), [n.name for n in notebooks]))


def _resume(command: str, args, **conflicting) -> int:
    """`sunfish run|workbook --resume RUN_DIR`; the folder's run.json and params.json say what runs."""
    given = [flag for flag, value in conflicting.items() if value]
    if given:
        raise SunfishError(f"--resume re-runs {args.resume} with its own notebooks and params.json; "
                           f"drop {given[0] if given[0] != 'notebook' else 'the notebook'}")
    return _report(command, lambda: resume_run(args.resume, log_output=args.log_output), resumed=True)


def _report(command: str, execute, resumed: bool = False) -> int:
    """Run `execute() -> (run folder, notebooks executed)` and say how it went.

    A cell that raised a SunfishError is a user error: its one line, where the executed copy
    is, exit 2. Any other failing cell exits 1. Either way `--resume RUN_DIR` continues.
    """
    try:
        run_dir, executed = execute()
    except NotebookFailed as e:
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
    print(f"run folder: {run_dir}")
    return 0


# -- sunfish data -----------------------------------------------------------------------

def _add_data(sub) -> None:
    p = sub.add_parser("data", help="what the data pipeline yields for a source: documents, tokens, packing, tokens/s")
    p.add_argument("--source", default="shakespeare",
                   help="shakespeare, fineweb[:CONFIG], fineweb-edu[:CONFIG], or a .txt/.jsonl/.parquet path/glob")
    p.add_argument("--tokenizer", default="bpe", help="bpe (offline BPE), an HF tokenizer name, or a folder")
    p.add_argument("--seq-len", type=int, default=256, help="tokens per packed sequence")
    p.add_argument("--max-docs", type=int, default=1000, help="documents to read (0: all)")
    p.add_argument("--text-field", default="text", help="field holding the text in .jsonl/.parquet records")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_data)


def _cmd_data(args) -> int:
    from sunfish_lib.data.summary import summarize_source  # here: the data package imports torch (2.4 s)

    if args.seq_len <= 0 or args.max_docs < 0:
        raise SunfishError("--seq-len must be > 0 and --max-docs >= 0")
    summary = summarize_source(args.source, args.tokenizer, seq_len=args.seq_len, max_docs=args.max_docs or None,
                               text_field=args.text_field)
    if args.json:
        print(json.dumps(summary))
        return 0
    for key, value in summary.items():
        shown = f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else value
        print(f"{key.replace('_', ' '):>30}: {shown}")
    return 0


# -- sunfish estimate -------------------------------------------------------------------

def _add_estimate(sub) -> None:
    p = sub.add_parser("estimate", help="parameters, FLOPs/token, memory per GPU and fits/does-not-fit verdicts")
    p.add_argument("--preset", required=True, help="tiny, 125M, 350M or 1.4B")
    p.add_argument("--objective", help="continuous, masked or ar (default: the preset's)")
    p.add_argument("--gpus", help="GPU memory sizes in GB, comma-separated, e.g. 48,20")
    p.add_argument("--strategy", help="single, ddp or fsdp (default: train.strategy; auto = ddp on several GPUs)")
    p.add_argument("--precision", help="32-true, bf16-mixed, bf16-true or 16-mixed (default: train.precision)")
    p.add_argument("--activation-checkpointing", action="store_true", default=None, help="recompute block activations")
    p.add_argument("--cpu-offload", action="store_true", default=None, help="FSDP: weights, grads, AdamW state in host RAM")
    p.add_argument("--micro-batch", type=int, help="sequences per GPU per forward (default: data.micro_batch_size)")
    p.add_argument("--seq-len", type=int, help="tokens per sequence (default: data.seq_len)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override; repeatable")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_estimate)


def _cmd_estimate(args) -> int:
    cfg = config_for(args.preset, args.objective, parse_set_args(args.set))
    rep = report(cfg, strategy=args.strategy, precision=args.precision, micro_batch=args.micro_batch,
                 seq_len=args.seq_len, activation_checkpointing=args.activation_checkpointing,
                 cpu_offload=args.cpu_offload, gpu_mem_gb=args.gpus)
    adv = advise(cfg, args.gpus, precision=args.precision, micro_batch=args.micro_batch,
                 seq_len=args.seq_len) if args.gpus and not args.strategy else None
    if args.json:
        print(json.dumps({**rep, **({"advice": adv} if adv else {})}))
        return 0
    from rich.console import Console
    from rich.table import Table

    gib = 2**30
    st = rep["settings"]
    t = Table(title=f"sunfish estimate: {rep['preset']} ({rep['objective']}), {rep['params']:,} parameters, "
                    f"{rep['flops_per_token'] / 1e9:.2f} GFLOPs/token at T={st['seq_len']}")
    t.add_column(f"per GPU at the {rep['peak_phase']} peak: {st['strategy']} x{st['n_gpus']}, {st['precision']}, "
                 f"micro-batch {st['micro_batch']}"
                 f"{', ckpt' if st['activation_checkpointing'] else ''}{', offload' if st['cpu_offload'] else ''}")
    t.add_column("GiB", justify="right")
    for k, v in rep["memory"].items():
        t.add_row(k, f"{v / gib:.2f}")
    t.add_row("checkpoint: weights / + AdamW", f"{rep['checkpoint']['weights'] / gib:.2f} / "
              f"{rep['checkpoint']['with_optimizer'] / gib:.2f}")
    for v in rep["verdicts"]:
        bound = " (bounds the run)" if v.get("bounds_run") else ""
        t.add_row(f"{v['gpu_gb']:g} GiB card{bound}: needs {v['needed_gb']} GiB, headroom {v['headroom_gb']:+.2f}",
                  "[green]fits[/]" if v["fits"] else "[red]no[/]")
    console = Console(width=160)
    console.print(t)
    console.print(f"tokens per optimizer step: {rep['tokens_per_step']:,} = micro-batch {st['micro_batch']} x "
                  f"seq {st['seq_len']} x accumulate {st['accumulate']} x {st['n_gpus']} GPUs")
    for line in (adv or {}).get("summary", []):
        console.print(line)
    return 0


# -- entry point -----------------------------------------------------------------------

COMMANDS = [_add_check, _add_run, _add_data, _add_estimate, train_command.add_parser, evaluate_command.add_parser,
            sample_command.add_parser, convert_command.add_parser, runs_command.add_parser, export_command.add_parser,
            harness_command.add_parser]


def _version() -> str:
    """The installed distribution's version (pyproject.toml), or the source tree's when not installed."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sunfish")
    except PackageNotFoundError:
        return "unknown (not installed: pip install -e .)"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sunfish", description="Sunfish: a research workbook for diffusion language models")
    parser.add_argument("--version", action="version", version=f"sunfish {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in COMMANDS:
        add(sub)
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
