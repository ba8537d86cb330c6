"""Synthetic tasks: deterministic generators, their structure (after the papers), rule scorers, the CLI."""

import json
import random
import subprocess
import sys

import pytest

from sunfish_lib.errors import SunfishError
from sunfish_lib.tasks import TASKS, accuracy, load_task, make_task
from sunfish_lib.tasks import countdown, path_star, reversal, sudoku
from sunfish_lib.tasks.vocab import load_task_tokenizer


@pytest.mark.parametrize("name", list(TASKS))
def test_same_seed_same_rows_other_seed_other_rows(name):
    small = {"reversal": {"n_facts": 30}}.get(name, {"n_train": 20, "n_test": 5})
    a, b, c = (TASKS[name].make(seed=s, **small) for s in (1, 1, 2))
    assert a == b and a != c
    assert all(r["completion"].strip() for split in a.values() for r in split)
    assert all(TASKS[name].score(r, r["completion"]) for r in a["test"])  # the reference answer scores


def test_reversal_facts_disjoint_pools_and_held_out_pairs_asked_backwards():
    rows = reversal.make(seed=0, n_facts=50, key_tokens=2, value_tokens=3, pool=20, qa_share=0.8)
    statements = [r["completion"].split() for r in rows["train"] if r["kind"] == "statement"]
    assert len(statements) == 50  # every fact as a statement
    keys = {w for s in statements for w in s[:2]}
    values = {w for s in statements for w in s[3:]}
    assert all(w.startswith("k") for w in keys) and all(w.startswith("v") for w in values) and not keys & values
    qa_keys = {r["completion"] for r in rows["train"] if r["kind"] == "backward"}
    test_back = [r for r in rows["test"] if r["direction"] == "backward"]
    assert len(qa_keys) == 40 and len(test_back) == 10
    assert not {r["completion"] for r in test_back} & qa_keys  # held-out pairs never asked in training
    r = test_back[0]
    span = r["infill"]["text"].split()[r["infill"]["start"]: r["infill"]["start"] + r["infill"]["length"]]
    assert span == r["completion"].split() and r["prompt"].startswith("bwd ")


def test_path_star_is_a_star_and_the_answer_is_its_path():
    rng = random.Random(0)
    edges, path = path_star.graph(rng, degree=3, path_length=4, n_labels=30)
    assert len(edges) == 3 * 3 and len(path) == 4
    out = {}
    for a, b in edges:
        out.setdefault(a, []).append(b)
    assert len(out[path[0]]) == 3  # the start has `degree` arms
    assert all(b in out.get(a, []) for a, b in zip(path, path[1:]))  # the answer follows edges
    row = path_star.row(edges, path, reverse=True)
    assert row["completion"].split() == [str(n) for n in path[::-1]]
    assert row["prompt"].endswith(f"/ {path[0]} {path[-1]} =")


@pytest.mark.parametrize("size", [4, 9])
def test_sudoku_grids_are_valid_and_the_scorer_reads_the_rules(size):
    rows = sudoku.make(seed=0, n_train=3, n_test=3, size=size, givens=(size * size - 3, size * size - 3))
    r = rows["test"][0]
    cells = r["completion"].split()
    assert sudoku.valid_solution([int(c) for c in cells], size)
    assert r["prompt"].split().count("_") == 3
    bad = cells.copy()
    bad[0], bad[1] = bad[1], bad[0]  # breaks two columns
    assert not sudoku.score(r, " ".join(bad))
    # a different valid grid is right when it keeps the givens: an empty puzzle accepts any valid grid
    empty = {"prompt": " ".join(["_"] * size * size) + " =", "completion": r["completion"]}
    other = sudoku.make(seed=5, n_train=1, n_test=1, size=size)["test"][0]["completion"]
    assert other != r["completion"] and sudoku.score(empty, other)
    assert not sudoku.score(r, other)  # ... but not when it breaks the givens


def test_countdown_scorer_accepts_any_correct_derivation():
    row = {"prompt": "3 4 5 -> 17 =", "completion": "3 * 4 = 12 , 12 + 5 = 17"}
    assert countdown.score(row, "4 * 3 = 12 , 12 + 5 = 17")  # another order, still right
    assert not countdown.score(row, "3 * 4 = 12 , 12 + 5 = 18")  # wrong target
    assert not countdown.score(row, "3 * 4 = 13 , 13 + 4 = 17")  # wrong arithmetic and a number reused
    assert not countdown.score(row, "3 * 3 = 9 , 9 + 8 = 17")  # numbers not the given ones


def test_accuracy_and_its_standard_error():
    p, se = accuracy([True, True, False, False])
    assert p == 0.5 and se == pytest.approx(0.25)


def test_make_task_writes_jsonl_and_a_tokenizer_that_encodes_every_row(tmp_path):
    meta = make_task("path_star", tmp_path, seed=3, n_train=10, n_test=4, degree=2, path_length=4)
    assert meta["rows"] == {"train": 10, "test": 4}
    meta2, test, mod = load_task(tmp_path)
    assert meta2 == meta and mod is path_star and len(test) == 4
    tok = load_task_tokenizer(tmp_path / "tokenizer")
    unk = tok.backend.token_to_id("[UNK]")
    for line in (tmp_path / "train.jsonl").read_text().splitlines():
        r = json.loads(line)
        ids = tok.encode(r["prompt"] + " " + r["completion"])
        assert unk not in ids and tok.decode(ids) == r["prompt"] + " " + r["completion"]
    with pytest.raises(SunfishError, match="unknown parameter 'degre'"):
        make_task("path_star", tmp_path / "x", degre=3)


def test_cli_tasks_make_and_bad_name_exit_2(tmp_path):
    ok = subprocess.run([sys.executable, "-m", "sunfish_lib.cli", "tasks", "make", "sudoku", "--out", str(tmp_path),
                         "--set", "n_train=5", "--set", "n_test=2", "--set", "givens=[8,10]"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout.strip().splitlines()[-1])["rows"] == {"train": 5, "test": 2}
    bad = subprocess.run([sys.executable, "-m", "sunfish_lib.cli", "tasks", "make", "sudoku", "--out", str(tmp_path),
                          "--set", "size=5"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "size=5" in bad.stderr
