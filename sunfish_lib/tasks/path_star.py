"""Path-star graphs (Bachmann & Nagarajan 2024, "The Pitfalls of Next-Token Prediction", arXiv 2403.06963).

A start node with `degree` arms, each a path of `path_length` nodes counting the start (so `path_length - 1`
nodes past it); node labels are distinct random draws from `n_labels`. The prompt is the shuffled edge list,
then the start and the goal (the last node of one arm); the answer is the path from start to goal.
Teacher-forced next-token prediction learns the "Clever Hans" shortcut: once on the path, each next node is
the one edge out of the previous, so it never learns the first step and solves ~1/degree of the graphs;
trained on the reversed path (goal back to start, every step the unique parent) it solves them all
(Bachmann Sec. 4; MLM-U 100%: Kitouni et al. 2024, Fig. 5a). Scored by exact match (the path is unique).
Row text: "a b | c d | ... / s g =" -> "s x1 x2 ... g"; `reverse=True` writes the path goal first
(the AR-on-reversed-targets control; its scorer reads the path back).
"""

from __future__ import annotations

import random

from sunfish_lib.errors import SunfishError

DEFAULTS = {"n_train": 4000, "n_test": 200, "degree": 2, "path_length": 5, "n_labels": 50}


def words(n_labels: int = DEFAULTS["n_labels"], **_) -> list[str]:
    return ["|", "/", "="] + [str(i) for i in range(n_labels)]


def graph(rng: random.Random, degree: int, path_length: int, n_labels: int) -> tuple[list[tuple[int, int]], list[int]]:
    """(edges in shuffled order, the start-to-goal path) of one path-star graph."""
    nodes = rng.sample(range(n_labels), 1 + degree * (path_length - 1))
    start, rest = nodes[0], nodes[1:]
    arms = [[start] + rest[a * (path_length - 1):(a + 1) * (path_length - 1)] for a in range(degree)]
    edges = [(arm[i], arm[i + 1]) for arm in arms for i in range(path_length - 1)]
    rng.shuffle(edges)
    return edges, arms[rng.randrange(degree)]


def row(edges, path, reverse: bool = False) -> dict:
    prompt = " | ".join(f"{a} {b}" for a, b in edges) + f" / {path[0]} {path[-1]} ="
    shown = path[::-1] if reverse else path
    return {"prompt": prompt, "completion": " ".join(map(str, shown)), **({"reversed": True} if reverse else {})}


def make(seed: int = 0, n_train: int = DEFAULTS["n_train"], n_test: int = DEFAULTS["n_test"],
         degree: int = DEFAULTS["degree"], path_length: int = DEFAULTS["path_length"],
         n_labels: int = DEFAULTS["n_labels"], reverse: bool = False) -> dict[str, list[dict]]:
    """{"train", "test"} rows; `reverse` writes every path goal-first (test rows too: the model's own form)."""
    if degree < 2 or path_length < 2:
        raise SunfishError(f"path_star: degree={degree} and path_length={path_length} must both be >= 2")
    if 1 + degree * (path_length - 1) > n_labels:
        raise SunfishError(f"path_star: {1 + degree * (path_length - 1)} nodes need n_labels >= that; "
                           f"got n_labels={n_labels}")
    rng = random.Random(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        out[split] = [{**row(*graph(rng, degree, path_length, n_labels), reverse=reverse), "direction": "path"}
                      for _ in range(n)]
    return out


def score(r: dict, generated: str) -> bool:
    """Exact match of the path (a reversed row's answer is compared as written, goal first)."""
    return generated.split() == r["completion"].split()
