"""The one oracle every fuzzed input surface is judged by (issue #31), and the fuzz lane's report.

`call(surface, argv, sandbox)` runs `sunfish ARGV` in-process (a subprocess per input would cost the torch
import, seconds) and returns what went wrong, if anything:

- the exit code is 0 (success) or 2 (a user mistake); never 1, never another code, never a traceback;
- an exit 2 prints exactly one line on stderr, `error: ...`, naming the problem and (after `;` or a verb
  such as "give", "use", "pick") what to do;
- it ends within `timeout` seconds (`data_fixtures.deadline`: SIGALRM also interrupts a blocking read, e.g. of a FIFO);
- no file under `sandbox` outside the run folder it was given changed or vanished (hashes before/after).

Counts: `tried[surface]` inputs, `failures[surface]` the (argv, problems) that broke a rule. The lane
(`bash scripts/test.sh -m fuzz`) sets SUNFISH_FUZZ_LANE=1 (tests/conftest.py) for the larger example counts and
prints the report; the default suite runs a few seeded (derandomized) examples per property.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import stat
import time
import traceback
from collections import Counter
from pathlib import Path

from hypothesis import HealthCheck, settings

from sunfish_lib.cli import main
from tests.data_fixtures import deadline

tried: Counter = Counter()
failures: dict[str, list] = {}
seconds: Counter = Counter()

def in_lane() -> bool:
    return os.environ.get("SUNFISH_FUZZ_LANE") == "1"


def examples(default: int, lane: int):
    """Hypothesis settings: `default` seeded (derandomized) examples in every test run, `lane` random ones in the
    fuzz lane; no deadline per example (the oracle bounds each call), no example database."""
    return settings(max_examples=lane if in_lane() else default, derandomize=not in_lane(), deadline=None,
                    database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large, HealthCheck.filter_too_much,
                                           HealthCheck.large_base_example])


def tree_hashes(root: Path, skip: Path | None = None) -> dict[str, str]:
    """path -> sha256 of every regular file under root (FIFOs and other specials by their kind), minus `skip`."""
    out = {}
    skip_s = str(skip.resolve()) if skip is not None else None
    for dirpath, dirnames, filenames in os.walk(root):
        if skip_s and (dirpath == skip_s or dirpath.startswith(skip_s + os.sep)):
            dirnames[:] = []
            continue
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            p = os.path.join(dirpath, name)
            if skip_s and p == skip_s:
                continue
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    out[p] = hashlib.sha256(f.read()).hexdigest()
            else:
                out[p] = f"mode {stat.S_IFMT(st.st_mode):o}"
    return out


FIX_WORDS = (";", " give ", " use ", " pick ", " choose ", " set ", " pass ", " check ", " drop ", " fix ",
             " write ", " add ", " remove ", " convert ", " must ", " needs ", " expected ", " see ", " allowed",
             " try ", " rerun ", " run ", " point ", " start ", " install ", " free ", " shorten ", " e.g.",
             " are: ", " one of ", " put ")


def verdict(code, out: str, err: str) -> list[str]:
    """What the oracle objects to in one finished call (empty: fine)."""
    problems = []
    if "Traceback (most recent call last)" in err or "Traceback (most recent call last)" in out:
        problems.append("traceback printed")
    if code not in (0, 2):
        problems.append(f"exit code {code}")
    if code == 2:
        lines = err.strip("\n").splitlines()
        if len(lines) != 1:
            problems.append(f"exit 2 with {len(lines)} lines on stderr: {err[:300]!r}")
        elif not lines[0].startswith("error: "):
            problems.append(f"exit 2 line does not start with 'error: ': {lines[0][:200]!r}")
        elif not any(w in lines[0] for w in FIX_WORDS):
            problems.append(f"exit 2 line names no fix: {lines[0][:200]!r}")
    return problems


def call(surface: str, argv: list[str], sandbox: Path, *, run_dir: Path | None = None, timeout: float = 60.0,
         ok_codes=(0, 2)) -> tuple[int | None, str, str]:
    """Run `sunfish ARGV` in-process under the oracle; record it under `surface`; raise AssertionError on a breach."""
    before = tree_hashes(sandbox, run_dir)
    out, err = io.StringIO(), io.StringIO()
    t0 = time.perf_counter()
    problems: list[str] = []
    code = None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), deadline(timeout):
            code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse --help/--version; main itself returns codes
        code = e.code if isinstance(e.code, int) else 1
    except TimeoutError as e:
        problems.append(f"hang: {e}" if "a hang?" in str(e) else f"uncaught TimeoutError: {e}")
    except BaseException as e:  # noqa: BLE001 — anything escaping main() is a traceback for the user
        problems.append(f"uncaught {type(e).__name__}: {str(e)[:300]} at "
                        f"{traceback.extract_tb(e.__traceback__)[-1].filename.split('sunfish_lib')[-1]}:"
                        f"{traceback.extract_tb(e.__traceback__)[-1].lineno}")
    seconds[surface] += time.perf_counter() - t0
    if code is not None:
        problems += verdict(code, out.getvalue(), err.getvalue())
        if code not in ok_codes and not any(p.startswith("exit code") for p in problems):
            problems.append(f"exit code {code} (expected one of {ok_codes})")
    after = tree_hashes(sandbox, run_dir)
    changed = sorted(p for p in before if after.get(p) != before[p])
    if changed:
        problems.append(f"changed or deleted outside the run folder: {changed[:3]}")
    tried[surface] += 1
    if problems:
        failures.setdefault(surface, []).append({"argv": [str(a) for a in argv], "problems": problems})
        if os.environ.get("SUNFISH_FUZZ_LOG"):  # as they happen: a long lane shows its finds before it ends
            with open(os.environ["SUNFISH_FUZZ_LOG"], "a") as f:
                f.write(json.dumps({"surface": surface, **failures[surface][-1]}) + "\n")
        raise AssertionError(f"sunfish {' '.join(map(str, argv))[:400]}: {'; '.join(problems)}")
    return code, out.getvalue(), err.getvalue()


def report() -> dict:
    """Inputs tried and failures per surface (the lane prints it and writes it as JSON)."""
    surfaces = sorted(set(tried) | set(failures))
    return {"total_inputs": sum(tried.values()),
            "total_failures": sum(len(v) for v in failures.values()),
            "surfaces": {s: {"inputs": tried[s], "failures": len(failures.get(s, [])),
                             "seconds": round(seconds[s], 1)} for s in surfaces},
            "failures": failures}


def write_report(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report(), indent=1, default=str))
