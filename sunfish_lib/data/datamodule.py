"""LightningDataModule: train/validation loaders with workers, prefetching and exact resumption.

`state_dict()` holds, per stream (rank x worker), where the last batch the training
step consumed ends; Lightning stores it in every checkpoint and hands it back through
`load_state_dict()` before the loaders are built, so a resumed run continues with the
next unseen sequence. Consumption is recorded in `on_before_batch_transfer` (Lightning
fetches one batch ahead, so "yielded" is not "consumed"). This module's hook takes
precedence over a LightningModule's `on_before_batch_transfer`; don't override it there.
Under DDP, `state_dict()` gathers every rank's position (rank 0 writes the checkpoint).
"""

from __future__ import annotations

import torch
import pytorch_lightning as pl

from sunfish_lib.config import Config, DataConfig
from sunfish_lib.data.corpus import prepare_shakespeare
from sunfish_lib.data.loader import ResumableLoader, ResumeTracker
from sunfish_lib.data.pipeline import check_fits_model, make_dataset
from sunfish_lib.data.sources import parse_source
from sunfish_lib.data.tokenizer import SunfishTokenizer, get_tokenizer
from sunfish_lib.errors import SunfishError


class SunfishDataModule(pl.LightningDataModule):
    """Packed batches of `data.source` for training (endless, shuffled, resumable) and validation (one pass)."""

    def __init__(self, data: DataConfig, *, seed: int = 0, max_seq_len: int | None = None,
                 vocab_size: int | None = None, batches_per_step: int = 1, prefetch_factor: int = 2,
                 tokenizer: SunfishTokenizer | None = None, rank: int | None = None, world_size: int | None = None):
        super().__init__()
        check_fits_model(data, max_seq_len=max_seq_len)
        self.data, self.seed, self.max_seq_len, self.vocab_size = data, seed, max_seq_len, vocab_size
        self.batches_per_step, self.prefetch_factor = batches_per_step, prefetch_factor
        self.tokenizer = tokenizer
        self._rank, self._world_size = rank, world_size
        self.tracker = ResumeTracker(max(1, data.num_workers))
        self._source = None

    @classmethod
    def from_config(cls, cfg: Config, tokenizer: SunfishTokenizer | None = None, **kw) -> "SunfishDataModule":
        """The DataModule a run with `cfg` trains on (model limits and accumulation taken from it)."""
        m = cfg.resolved_model
        return cls(cfg.data, seed=cfg.seed, max_seq_len=m.max_seq_len, vocab_size=m.vocab_size,
                   batches_per_step=cfg.train.accumulate_grad_batches, tokenizer=tokenizer, **kw)

    # -- Lightning hooks --------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Fetch the embedded corpus and train/cache the BPE once per node (cached afterwards)."""
        if self.data.source == "shakespeare" or self.data.tokenizer == "bpe":
            prepare_shakespeare()
        if self.tokenizer is None and self.data.tokenizer == "bpe":
            get_tokenizer("bpe", self.data.bpe_vocab_size)

    def setup(self, stage: str | None = None) -> None:
        """Load the tokenizer and resolve the source; checks the tokenizer fits the model."""
        if self.tokenizer is None:
            self.tokenizer = get_tokenizer(self.data.tokenizer, self.data.bpe_vocab_size)
        check_fits_model(self.data, self.tokenizer, max_seq_len=self.max_seq_len, vocab_size=self.vocab_size)
        if self._source is None:
            self._source = parse_source(self.data.source, self.data.text_field)

    def train_dataloader(self) -> ResumableLoader:
        """Endless shuffled batches; continues after the last consumed batch (see `state_dict`)."""
        loader = self._loader("train", self.tracker)
        loader.defer_tracking = self.trainer is not None
        return loader

    def val_dataloader(self) -> ResumableLoader:
        """One deterministic pass over the held-out documents (full-length rows, no shuffling)."""
        return self._loader("validation", None)

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        """Record the consumed training batch's position and strip it before the batch reaches the device."""
        if isinstance(batch, dict) and "_resume" in batch:
            self.tracker.record(batch.pop("_resume"))
        return batch

    # -- state ------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Data position for checkpoints: per rank, per stream; gathered from all ranks under DDP."""
        mine = self.tracker.state_dict()
        world = self._world()[1]
        if world > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            ranks = [None] * world
            torch.distributed.all_gather_object(ranks, mine)
        else:
            ranks = [mine]
        return {"ranks": ranks, "source": self.data.source, "seq_len": self.data.seq_len}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the position saved by `state_dict` (same source, world size and num_workers)."""
        rank, world = self._world()
        ranks = state_dict.get("ranks", [])
        if state_dict.get("source") != self.data.source:
            raise SunfishError(f"checkpoint's data.source={state_dict.get('source')!r} differs from "
                               f"{self.data.source!r}; resume with the same source or start a new run")
        if len(ranks) != world:
            raise SunfishError(f"checkpoint's data state covers {len(ranks)} ranks but this run has {world}; "
                               "resume with the same number of devices x nodes")
        self.tracker.load_state_dict(ranks[rank])

    # -- helpers ----------------------------------------------------------------------------
    def _world(self) -> tuple[int, int]:
        if self._rank is not None:
            return self._rank, self._world_size or 1
        if self.trainer is not None:
            return self.trainer.global_rank, self.trainer.world_size
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            return torch.distributed.get_rank(), torch.distributed.get_world_size()
        return 0, 1

    def _loader(self, split: str, tracker: ResumeTracker | None) -> ResumableLoader:
        self.setup()
        rank, world = self._world()
        dataset = make_dataset(self.data, self.tokenizer, split, seed=self.seed, rank=rank, world_size=world,
                               batches_per_step=self.batches_per_step, source=self._source)
        return ResumableLoader(dataset, num_workers=self.data.num_workers, prefetch_factor=self.prefetch_factor,
                               tracker=tracker, pin_memory=torch.cuda.is_available())
