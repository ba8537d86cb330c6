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
