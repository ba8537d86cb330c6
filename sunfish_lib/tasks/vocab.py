"""A word-level tokenizer for the synthetic tasks: one token per space-separated word.

Task text is words joined by single spaces ("k3 k17 is v5 v2"), so a `tokenizers` WordLevel model with
a whitespace pre-tokenizer encodes it exactly and decodes it back with single spaces. The three specials
every Sunfish tokenizer carries (EOS, [MASK], [PAD]) come first. Each word stands for its characters
(`token_bytes` counts its characters; the separating spaces are left out of bits per byte).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, models, pre_tokenizers

from sunfish_lib.data.tokenizer import EOS, MASK, PAD, SPECIALS, SunfishTokenizer, load_tokenizer

UNK = "[UNK]"


def task_tokenizer(words: Iterable[str], name: str = "task-words") -> SunfishTokenizer:
    """A SunfishTokenizer whose vocabulary is the specials, [UNK] and `words` (in first-seen order)."""
    vocab: dict[str, int] = {}
    for w in (*SPECIALS, UNK, *words):
        vocab.setdefault(w, len(vocab))
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.add_special_tokens(list(SPECIALS))
    return SunfishTokenizer(backend, eos_token=EOS, mask_token=MASK, pad_token=PAD, name=name)


def save_task_tokenizer(tok: SunfishTokenizer, folder: str | Path) -> Path:
    """Write the tokenizer as a save_pretrained folder (`data.tokenizer=FOLDER` loads it)."""
    return tok.save(folder)


def load_task_tokenizer(folder: str | Path) -> SunfishTokenizer:
    """The tokenizer `save_task_tokenizer` wrote (a task folder's `tokenizer/`)."""
    return load_tokenizer(folder)
