"""Faults during training: NaN loss (stop or skip), a full or failing disk, SIGKILL at any point.

The kill tests run `tests/kill_driver.py`: `sunfish train` in a subprocess that kills itself with
SIGKILL halfway through its Nth checkpoint (or export) write, or is killed from outside after a
step. Every resumed run must end with the weights of an uninterrupted run, bitwise.
"""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from sunfish_lib.errors import ConfigError, SunfishError
from sunfish_lib.train.trainer import train
from tests.train_helpers import small_config


# -- NaN loss ------------------------------------------------------------------------------

class NaNLossAt(pl.Callback):
    """Makes the training loss NaN at the given micro-batches (the weights stay finite)."""

    def __init__(self, micros: set[int]):
        self.micros = micros

    def on_fit_start(self, trainer, pl_module):
        loss_fn = pl_module.objective.loss

        def loss(model, batch, generator=None):
            out = loss_fn(model, batch, generator=generator)
            if pl_module.training and pl_module._micro in self.micros:
                out["loss"] = out["loss"] * float("nan")
            return out

        pl_module.objective.loss = loss


class Snapshots(pl.Callback):
    """Weights, EMA and AdamW state at the start of every optimizer step, and at the end."""

    def __init__(self):
        self.at: dict[int, list[torch.Tensor]] = {}

    def _take(self, trainer, pl_module):
        opt = trainer.optimizers[0]
        state = [t.clone() for s in opt.state.values() for t in s.values() if torch.is_tensor(t)]
        ema = [s.clone() for s in pl_module.ema.shadow] if pl_module.ema is not None else []
        self.at[trainer.global_step] = [p.detach().clone() for p in pl_module.parameters()] + ema + state

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if pl_module._micro % pl_module.cfg.train.accumulate_grad_batches == 0:
            self._take(trainer, pl_module)

    def on_train_end(self, trainer, pl_module):
        self._take(trainer, pl_module)


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize("micro", [6, 7], ids=["first-micro-batch", "last-micro-batch"])
def test_nan_skip_leaves_weights_ema_and_optimizer_exactly_unchanged(tmp_path, micro):
    """Step 3 = micro-batches 6 and 7 (accumulation 2, clipping on, EMA on): a NaN in either skips the step."""
    cfg = small_config("masked", accumulate_grad_batches=2, ema_decay=0.9, grad_clip=0.5, nan_policy="skip",
                       max_steps=5, val_every=100, keep_best=0)
    snaps = Snapshots()
    out = train(cfg, tmp_path, progress=False, callbacks=(NaNLossAt({micro}), snaps))
    assert out["global_step"] == 5 and out["metrics"]["train/nan_skips"] == 1.0
    assert _same(snaps.at[3], snaps.at[4])  # the skipped step changed nothing, bit for bit
    for before, after in ((2, 3), (4, 5)):  # the steps around it trained
        assert not _same(snaps.at[before], snaps.at[after])
    assert all(torch.isfinite(t).all() for t in snaps.at[5])
    log = (tmp_path / "train.log").read_text()
    assert "step 3: loss was nan; optimizer step skipped (train.nan_policy=skip; 1 in a row, 1 in all)" in log
    assert log.count("optimizer step skipped") == 1


def test_nan_skip_stops_after_max_skips_in_a_row(tmp_path):
    cfg = small_config("masked", ckpt_every=2, nan_policy="skip", max_nan_skips=1)
    with pytest.raises(SunfishError, match=r"loss became nan at step 4: training stopped after 2 skipped steps in a "
                                           r"row \(train.max_nan_skips=1\); last good checkpoint: step 4 in .*"):
        train(cfg, tmp_path, progress=False, callbacks=(NaNLossAt(set(range(3, 6))),))
    assert "step 3: loss was nan; optimizer step skipped" in (tmp_path / "train.log").read_text()


@pytest.mark.parametrize("override, message", [
    ({"nan_policy": "ignore"}, "train.nan_policy='ignore' is not allowed; choose one of stop, skip"),
    ({"max_nan_skips": -1}, "train.max_nan_skips=-1 must be >= 0"),
    ({"nan_policy": "skip", "precision": "16-mixed"}, "train.nan_policy='skip' does not combine with precision"),
])
def test_nan_policy_fields_are_validated(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        small_config("masked", **override)
