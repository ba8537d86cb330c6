"""Saving the training state when the data source fails mid-run.

A `DataStreamError` (a source whose reads kept failing after `data.read_retries`, or an
unreadable record) reaches Lightning from the batch fetch of the training or validation
loop. Before it propagates, `DataFaultCheckpoint` writes `last.ckpt` at the last
*completed* optimizer step: the weights, optimizer, LR schedule and EMA are as that step
left them (a partly accumulated step changes none of them), and the data position and
Lightning's loop counters are the ones recorded at that step's end — the batches fetched
after it are dropped. `sunfish train --resume` then continues exactly as the
uninterrupted run would have, and the error names the step, the file and the command.
"""

from __future__ import annotations

from pathlib import Path

import pytorch_lightning as pl

from sunfish_lib.errors import DataStreamError
from sunfish_lib.train.interrupt import resume_command


class DataFaultCheckpoint(pl.Callback):
    """On a DataStreamError, checkpoint the last completed optimizer step to `path` (one process only)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._at_step: tuple[int, dict, dict] | None = None  # (step, fit-loop state, data state)
        self._loop_state: dict | None = None  # set while saving: the fit loop as the step left it

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if pl_module._micro % pl_module.cfg.train.accumulate_grad_batches or not self._applies(trainer):
            return
        # both state_dicts are built fresh (Progress via asdict, the tracker's list copied, its stream
        # states replaced per batch, never mutated), so no per-step deep copy is needed
        self._at_step = (int(trainer.global_step), trainer.fit_loop.state_dict(),
                         trainer.datamodule.tracker.state_dict())

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        if self._loop_state is not None:
            checkpoint["loops"]["fit_loop"] = self._loop_state

    def on_exception(self, trainer, pl_module, exception):
        if not isinstance(exception, DataStreamError):
            return
        resume = f"once the source reads again, continue with `{resume_command(self.path.parent.parent)}`"
        if not self._applies(trainer):
            exception.checkpointed(f"no checkpoint written on the way out with {trainer.world_size} processes; "
                                   f"the last periodic one is in {self.path.parent}; {resume}")
        elif self._at_step is None:
            exception.checkpointed(f"no optimizer step completed in this attempt, so nothing new to save; {resume}")
        else:
            try:
                step = self._save(trainer)
            except Exception as e:  # e.g. the disk is full too: keep the data error, say what else failed
                exception.checkpointed(f"saving the training state failed as well ({' '.join(str(e).split())[:200]})"
                                       f"; the last periodic checkpoint is in {self.path.parent}")
                return
            exception.checkpointed(f"training state saved at step {step} in {self.path}; {resume}")

    def _save(self, trainer) -> int:
        step, loops, data = self._at_step
        tracker = trainer.datamodule.tracker
        live = tracker.state_dict()
        tracker.load_state_dict(data)
        self._loop_state = loops
        try:
            trainer.save_checkpoint(str(self.path), weights_only=False)
        finally:
            self._loop_state = None
            tracker.load_state_dict(live)
        return step

    @staticmethod
    def _applies(trainer) -> bool:
        """One process with a SunfishDataModule (saving on one rank of many would hang in collectives)."""
        return trainer.world_size == 1 and hasattr(getattr(trainer, "datamodule", None), "tracker")
