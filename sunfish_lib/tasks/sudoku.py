"""Sudoku, 4x4 and 9x9 (Ye et al. ICLR 2025, "Beyond Autoregression", HKUNLP/diffusion-vs-ar; Kim et al.
ICML 2025, arXiv 2502.06768, margin decoding on hard puzzles).

A solved grid is the base pattern (r, c) -> (b (r mod b) + r div b + c) mod n, relabelled and shuffled
within the symmetry group (digit permutation, rows within bands, bands, columns within stacks, stacks,
transpose); `givens` cells (a range, drawn per puzzle) stay, the rest become "_". Prompt: the n^2 cells
row by row; completion: the n^2 digits. Scored by the rules (every row, column and box a permutation,
every given kept), not by string match: a puzzle with several solutions accepts each of them.
"""

from __future__ import annotations

import math
import random

from sunfish_lib.errors import SunfishError

DEFAULTS = {"n_train": 4000, "n_test": 200, "size": 4, "givens": (6, 10)}


def words(size: int = DEFAULTS["size"], **_) -> list[str]:
    return ["_", "="] + [str(d) for d in range(1, size + 1)]


def solved_grid(rng: random.Random, size: int) -> list[list[int]]:
    """A uniformly shuffled member of the base pattern's symmetry class, digits 1..size."""
    b = math.isqrt(size)
    digits = rng.sample(range(1, size + 1), size)
    bands = [band * b + r for band in rng.sample(range(b), b) for r in rng.sample(range(b), b)]
    stacks = [st * b + c for st in rng.sample(range(b), b) for c in rng.sample(range(b), b)]
    grid = [[digits[(b * (r % b) + r // b + c) % size] for c in stacks] for r in bands]
    return [list(col) for col in zip(*grid)] if rng.random() < 0.5 else grid


def valid_solution(cells: list[int], size: int) -> bool:
    """Every row, column and box holds 1..size once."""
    if len(cells) != size * size:
        return False
    b, want = math.isqrt(size), set(range(1, size + 1))
    rows = [cells[r * size:(r + 1) * size] for r in range(size)]
    cols = [cells[c::size] for c in range(size)]
    boxes = [[cells[(br * b + i) * size + bc * b + j] for i in range(b) for j in range(b)]
             for br in range(b) for bc in range(b)]
    return all(set(g) == want for g in rows + cols + boxes)


def make(seed: int = 0, n_train: int = DEFAULTS["n_train"], n_test: int = DEFAULTS["n_test"],
         size: int = DEFAULTS["size"], givens=DEFAULTS["givens"]) -> dict[str, list[dict]]:
    if size not in (4, 9):
        raise SunfishError(f"sudoku: size={size}; choose 4 or 9")
    lo, hi = (givens, givens) if isinstance(givens, int) else tuple(givens)
    if not 0 <= lo <= hi <= size * size:
        raise SunfishError(f"sudoku: givens={givens} must be a range within 0..{size * size}")
    rng = random.Random(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        rows = []
        for _ in range(n):
            cells = [d for r in solved_grid(rng, size) for d in r]
            keep = set(rng.sample(range(size * size), rng.randint(lo, hi)))
            puzzle = " ".join(str(d) if i in keep else "_" for i, d in enumerate(cells))
            rows.append({"prompt": puzzle + " =", "completion": " ".join(map(str, cells)), "direction": "solve"})
        out[split] = rows
    return out


def score(row: dict, generated: str) -> bool:
    """The rules: a valid grid that keeps every given."""
    size = math.isqrt(len(row["completion"].split()))
    try:
        cells = [int(w) for w in generated.split()]
    except ValueError:
        return False
    given = row["prompt"].split()[:-1]
    return valid_solution(cells, size) and all(g == "_" or int(g) == c for g, c in zip(given, cells))
