"""The `sunfish` subcommands, one module each, all of one shape: `add_parser(sub)` and `run(args)`.

`sunfish_lib.cli` builds the parser from them (its COMMANDS list); `run` and `workbook` share
`notebook_runs` (resume a run folder, report how it went). They sit above everything they drive (training,
sampling, evaluation, conversion, the workbook helpers), below only `cli` itself.

Their imports of what they drive (torch, Lightning, transformers behind them) sit inside `run(args)` under a
`# lazy:` comment, the one measured exception to imports at the top: `cli` imports every command module to
build its parser, and `sunfish --help`, `--version` and `sunfish runs` must not pay for torch (2.4 s to
import) or Lightning (6.6 s): tests/test_cli.py checks that building the parser imports neither. Light
imports (config, rich, the registry, the notebook runner) sit at the top; `--help` takes about 0.2 s.
"""
