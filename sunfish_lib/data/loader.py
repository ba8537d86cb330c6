"""The torch side: streams as an IterableDataset for DataLoader workers, and exact resumption.

Rank r with W workers reads R * W disjoint streams (`split_dataset_by_node` over
`rank * W + worker`). A DataLoader hands out batches round-robin over its workers,
so the i-th batch of a rank comes from its stream i mod W. Each batch carries its
stream's position after it (`_resume`, a small dict); `ResumeTracker` keeps the position
of the last *consumed* batch per stream. A new iteration — in this process or after a
checkpoint restore — maps fresh worker w to stream (w + consumed) mod W and starts each
stream right after its last consumed batch: none repeated, none skipped.
"""

from __future__ import annotations

import logging
from typing import Iterator

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from sunfish_lib.data.packing import PackSpec
from sunfish_lib.data.retry import DataStreamError, RetryPolicy
from sunfish_lib.data.sources import RowFilter, SourceSpec
from sunfish_lib.data.stream import BlockReader, PackedStream
from sunfish_lib.errors import SunfishError

log = logging.getLogger(__name__)

STATE_VERSION = 1


class PackedDataset(IterableDataset):
    """Packed batches (dicts of (B, T) tensors) of one split; each DataLoader worker reads its own stream."""

    def __init__(self, spec: SourceSpec, hf_ds, rows: RowFilter, tokenizer, pack: PackSpec, *, rank: int = 0,
                 world_size: int = 1, loop: bool = True, shuffle_buffer: int = 1000, seed: int = 0,
                 retry: RetryPolicy = RetryPolicy()):
        super().__init__()
        self.spec, self.hf_ds, self.rows, self.tokenizer, self.pack = spec, hf_ds, rows, tokenizer, pack
        self.retry = retry
        self.rank, self.world_size, self.loop = rank, world_size, loop
        self.shuffle_buffer, self.seed = shuffle_buffer, seed
        self.resume: dict | None = None  # {"rotation": int, "streams": [state | None] * W}, set by the loader

    def stream(self, worker: int = 0, num_workers: int = 1) -> PackedStream:
        """The PackedStream that worker `worker` of `num_workers` reads, restored from `self.resume`."""
        logical = (worker + (self.resume or {}).get("rotation", 0)) % num_workers
        global_id, total = self.rank * num_workers + logical, self.world_size * num_workers
        ds = self.hf_ds
        if ds is not None:  # always a fresh object: its state_dict() must start at the beginning
            # lazy: datasets is optional: the GPU image lacks it (tests/test_data_imports.py)
            from datasets.distributed import split_dataset_by_node

            # Whole files (shards) per stream whenever there are enough, even if unevenly: with
            # "examples" every stream would read (download, decode) all the data to keep 1/total.
            strategy = "shards" if ds.num_shards >= total else "examples"
            if strategy == "examples" and global_id == 0 and total > 1:
                log.warning(few_shards_line(self.spec.source, ds.num_shards, self.world_size, num_workers))
            ds = split_dataset_by_node(ds, rank=global_id, world_size=total, strategy=strategy)
        reader = BlockReader(ds, self.rows, self.spec, stream=global_id, seed=self.seed, loop=self.loop,
                             block_rows=self.shuffle_buffer or 64, shuffle=self.shuffle_buffer > 0, retry=self.retry)
        stream = PackedStream(reader, self.tokenizer.encode_batch, self.pack, stream=logical, num_streams=num_workers)
        stream.logical = logical
        if self.resume is not None:
            stream.restore(self.resume["streams"][logical])
        return stream

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        try:
            if self.resume is not None and len(self.resume["streams"]) != num_workers:
                raise SunfishError(f"data state was saved with {len(self.resume['streams'])} streams per rank but "
                                   f"this loader has {num_workers}; resume with the same data.num_workers")
            stream = self.stream(worker, num_workers)
            while (batch := stream.next_batch()) is not None:
                out = {k: torch.from_numpy(v) for k, v in batch.items()}
                out["_resume"] = {"stream": stream.logical, "state": stream.state()}
                yield out
        except SunfishError as e:
            # re-raised as a clean one-line error in the main process; a failed read stays a DataStreamError
            yield {"_error": str(e), "_stream": isinstance(e, DataStreamError)}
        finally:
            _log_skips(self.rows, worker)


