"""The `sunfish` subcommands that live in their own module: each has `add_parser(sub)` and `run(args)`.

`sunfish_lib.cli` builds the parser from them. They sit above everything they drive (training,
sampling, evaluation, conversion, the workbook helpers), below only `cli` itself.
"""
