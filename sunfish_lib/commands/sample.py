"""`sunfish sample RUN_DIR_OR_CHECKPOINT`: generate from a run folder, an exported model or a .ckpt.

Unset options keep the checkpoint's own `sample` settings (its config.json), exactly as
the notebook panel does, so `--seed S` here and seed S in the panel give the same samples.
Given a run folder (or a checkpoint inside one), the samples are also saved there as
`samples/sample-<timestamp>.json` and `.txt`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from safetensors import SafetensorError

from sunfish_lib.errors import SunfishError
from sunfish_lib.config import DEVICE_HELP, DTYPE_NAMES
from sunfish_lib.sampling.settings import APPLIES, CHOICES, SETTINGS, applies, defaults, field_docs


def add_parser(sub) -> None:
    p = sub.add_parser("sample", help="generate text from a run folder, an exported model folder or a .ckpt")
    p.add_argument("checkpoint", help="run folder, exported model folder (model.safetensors) or Lightning .ckpt")
    p.add_argument("--mode", choices=("uncond", "infill"), default="uncond",
                   help="uncond: `length` new tokens after the prompt; infill: fill the prompt's [MASK] spans")
    p.add_argument("--prompt", default="", help='text; in infill mode with [MASK], e.g. "AI will [MASK] in the next decade."')
    p.add_argument("--prompts", type=Path, help="a file of prompts, one per line (or JSONL: a string or "
                   "{\"prompt\": ...} per line; \\n in a plain line is a newline): num-samples rows for each, in one batch")
    add_setting_flags(p)
    p.add_argument("--device", help=DEVICE_HELP)
    p.add_argument("--dtype", choices=DTYPE_NAMES, help="weights' dtype (default float32)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--trajectory", type=Path, help="record the denoising trajectory into this .safetensors file")
    p.add_argument("--json", action="store_true", help="print one JSON object (texts, ids, settings, quality, files)")
    p.add_argument("--judge", help="causal model that scores the samples (judge perplexity): an ar run folder, its "
                                   "export/ or a Hugging Face causal-LM folder (default: the ar model of the "
                                   "workbook run folder the checkpoint is in, if any)")
    p.add_argument("--no-quality", dest="quality", action="store_false",
                   help="skip the quality figures (entropy, distinct-n, judge perplexity)")
    p.add_argument("--no-save", action="store_true", help="do not write samples/ into the run folder")
    bar = p.add_mutually_exclusive_group()
    bar.add_argument("--progress", dest="progress", action="store_true", default=None,
                     help="progress bar on stderr (default: when stderr is a terminal)")
    bar.add_argument("--no-progress", dest="progress", action="store_false")
    p.set_defaults(func=run)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _boolean(name: str):
    def parse(text: str) -> bool:
        low = str(text).strip().lower()
        if low in ("true", "1", "yes", "on"):
            return True
        if low in ("false", "0", "no", "off"):
            return False
        raise argparse.ArgumentTypeError(f"{_flag(name)} takes true or false, not {text!r}")
    return parse


def add_setting_flags(p) -> None:
    """One flag per SampleConfig field (`sampling.settings`): typed by its default, help from its docstring,
    the objectives it acts on in brackets. Unset: the checkpoint's own value."""
    docs = field_docs()
    for name, default in defaults().items():
        where = f" [{', '.join(APPLIES[name])}]" if name in APPLIES else ""
        help_text = f"{docs.get(name, '')}{where}".replace("%", "%%")
        if isinstance(default, bool):
            p.add_argument(_flag(name), dest=name, nargs="?", const=True, default=None, type=_boolean(name),
                           metavar="true|false", help=help_text)
        else:
            p.add_argument(_flag(name), dest=name, type=type(default), default=None, choices=CHOICES.get(name),
                           help=help_text)


def settings_from_args(args) -> dict:
    """The sampling settings given on the command line (None: the checkpoint's own)."""
    return {name: getattr(args, name) for name in SETTINGS}


def read_prompts(path: Path) -> list[str]:
    """Prompts from a file: one per line, or JSONL (each line a JSON string or an object with "prompt")."""
    try:
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise SunfishError(f"--prompts {path}: cannot read it ({e}); give a UTF-8 text file, one prompt per line") \
            from None
    if not lines:
        raise SunfishError(f"--prompts {path} holds no prompt; write one prompt per line")
    out = []
    for i, line in enumerate(lines, 1):
        if path.suffix == ".jsonl" or line.lstrip().startswith(("{", '"')):
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise SunfishError(f"--prompts {path} line {i} is not valid JSON ({e.msg}); "
                                   'write "text" or {"prompt": "text"} per line') from None
            item = item.get("prompt") if isinstance(item, dict) else item
            if not isinstance(item, str):
                raise SunfishError(f'--prompts {path} line {i} has no "prompt" string; write {{"prompt": "text"}}')
            out.append(item)
        else:
            out.append(line.replace("\\n", "\n"))
    return out


