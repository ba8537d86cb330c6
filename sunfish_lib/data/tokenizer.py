"""Tokenizers: the offline byte-level BPE, any HF tokenizer, and the special tokens objectives need.

Every tokenizer Sunfish uses carries three special tokens, added once:

- EOS `<|endoftext|>`: joins packed documents (GPT-2's own EOS when it has one);
- `[MASK]`: the absorbing state of masked diffusion;
- `[PAD]`: fills sequences cut short (random-length training) and unused prompt slots.

No BOS: documents are separated by EOS alone, as in GPT-2 and LLaDA's pre-training.
`save_tokenizer(tok, run_dir)` writes it into the run folder so a checkpoint always
decodes with its own tokenizer. Data paths encode with `encode_special_tokens` on, so a
literal "<|endoftext|>" inside a document is ordinary text, never a document boundary.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from sunfish_lib.data.corpus import CORPUS_NAME, shakespeare_files
from sunfish_lib.errors import SunfishError
from sunfish_lib.hf.hub import hub_offline
from sunfish_lib.data.cache import cache_dir

log = logging.getLogger(__name__)

EOS = "<|endoftext|>"
MASK = "[MASK]"
PAD = "[PAD]"
SPECIALS = (EOS, MASK, PAD)
RUN_SUBDIR = "tokenizer"


@dataclass
class SunfishTokenizer:
    """A fast tokenizer plus the ids objectives need; `len(tok)` counts special tokens.

    `backend` is a `tokenizers.Tokenizer` (picklable, cheap to ship to DataLoader
    workers); `hf` builds the equivalent `transformers.PreTrainedTokenizerFast` on demand.
    """

    backend: object  # tokenizers.Tokenizer
    eos_token: str = EOS
    mask_token: str = MASK
    pad_token: str = PAD
    name: str = "bpe"
    chat_template: str | None = None  # jinja template of a chat tokenizer (SFT `messages` rows, data/pairs.py)
    _token_bytes: list[int] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        self.backend = copy.deepcopy(self.backend)
        self.backend.encode_special_tokens = True  # specials inside text stay text
        for tok in (self.eos_token, self.mask_token, self.pad_token):
            if self.backend.token_to_id(tok) is None:
                raise SunfishError(f"tokenizer {self.name!r} lacks special token {tok!r}; load it with load_tokenizer()")

    @property
    def eos_token_id(self) -> int:
        return self.backend.token_to_id(self.eos_token)

    @property
    def mask_token_id(self) -> int:
        return self.backend.token_to_id(self.mask_token)

    @property
    def pad_token_id(self) -> int:
        return self.backend.token_to_id(self.pad_token)

    def __len__(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, no special tokens added; literal special strings stay text."""
        return self.backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Batched `encode` (the Rust tokenizer runs the batch at once)."""
        fast = getattr(self.backend, "encode_batch_fast", None) or self.backend.encode_batch
        return [e.ids for e in fast(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = False) -> str:
        """Text of `ids`; exact inverse of `encode` (byte-level, no clean-up)."""
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def token_bytes(self) -> list[int]:
        """UTF-8 bytes each id stands for, (len(self),): the unit of bits per byte.

        Byte-level BPE (GPT-2, Qwen, our offline BPE): a vocabulary piece spells one byte per
        character (GPT-2's bytes-to-unicode alphabet), so its length is its byte count; a row
        cut inside a UTF-8 character still counts each byte once. SentencePiece-style pieces:
        `<0xNN>` byte-fallback is 1 byte, `▁` is a space. Special tokens (EOS, [MASK], [PAD])
        stand for no text and count 0.
        """
        if self._token_bytes is None:
            added = self.backend.get_added_tokens_decoder()  # id -> AddedToken
            byte_level = type(self.backend.decoder).__name__ == "ByteLevel"
            out = [0] * len(self)
            for piece, i in self.backend.get_vocab(with_added_tokens=True).items():
                if i in added:
                    out[i] = 0 if added[i].special else len(added[i].content.encode("utf-8"))
                elif byte_level:
                    out[i] = len(piece)
                elif re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", piece):
                    out[i] = 1
                else:
                    out[i] = len(piece.replace("\u2581", " ").encode("utf-8"))
            self._token_bytes = out
        return self._token_bytes

    def tokens(self, text: str) -> list[str]:
        """The pieces `text` is cut into (for showing boundaries); byte tokens that split one
        character are merged into that character, so the pieces always join back to `text`."""
        spans = []
        for start, end in self.backend.encode(text, add_special_tokens=False).offsets:
            if spans and start < spans[-1][1]:
                spans[-1] = (spans[-1][0], max(end, spans[-1][1]))
            else:
                spans.append((start, end))
        return [text[a:b] for a, b in spans]

    def show(self, text: str, sep: str = "|") -> str:
        """`text` with token boundaries marked by `sep`; newlines and tabs shown as \\n and \\t."""
        return sep.join(p.replace("\n", "\\n").replace("\t", "\\t") for p in self.tokens(text))

    @property
    def hf(self):
        """The same tokenizer as a `transformers.PreTrainedTokenizerFast`."""
        # lazy: the data package imports with torch alone (tests/test_data_imports.py)
        from transformers import PreTrainedTokenizerFast

        backend = copy.deepcopy(self.backend)
        backend.encode_special_tokens = False
        return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token=self.eos_token,
                                       mask_token=self.mask_token, pad_token=self.pad_token)

    def save(self, folder: str | Path) -> Path:
        """Write a `save_pretrained` folder (tokenizer.json + tokenizer_config.json); return it."""
        folder = Path(folder)
        self.hf.save_pretrained(str(folder))
        return folder


# -- loading -----------------------------------------------------------------------------

def get_tokenizer(name: str = "bpe", bpe_vocab_size: int = 4096) -> SunfishTokenizer:
    """`bpe` (offline BPE on the embedded corpus, cached), an HF hub name, a tokenizer folder or a run folder."""
    if name == "bpe":
        return train_bpe(bpe_vocab_size)
    path = Path(name).expanduser()
    if path.is_dir():
        return load_tokenizer(path)
    if path.suffix or name.startswith((".", "/", "~")):
        raise SunfishError(f"data.tokenizer={name!r}: no such folder; give bpe, an HF name (gpt2) or a tokenizer folder")
    return _from_hf(name)


def load_tokenizer(folder: str | Path) -> SunfishTokenizer:
    """Load a tokenizer folder, or a run folder's `tokenizer/` (see `save_tokenizer`)."""
    folder = Path(folder).expanduser()
    if (folder / RUN_SUBDIR / "tokenizer.json").is_file():
        folder = folder / RUN_SUBDIR
    if not folder.is_dir():
        raise SunfishError(f"tokenizer folder {folder} does not exist; pass a run folder or a save_pretrained folder")
    return _from_hf(str(folder))


def save_tokenizer(tok: SunfishTokenizer, run_dir: str | Path) -> Path:
    """Save `tok` into `run_dir/tokenizer/` so the run's checkpoints decode with it; return that folder."""
    return tok.save(Path(run_dir) / RUN_SUBDIR)


def _unreadable_folder(name: str, what: str) -> SunfishError:
    return SunfishError(f"tokenizer folder {name} {what}; copy tokenizer/ from the run it came from, or point at "
                        "another run or export")


def _from_hf(name: str) -> SunfishTokenizer:
    """Any HF tokenizer with a fast backend; adds EOS/[MASK]/[PAD] where missing."""
    # lazy: the data package imports with torch alone (tests/test_data_imports.py)
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    # A Sunfish export folder also holds remote model code: its tokenizer is a plain fast one, so
    # transformers must not ask whether to run that code (nor warn that its config is not a tokenizer's).
    export = (Path(name).expanduser() / "modeling_sunfish.py").is_file()
    level = hf_logging.get_verbosity()
    try:
        if export:
            hf_logging.set_verbosity_error()
        hf = AutoTokenizer.from_pretrained(name, **({"trust_remote_code": False} if export else {}))
    except (KeyError, TypeError, AttributeError, IndexError) as e:
        if not Path(name).expanduser().is_dir():
            raise
        # a local folder whose files transformers cannot make sense of (a cut, bit-flipped or hand-edited
        # tokenizer.json / tokenizer_config.json): transformers fails inside with whatever it met first
        raise _unreadable_folder(name, f"holds damaged files ({type(e).__name__}: "
                                       f"{str(e).splitlines()[0][:120] if str(e) else 'unreadable'})") from None
    except (OSError, ValueError) as e:
        if Path(name).expanduser().is_dir():
            raise _unreadable_folder(name, f"cannot be read ({str(e).splitlines()[0][:160] if str(e) else type(e).__name__})") \
                from None
        hint = "the hub is offline or unreachable" if hub_offline() else str(e).splitlines()[0][:200]
        raise SunfishError(
            f"data.tokenizer={name!r} could not be loaded ({hint}); use data.tokenizer=bpe (offline) "
            "or a local tokenizer folder"
        ) from None
    finally:
        hf_logging.set_verbosity(level)
    if not hf.is_fast:
        raise SunfishError(f"data.tokenizer={name!r} has no fast (Rust) backend; pick a tokenizer with tokenizer.json")
    added = {}
    if hf.eos_token is None:
        added["eos_token"] = EOS
    if hf.mask_token is None:
        added["mask_token"] = MASK
    if hf.pad_token is None or hf.pad_token == hf.eos_token:
        added["pad_token"] = PAD
    if added:
        hf.add_special_tokens(added)
    return SunfishTokenizer(hf.backend_tokenizer, eos_token=str(hf.eos_token), mask_token=str(hf.mask_token),
                            pad_token=str(hf.pad_token), name=name,
                            chat_template=getattr(hf, "chat_template", None) or None)


# -- the offline BPE ------------------------------------------------------------------------

def bpe_cache_dir(vocab_size: int) -> Path:
    """Cache folder of the offline BPE with `vocab_size` entries (specials included)."""
    return cache_dir() / "tokenizers" / f"bpe-{CORPUS_NAME}-{vocab_size}"


def train_bpe(vocab_size: int = 4096, texts: Iterable[str] | None = None, folder: Path | None = None) -> SunfishTokenizer:
    """Byte-level BPE with `vocab_size` entries, trained on the embedded corpus and cached.

    With `texts`, trains on them instead (no caching unless `folder` is given); used by
    tests that want a small vocabulary quickly.
    """
    if vocab_size < 256 + len(SPECIALS):
        raise SunfishError(f"data.bpe_vocab_size={vocab_size} must be >= {256 + len(SPECIALS)} (256 bytes + specials)")
    if texts is None:
        folder = folder or bpe_cache_dir(vocab_size)
        if (folder / "tokenizer.json").is_file():
            return _load_saved_bpe(folder)

        texts = (p.read_text(encoding="utf-8") for p in shakespeare_files())
    tok = SunfishTokenizer(_train_backend(texts, vocab_size), name=f"bpe-{vocab_size}")
    if folder is not None:
        _save_atomic(tok, folder)
    return tok


def _train_backend(texts: Iterable[str], vocab_size: int):
    # lazy: the data package imports with torch alone (tests/test_data_imports.py)
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    # No normalizer and no prefix space: decode(encode(text)) == text byte for byte.
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(texts, trainer)
    return backend


def _save_atomic(tok: SunfishTokenizer, folder: Path) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{folder.name}-", dir=folder.parent) as tmp:
        staged = tok.save(Path(tmp) / folder.name)
        try:
            os.rename(staged, folder)
        except OSError:
            pass  # another process saved it first


def _load_saved_bpe(folder: Path) -> SunfishTokenizer:
    """Our own BPE folders load with `tokenizers` alone (no transformers import)."""
    from tokenizers import Tokenizer  # lazy: the data package imports with torch alone (tests/test_data_imports.py)

    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    specials = {k: cfg.get(k) for k in ("eos_token", "mask_token", "pad_token")}
    specials = {k: (v["content"] if isinstance(v, dict) else v) or d for (k, v), d in zip(specials.items(), SPECIALS)}
    return SunfishTokenizer(Tokenizer.from_file(str(folder / "tokenizer.json")), name=folder.name, **specials)
