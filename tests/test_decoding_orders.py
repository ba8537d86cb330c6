"""Decoding orders of the masked samplers: top probability vs margin (Kim et al. 2025), ReMDM remasking,
the commit order in the trajectory and the AR-ness figure; reachable from the config, CLI flags and the panel."""

import math

import pytest
import torch
from torch import nn

from sunfish_lib.config import get_config
from sunfish_lib.errors import SunfishError
from sunfish_lib.sampling.analysis import ar_ness, commit_order
from sunfish_lib.sampling.masked import MaskedSampler
from sunfish_lib.sampling.settings import SETTINGS, applies, check_settings
from sunfish_lib.sampling.trajectory import Trajectory
from sunfish_lib.sampling.noise import RowNoise

V, MASK = 5, 4


class FixedBeliefs(nn.Module):
    """Per-position token distributions that do not depend on the input: position -> probabilities over 4 tokens."""

    def __init__(self, probs: list[list[float]]):
        super().__init__()
        p = torch.tensor(probs)
        self.logp = torch.cat([p.log(), torch.full((len(probs), 1), -1e9)], -1)  # (T, V): [MASK] never

    def encode(self, x, t=None, **_):
        return self.logp[None].expand(x.shape[0], -1, -1)

    def logits(self, h):
        return h


# position 0: confident but torn (0.48 vs 0.46: margin 0.02); position 1: less confident, clear (0.40 vs 0.20);
# position 2: the most confident and clear (0.90)
PROBS = [[0.48, 0.46, 0.03, 0.03], [0.40, 0.20, 0.20, 0.20], [0.90, 0.04, 0.03, 0.03]]


def _run(kind, remask=0.0, steps=3, x=None, seed=0):
    model = FixedBeliefs(PROBS)
    s = MaskedSampler(model, MASK, kind=kind, steps=steps, temperature=0.0, remask=remask)
    traj = Trajectory(sampler=kind)
    x = torch.full((1, 3), MASK) if x is None else x
    out = s.generate(x, trajectory=traj, noise=RowNoise(seed))
    return out, traj


def test_top_probability_and_margin_commit_in_their_orders():
    _, conf = _run("low_confidence")
    _, margin = _run("margin")
    assert commit_order(conf).tolist() == [1, 2, 0]  # by p(top1): 0.90, 0.48, 0.40
    assert commit_order(margin).tolist() == [2, 1, 0]  # by p1 - p2: 0.86, 0.20, 0.02


def test_commit_order_marks_given_positions_and_ar_ness_reads_left_to_right():
    out, traj = _run("margin", x=torch.tensor([[0, MASK, MASK]]), steps=2)
    assert commit_order(traj).tolist() == [-1, 1, 0]
    assert ar_ness(traj) == 0.5  # position 2 while 1 was open (a miss), then 1, the only one left (a hit)
    _, conf = _run("low_confidence")  # positions 2, 0, 1: a miss, then the leftmost open twice
    assert ar_ness(conf) == pytest.approx(2 / 3)
    left = Trajectory()
    for i in range(3):  # a left-to-right decoder: every commit is the leftmost open position
        masked = torch.arange(3)[None] > i
        left.record(0.0, committed=torch.arange(3)[None] == i, masked=masked)
    assert ar_ness(left) == 1.0


def test_ar_ness_counts_multi_token_steps_against_the_leftmost_block():
    t = Trajectory()
    t.record(0.5, committed=torch.tensor([[True, False, True, False]]), masked=torch.tensor([[False, True, False, True]]))
    t.record(0.0, committed=torch.tensor([[False, True, False, True]]), masked=torch.zeros(1, 4, dtype=torch.bool))
    assert ar_ness(t) == pytest.approx(3 / 4)  # step 1: position 0 of the 2 leftmost (0, 1); step 2: both


def test_remasking_commits_again_and_still_ends_unmasked_after_its_steps():
    model = FixedBeliefs(PROBS * 4)  # 12 positions
    s = MaskedSampler(model, MASK, kind="low_confidence", steps=6, temperature=0.0, remask=0.5)
    traj = Trajectory()
    out = s.generate(torch.full((1, 12), MASK), trajectory=traj, noise=RowNoise(0))
    assert (out != MASK).all() and len(traj) == 6
    remasked = traj.stack("remasked")
    assert remasked.sum() > 0 and not remasked[-1].any()  # never after the last step
    assert traj.stack("committed").sum() == 12 + remasked.sum()  # each remasked token is committed again
    after_commits = (traj.stack("masked") & ~remasked).sum((1, 2)).tolist()
    assert after_commits == [10, 8, 6, 4, 2, 0]  # each step lands on the transfer schedule, then remasks


def test_remask_rules():
    with pytest.raises(SunfishError, match="remask"):
        MaskedSampler(FixedBeliefs(PROBS), MASK, kind="threshold", remask=0.1)
    with pytest.raises(SunfishError, match=r"sample.remask=1.0 must be in \[0, 1\)"):
        MaskedSampler(FixedBeliefs(PROBS), MASK, kind="margin", remask=1.0)


def test_orders_are_settings_everywhere():
    assert "remask" in SETTINGS and applies("remask", "masked") and not applies("remask", "ar")
    assert check_settings({"sampler": "margin", "remask": 0.2}) == {"sampler": "margin", "remask": 0.2}
    cfg = get_config("smoke", {"objective": "masked", "sampler": "margin", "remask": 0.1})
    assert (cfg.sample.sampler, cfg.sample.remask) == ("margin", 0.1)
    assert math.isnan(ar_ness(_empty()))


def _empty():
    t = Trajectory()
    t.record(0.0, committed=torch.zeros(1, 2, dtype=torch.bool), masked=torch.zeros(1, 2, dtype=torch.bool))
    return t