def few_shards_line(source: str, shards: int, ranks: int, workers: int) -> str:
    """The one-line warning for more (rank, worker) streams than the source has files."""
    total = ranks * workers
    return (f"data.source={source!r} has {shards} file(s) (shards) for {total} streams ({ranks} ranks x {workers} "
            f"workers): every stream reads and decodes all of it to keep 1/{total}; use at most {shards} streams "
            f"(lower data.num_workers) or split the source into >= {total} files")


def _log_skips(rows: RowFilter, worker: int) -> None:
    skipped = {k: v for k, v in rows.skipped.items() if v}
    if skipped:
        log.warning("data worker %d skipped documents: %s", worker,
                    ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in skipped.items()))


class ResumeTracker:
    """Per-stream position of the last consumed batch; its `state_dict()` is what checkpoints store."""

    def __init__(self, num_streams: int):
        self.num_streams = num_streams
        self.consumed = 0
        self.streams: list[dict | None] = [None] * num_streams

    def record(self, meta: dict) -> None:
        """Note that the batch carrying `meta` (its `_resume` entry) was consumed."""
        self.streams[meta["stream"]] = meta["state"]
        self.consumed += 1

    def plan(self) -> dict | None:
        """What a fresh PackedDataset needs to continue after the last consumed batch."""
        if self.consumed == 0:
            return None
        return {"rotation": self.consumed % self.num_streams, "streams": list(self.streams)}

    def state_dict(self) -> dict:
        return {"version": STATE_VERSION, "num_streams": self.num_streams, "consumed": self.consumed,
                "streams": list(self.streams)}

    def load_state_dict(self, state: dict) -> None:
        if state.get("version") != STATE_VERSION:
            raise SunfishError(f"data state version {state.get('version')!r} is not {STATE_VERSION}; "
                               "this checkpoint was written by another Sunfish version")
        if state["num_streams"] != self.num_streams:
            raise SunfishError(f"data state was saved with data.num_workers={state['num_streams']} "
                               f"(0 counts as 1) but this run has {self.num_streams}; resume with the same value")
        self.consumed = int(state["consumed"])
        self.streams = list(state["streams"])


class ResumableLoader:
    """Iterable of batches through a DataLoader (workers, prefetching); every new iteration
    continues after the last consumed batch when a tracker is attached.

    `defer_tracking`: leave `_resume` in the batch for `SunfishDataModule.on_before_batch_transfer`
    (Lightning prefetches a batch ahead, so consumption is recorded when the step takes it).
    """

    def __init__(self, dataset: PackedDataset, *, num_workers: int = 0, prefetch_factor: int = 2,
                 tracker: ResumeTracker | None = None, pin_memory: bool = False):
        self.dataset, self.num_workers, self.prefetch_factor = dataset, num_workers, prefetch_factor
        self.tracker, self.pin_memory = tracker, pin_memory
        self.defer_tracking = False
        self._persistent: DataLoader | None = None

    def dataloader(self) -> DataLoader:
        """A torch DataLoader over the dataset, positioned after the last consumed batch.

        Without a tracker (validation) one DataLoader with persistent workers serves every pass.
        """
        if self._persistent is not None:
            return self._persistent
        self.dataset.resume = self.tracker.plan() if self.tracker is not None else None
        kwargs = {}
        if self.num_workers > 0:
            kwargs = dict(prefetch_factor=self.prefetch_factor, persistent_workers=self.tracker is None)
        loader = DataLoader(self.dataset, batch_size=None, num_workers=self.num_workers,
                            pin_memory=self.pin_memory, **kwargs)
        if self.tracker is None and self.num_workers > 0:
            self._persistent = loader
        return loader

    def __iter__(self) -> Iterator[dict]:
        for batch in self.dataloader():
            if "_error" in batch:
                raise (DataStreamError if batch["_stream"] else SunfishError)(batch["_error"])
            meta = batch.pop("_resume") if not self.defer_tracking else None
            if meta is not None and self.tracker is not None:
                self.tracker.record(meta)
            yield batch
