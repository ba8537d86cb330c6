"""The overfit check's data: the same few batches, over and over."""

from __future__ import annotations

import itertools

import torch


class FixedBatches(torch.utils.data.IterableDataset):
    """Cycles a fixed list of batches forever (for `--overfit-batches N`)."""

    def __init__(self, batches: list[dict]):
        self.batches = batches

    def __iter__(self):
        return itertools.cycle(self.batches)

    def __len__(self) -> int:  # one "epoch" = the fixed batches once (validation reads them once)
        return len(self.batches)


def fixed_batches(datamodule, n: int) -> torch.utils.data.DataLoader:
    """The first n training batches of `datamodule`, cycled (batch_size=None: already batched)."""
    datamodule.prepare_data()
    datamodule.setup("fit")
    it = iter(datamodule.train_dataloader())
    batches = []
    for batch in itertools.islice(it, n):
        batches.append({k: v for k, v in batch.items() if k != "_resume"})
    return torch.utils.data.DataLoader(FixedBatches(batches), batch_size=None)


def overfit_check(cfg, run_dir, *, n_batches: int = 2, threshold: float = 0.5, window: int = 5,
                  progress: bool | None = False) -> dict:
    """The overfit test: train on `n_batches` fixed batches; pass when the mean of the last
    `window` training losses falls below `threshold`. Returns the verdict and the curve."""
    from sunfish_lib.train.metrics import read_metrics, series
    from sunfish_lib.train.trainer import train

    summary = train(cfg, run_dir, overfit_batches=n_batches, progress=progress)
    steps, losses = series(read_metrics(run_dir), "train/loss")
    if not losses:
        raise RuntimeError(f"no training loss was logged in {run_dir}")
    final = sum(losses[-window:]) / len(losses[-window:])
    return {"passed": final < threshold, "final_loss": final, "initial_loss": losses[0], "threshold": threshold,
            "steps": summary["global_step"], "curve": (steps, losses)}
