"""Countdown with 3 numbers (Gandhi et al. 2024, "Stream of Search", arXiv 2404.03683; the Countdown
planning benchmark of Ye et al. ICLR 2025, "Beyond Autoregression", HKUNLP/diffusion-vs-ar).

Three numbers in 1..`max_number` and a target; reach the target with + - * using each number once.
Prompt "a b c -> t ="; completion "a op b = r , r op c = t" (two equations, results non-negative and
at most `max_value`). Scored by the rules (the arithmetic holds, each number used once, the last result
is the target): any correct derivation counts, not just the generator's.
"""

from __future__ import annotations

import random
from collections import Counter

from sunfish_lib.errors import SunfishError

DEFAULTS = {"n_train": 4000, "n_test": 200, "max_number": 20, "max_target": 100}
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def max_value(max_number: int = DEFAULTS["max_number"]) -> int:
    return max_number * max_number


def words(max_number: int = DEFAULTS["max_number"], **_) -> list[str]:
    return ["->", "=", ",", *OPS] + [str(i) for i in range(max_value(max_number) + 1)]


def _derivation(rng: random.Random, max_number: int, max_target: int):
    """(numbers, target, completion) or None when the draw misses the target range."""
    nums = [rng.randint(1, max_number) for _ in range(3)]
    a, b, c = nums
    op1, op2 = rng.choice(list(OPS)), rng.choice(list(OPS))
    if op1 == "-" and a < b:
        a, b = b, a
    r = OPS[op1](a, b)
    if op2 == "-" and r < c:
        return None
    t = OPS[op2](r, c)
    if not 1 <= t <= max_target or r > max_value(max_number):
        return None
    return nums, t, f"{a} {op1} {b} = {r} , {r} {op2} {c} = {t}"


def make(seed: int = 0, n_train: int = DEFAULTS["n_train"], n_test: int = DEFAULTS["n_test"],
         max_number: int = DEFAULTS["max_number"], max_target: int = DEFAULTS["max_target"]) -> dict[str, list[dict]]:
    if max_number < 2 or max_target < 1:
        raise SunfishError(f"countdown: max_number={max_number} must be >= 2 and max_target={max_target} >= 1")
    rng = random.Random(seed)
    out, seen = {}, set()
    for split, n in (("train", n_train), ("test", n_test)):
        rows = []
        while len(rows) < n:
            d = _derivation(rng, max_number, max_target)
            if d is None:
                continue
            nums, t, completion = d
            key = (tuple(sorted(nums)), t)
            if key in seen:  # test puzzles never appear in training
                continue
            seen.add(key)
            shown = rng.sample(nums, 3)
            rows.append({"prompt": f"{' '.join(map(str, shown))} -> {t} =", "completion": completion,
                         "direction": "solve"})
        out[split] = rows
    return out


def score(row: dict, generated: str) -> bool:
    """Both equations hold, the three numbers are used once each, the last result is the target."""
    head = row["prompt"].split()
    nums, target = Counter(head[:3]), head[4]
    eqs = [e.split() for e in generated.split(",")]
    if len(eqs) != 2 or any(len(e) != 5 or e[1] not in OPS or e[3] != "=" for e in eqs):
        return False
    try:
        vals = [[int(e[0]), int(e[2]), int(e[4])] for e in eqs]
    except ValueError:
        return False
    if any(OPS[e[1]](a, b) != r or r < 0 for e, (a, b, r) in zip(eqs, vals)):
        return False
    used = Counter([eqs[0][0], eqs[0][2], eqs[1][2]])
    return eqs[1][0] == eqs[0][4] and used == nums and eqs[1][4] == target
