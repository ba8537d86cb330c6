"""The same flags build the same config (issue #31): every training command the README shows, re-run with
`--resume` appended, is accepted by the run it started; and a zero-byte data file is one line, exit 2.

The README's commands are read from README.md and docs/*.md themselves, so a command added there is replayed here too.
The config half runs no training (`config_from_args` + the trainer's `prepare_run`, the check that refused
the replay); one end-to-end case trains the issue's own command for a step and resumes it in-process.
"""

import re
import shlex
from pathlib import Path

import pytest

from sunfish_lib.cli import build_parser, main
from sunfish_lib.commands.train import config_from_args
from sunfish_lib.config import get_config
from sunfish_lib.train.trainer import prepare_run

ROOT = Path(__file__).resolve().parent.parent
ISSUE_COMMAND = "sunfish train --preset tiny --objective masked --max-steps 60 --set seed=3 --set ckpt_every=10"
SHRINK = ["--set", "n_layers=1", "--set", "d_model=32", "--set", "n_heads=2", "--set", "seq_len=16",
          "--set", "micro_batch_size=2", "--set", "val_batches=1", "--set", "sample_every=0", "--set", "val_every=1000"]


def readme_training_commands() -> list[str]:
    """Every `sunfish train ...` the README and its docs/ pages show that starts a run (not --resume, not
    --fast-dev-run)."""
    text = "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    found = [m.group(1).strip() for m in re.finditer(r"sunfish train ([^`#\n]*)", text)]
    return sorted({f"sunfish train {c}" for c in found if "--resume" not in c and "--fast-dev-run" not in c})


def _argv(command: str, run_dir: Path, config_file: Path) -> list[str]:
    """The command's argv after `sunfish`, with its --run-dir and --config pointed into the test's folder."""
    argv = shlex.split(command)[1:]
    for flag, value in (("--run-dir", run_dir), ("--config", config_file)):
        if flag in argv:
            argv[argv.index(flag) + 1] = str(value)
    return argv


def test_readme_has_the_training_commands():
    commands = readme_training_commands()
    assert len(commands) >= 6, commands
    assert any("--config" in c for c in commands) and any("--overfit-batches" in c for c in commands)


@pytest.mark.parametrize("command", readme_training_commands() + [ISSUE_COMMAND])
def test_readme_command_with_resume_appended_is_accepted(command, tmp_path):
    config_file = tmp_path / "parent-config.json"  # a converted run's config: a long warmup the short-run rule caps
    get_config("tiny").override({"train.warmup_steps": 500, "train.max_steps": 5000}).save(config_file)
    run_dir = tmp_path / "run"
    argv = _argv(command, run_dir, config_file)
    if "--run-dir" not in argv:
        argv += ["--run-dir", str(run_dir)]
    parser = build_parser()
    first = config_from_args(parser.parse_args(argv))
    run_dir.mkdir()
    saved = prepare_run(first, run_dir, resume=False)  # writes config.json as the first run does
    again = config_from_args(parser.parse_args(argv + ["--resume"]), saved=type(first).load(run_dir / "config.json"))
    assert prepare_run(again, run_dir, resume=True).to_dict() == saved.to_dict()
    assert again.train.warmup_steps == first.train.warmup_steps


def test_the_short_run_rule_reached_both_configs(tmp_path):
    """The issue's case in numbers: tiny (warmup 50) cut to 60 steps warms up for 6, started and resumed alike."""
    argv = _argv(ISSUE_COMMAND, tmp_path, tmp_path)
    parser = build_parser()
    first = config_from_args(parser.parse_args(argv))
    assert (first.train.max_steps, first.train.warmup_steps) == (60, 6)
    resumed = config_from_args(parser.parse_args(argv + ["--run-dir", str(tmp_path), "--resume"]), saved=first)
    assert (resumed.train.max_steps, resumed.train.warmup_steps) == (60, 6)
    alone = config_from_args(parser.parse_args(["train", "--resume", str(tmp_path)]), saved=first)  # the documented form
    assert alone.to_dict() == first.to_dict()
    longer = config_from_args(parser.parse_args(["train", "--resume", str(tmp_path), "--max-steps", "600"]), saved=first)
    assert (longer.train.max_steps, longer.train.warmup_steps) == (600, 6)  # extending keeps the saved warmup


@pytest.mark.slow
def test_issue_command_trains_then_resumes_end_to_end(tmp_path, capsys):
    run_dir = tmp_path / "R"
    argv = shlex.split(ISSUE_COMMAND)[1:] + SHRINK + ["--run-dir", str(run_dir), "--no-progress"]
    assert main(argv + ["--stop-at-step", "1"]) == 0, capsys.readouterr().err
    assert main(argv + ["--stop-at-step", "2", "--resume"]) == 0, capsys.readouterr().err
    assert "trained to step 2" in capsys.readouterr().out


@pytest.mark.parametrize("content,suffix", [(b"", ".jsonl"), (b"", ".json"), (b"  \n\n\t\n", ".jsonl"),
                                            (b"", ".parquet"), (b"", ".txt"), (b" \n\t", ".txt")])
def test_empty_data_file_is_one_line_exit_2(content, suffix, tmp_path, capsys):
    data = tmp_path / f"empty{suffix}"
    data.write_bytes(content)
    code = main(["train", "--preset", "smoke", "--data", str(data), "--run-dir", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert str(data) in err and "empty or whitespace only" in err, err
    assert not (tmp_path / "run").exists(), "refused before a run folder exists"
    assert main(["data", "--source", str(data)]) == 2
    assert capsys.readouterr().err.count("\n") == 1