def inapplicable(settings: dict, objective: str, mode: str) -> list[str]:
    """The flags given that do not act on this checkpoint's objective or the mode."""
    return [_flag(k) for k, v in settings.items() if v is not None and not applies(k, objective, mode)]


class ProgressBar:
    """A rich progress bar driven by the samplers' `callback(step, total, x)`; starts on the first step."""

    def __init__(self, description: str, enabled: bool):
        self.description, self.enabled = description, enabled
        self.progress = self.task = None
        self.last = (0, 0)

    def __call__(self, step: int, total: int, x) -> None:
        self.last = (step, total)
        if not self.enabled:
            return
        if self.progress is None:
            self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                     TimeElapsedColumn(), console=Console(stderr=True), transient=False)
            self.progress.start()
            self.task = self.progress.add_task(self.description, total=total)
        self.progress.update(self.task, completed=step, total=total)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _writable_folder(folder: Path, flag: str) -> None:
    """Create `folder` and prove a file can be written there (one line naming `flag` otherwise)."""
    probe = folder / f".sunfish-write-test-{os.getpid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise SunfishError(f"{flag}: cannot write into {folder} ({e.strerror}); pick a writable path") from None


def run(args) -> int:
    # lazy: torch and Lightning are behind these; `sunfish --help` and `runs` must not import them
    from sunfish_lib.notebook.display import SamplesView
    from sunfish_lib.eval.quality import quality_of
    from sunfish_lib.sampling.session import load_checkpoint, sample, sample_record, save_samples

    if args.trajectory is not None and args.trajectory.suffix != ".safetensors":
        raise SunfishError(f"--trajectory {args.trajectory} must end in .safetensors (e.g. trajectory.safetensors)")
    if args.trajectory is not None:  # before sampling, not after it
        _writable_folder(args.trajectory.parent, "--trajectory")
    if args.prompts is not None and args.prompt:
        raise SunfishError("--prompt and --prompts both given; use one (--prompts FILE: one prompt per line)")
    prompts = read_prompts(args.prompts) if args.prompts is not None else None
    loaded = load_checkpoint(args.checkpoint, device=args.device, dtype=args.dtype)
    settings = settings_from_args(args)
    enabled = sys.stderr.isatty() if args.progress is None else args.progress
    bar = ProgressBar(f"sampling ({loaded.objective})", enabled)
    t0 = time.perf_counter()
    try:
        gen = sample(loaded, mode=args.mode, prompt=args.prompt, prompts=prompts, seed=args.seed,
                     record=args.trajectory is not None, callback=bar, **settings)
    finally:
        bar.close()
    ignored = inapplicable(settings, loaded.objective, args.mode)
    if ignored:  # said once the settings have passed sampling's checks: a refused call prints its one line only
        verb = "does" if len(ignored) == 1 else "do"
        print(f"note: {', '.join(ignored)} {verb} not act on a {loaded.objective} checkpoint in {args.mode} mode; "
              "ignored", file=sys.stderr)
    record = sample_record(loaded, gen, mode=args.mode, prompt=args.prompt, seed=args.seed,
                           seconds=time.perf_counter() - t0)
    if args.quality and gen.lengths is None:
        record["quality"] = quality_of(gen, loaded, judge=args.judge)
    files = []
    if args.trajectory is not None:
        try:
            files.append(gen.trajectory.save(args.trajectory))
        except (OSError, SafetensorError) as e:
            raise SunfishError(f"cannot write --trajectory {args.trajectory} ({e}); pick a writable path") from None
    run_dir = loaded.run_dir
    if run_dir is not None and not args.no_save:
        files += list(save_samples(run_dir / "samples", record))
    if args.json:
        print(json.dumps({**record, "files": [str(f) for f in files]}))
        return 0
    print(SamplesView.of(gen, loaded.tokenizer, record.get("quality")).text(color=sys.stdout.isatty()))
    s = record["settings"]
    print(f"\n{loaded.objective} / {s['sampler']}, {s['steps']} steps, seed {args.seed}: "
          f"{gen.forward_passes} forward passes in {record['seconds']:.2f} s")
    for f in files:
        print(f"saved {f}")
    return 0
