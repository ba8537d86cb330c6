"""Assembling the pipeline from a DataConfig: source -> tokenizer -> packer -> loader.

These helpers need no Lightning; the DataModule, `summarize_source`, the notebook and
the benchmark all build their loaders here.
"""

from __future__ import annotations

from dataclasses import replace

from sunfish_lib.config import DataConfig
from sunfish_lib.data.loader import PackedDataset, ResumableLoader, ResumeTracker
from sunfish_lib.data.packing import PackSpec
from sunfish_lib.data.pairs import PairsDataset, is_pairs_file, load_pairs
from sunfish_lib.data.retry import RetryPolicy
from sunfish_lib.data.sources import SourceSpec, open_source, parse_source
from sunfish_lib.data.tokenizer import SunfishTokenizer, get_tokenizer
from sunfish_lib.errors import SunfishError


def check_fits_model(data: DataConfig, tokenizer: SunfishTokenizer | None = None, *,
                     max_seq_len: int | None = None, vocab_size: int | None = None) -> None:
    """Raise SunfishError if sequences are longer than the model allows or token ids exceed its vocabulary."""
    if data.seq_len <= 0:
        raise SunfishError(f"data.seq_len={data.seq_len} must be > 0")
    if max_seq_len is not None and data.seq_len > max_seq_len:
        raise SunfishError(f"data.seq_len={data.seq_len} exceeds model.max_seq_len={max_seq_len}; "
                           "lower seq_len or raise max_seq_len")
    if tokenizer is not None and vocab_size is not None and len(tokenizer) > vocab_size:
        raise SunfishError(f"data.tokenizer={data.tokenizer!r} has {len(tokenizer)} tokens but model.vocab_size="
                           f"{vocab_size}; raise vocab_size to at least {len(tokenizer)} (a multiple of 64 is faster)")


def pack_spec(data: DataConfig, tokenizer: SunfishTokenizer, *, seed: int = 0, batches_per_step: int = 1,
              split: str = "train", batch_size: int | None = None, seq_len: int | None = None) -> PackSpec:
    """The PackSpec for a split: validation rows are full length (no curriculum, no random lengths)."""
    spec = PackSpec(
        seq_len=seq_len or data.seq_len, batch_size=batch_size or data.micro_batch_size,
        eos_id=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id,
        cross_document_attention=data.cross_document_attention,
        random_length_fraction=data.random_length_fraction, curriculum_steps=data.curriculum_steps,
        curriculum_start_len=data.curriculum_start_len, batches_per_step=batches_per_step, seed=seed,
    )
    if split == "validation":
        spec = replace(spec, random_length_fraction=0.0, curriculum_steps=0,
                       always_attention_mask=data.random_length_fraction > 0)
    return spec


def make_dataset(data: DataConfig, tokenizer: SunfishTokenizer, split: str = "train", *, seed: int = 0,
                 rank: int = 0, world_size: int = 1, batches_per_step: int = 1, source: SourceSpec | None = None,
                 loop: bool | None = None, **pack_overrides) -> PackedDataset | PairsDataset:
    """A PackedDataset of `split`; training loops over the data forever, validation makes one pass.

    A .jsonl of prompt/completion (or messages) rows is conditional (SFT) data: a `PairsDataset`, one
    pair per row with a completion-only `loss_mask` (`data/pairs.py`).
    """
    train = split == "train"
    if is_pairs_file(data.source):
        rows = load_pairs(data.source, tokenizer, pack_overrides.get("seq_len") or data.seq_len, split=split,
                          val_fraction=data.val_fraction)
        return PairsDataset(rows, pack_overrides.get("batch_size") or data.micro_batch_size,
                            loop=train if loop is None else loop, shuffle=train, seed=seed, rank=rank,
                            world_size=world_size)
    source = source or parse_source(data.source, data.text_field)
    hf_ds, rows = open_source(source, split, data.val_fraction)
    pack = pack_spec(data, tokenizer, seed=seed, batches_per_step=batches_per_step, split=split, **pack_overrides)
    return PackedDataset(source, hf_ds, rows, tokenizer, pack, rank=rank, world_size=world_size,
                         loop=train if loop is None else loop,
                         shuffle_buffer=data.shuffle_buffer if train else 0, seed=seed,
                         retry=RetryPolicy(data.read_retries, data.retry_backoff_s))


def make_loader(data: DataConfig, tokenizer: SunfishTokenizer | None = None, split: str = "train", *,
                seed: int = 0, rank: int = 0, world_size: int = 1, batches_per_step: int = 1,
                num_workers: int | None = None, prefetch_factor: int = 2, resumable: bool | None = None,
                pin_memory: bool = False, **kw) -> ResumableLoader:
    """Batches of `split` through a DataLoader; training loaders track consumption for exact resumption."""
    tokenizer = tokenizer or get_tokenizer(data.tokenizer, data.bpe_vocab_size)
    check_fits_model(data)
    workers = data.num_workers if num_workers is None else num_workers
    dataset = make_dataset(data, tokenizer, split, seed=seed, rank=rank, world_size=world_size,
                           batches_per_step=batches_per_step, **kw)
    track = (split == "train") if resumable is None else resumable
    tracker = ResumeTracker(max(1, workers)) if track else None
    return ResumableLoader(dataset, num_workers=workers, prefetch_factor=prefetch_factor, tracker=tracker,
                           pin_memory=pin_memory)
