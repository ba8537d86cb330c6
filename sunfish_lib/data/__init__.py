"""The data pipeline: text source -> tokenizer -> packer -> batches (`sources` -> `tokenizer` -> `packing` -> `loader`).

Importing this package needs only torch; `datasets`, `tokenizers`, `transformers` and
Lightning are imported where used. Main entry points:

- `get_tokenizer(name, bpe_vocab_size)`, `load_tokenizer(folder)`, `save_tokenizer(tok, run_dir)`
- `make_loader(data_cfg, tok, split)` — batches without Lightning
- `SunfishDataModule.from_config(cfg)` — the LightningDataModule (exactly resumable)
- `summarize_source(...)` — what a source yields (documents, tokens, packing, tokens/s)
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "SunfishTokenizer": "tokenizer", "get_tokenizer": "tokenizer", "load_tokenizer": "tokenizer",
    "save_tokenizer": "tokenizer", "train_bpe": "tokenizer",
    "parse_source": "sources", "iter_documents": "sources", "SourceSpec": "sources",
    "prepare_shakespeare": "corpus", "shakespeare_files": "corpus",
    "PackSpec": "packing", "make_batch": "packing",
    "make_loader": "pipeline", "make_dataset": "pipeline", "check_fits_model": "pipeline",
    "SunfishDataModule": "datamodule",
    "summarize_source": "summary",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
