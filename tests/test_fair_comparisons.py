"""What is within noise: ties under 2 combined SE, the unigram plateau, comparisons at several budgets."""

import pytest

from sunfish_lib.errors import SunfishError
from sunfish_lib.eval.compare import (best_and_ties, budget_comparison, budget_lines, evaluate_budgets, left_plateau,
                                      within_noise)
from sunfish_lib.runs.discovery import step_checkpoints


def est(nats, se):
    return {"nats_per_token": nats, "stderr": se}


def test_ties_are_differences_under_two_combined_standard_errors():
    # the LR ratios: 0.07 apart with SEs of 0.03 each -> 2 * sqrt(2) * 0.03 = 0.085: a tie
    assert within_noise(est(4.90, 0.03), est(4.97, 0.03))
    assert not within_noise(est(4.90, 0.03), est(5.00, 0.03))  # 0.10 > 0.085
    assert best_and_ties({"r1": est(4.97, 0.03), "r4": est(4.90, 0.03), "scratch": est(5.88, 0.02)}) == ("r4", ["r1"])
    assert best_and_ties({}) == (None, [])


def test_the_unigram_plateau():
    # the scratch baseline: ELBO 5.882 against the unigram model's 5.847: still on it
    assert not left_plateau(est(5.882, 0.02), 5.847)
    assert not left_plateau(est(5.83, 0.02), 5.847)  # under it, but by less than 2 SE
    assert left_plateau(est(5.70, 0.02), 5.847)


def test_budget_comparison_names_the_lead_the_ties_and_the_plateau():
    evals = {"converted": {100: est(5.10, 0.03), 200: est(4.90, 0.03)},
             "from scratch": {100: est(5.90, 0.02), 200: est(5.882, 0.02)}}
    rows = budget_comparison(evals, 5.847, "from scratch")
    assert [r["steps"] for r in rows] == [100, 200] and [r["best"] for r in rows] == ["converted"] * 2
    assert rows[1]["gap"] == pytest.approx(0.982) and rows[1]["gap_se"] == pytest.approx(0.982 / 0.036056, rel=1e-4)
    assert not rows[1]["baseline_left_plateau"] and rows[1]["ties"] == []
    assert budget_lines(rows)[1] == ("200 steps: converted lowest at 4.900 ± 0.030 nats/token; from scratch 5.882 ± "
                                     "0.020 is 0.982 nats (27.2 SE) above it. From scratch is still on the unigram "
                                     "plateau (5.847 nats/token).")
    tie = budget_comparison({"a": {1: est(5.0, 0.1)}, "b": {1: est(5.1, 0.1)}, "s": {1: est(5.05, 0.1)}}, 6.0, "s")
    assert budget_lines(tie) == ["1 step: a lowest at 5.000 ± 0.100 nats/token; s 5.050 ± 0.100 is within 2 SE of it "
                                 "(a tie). Ties (within 2 SE of the lowest): b. S has left the unigram plateau "
                                 "(6.000 nats/token)."]


def test_kept_checkpoints_by_step_and_a_missing_budget_is_one_line(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for name in ("best-step000050.ckpt", "best-step000100.ckpt", "last.ckpt", "best-step000007.ckpt.tmp"):
        (run / "checkpoints" / name).write_bytes(b"")
    (run / "status.json").write_text('{"step": 200}')
    assert step_checkpoints(run) == {50: run / "checkpoints" / "best-step000050.ckpt",
                                     100: run / "checkpoints" / "best-step000100.ckpt"}
    with pytest.raises(SunfishError, match=r"kept no checkpoint at step 150 \(it has \[50, 100\]\); train it with"):
        evaluate_budgets({"r": run}, [150])
