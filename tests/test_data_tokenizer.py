"""Tokenizers: exact round trips, special tokens, caching, saving with a run, HF folders."""

import json

import pytest

from sunfish_lib.data.corpus import shakespeare_files
from sunfish_lib.data.tokenizer import (EOS, MASK, PAD, SunfishTokenizer, bpe_cache_dir, get_tokenizer,
                                        load_tokenizer, save_tokenizer, train_bpe)
from sunfish_lib.errors import SunfishError

NON_ASCII = [
    "naïve café, façade — “quoted” ‘single’ … end",
    "東京都 日本語のテキスト。中文句子！한국어 문장",
    "Ωμέγα λόγος · Привет, мир · שלום · مرحبا",
    "emoji 🐟🐠🦈 flags 🇫🇷 zwj 👩‍👩‍👧 combining é (e + U+0301)",
    "\ttabs\r\nCRLF\n\n  leading and trailing spaces  \u00a0nbsp\u200bzwsp",
    "specials as text: <|endoftext|> [MASK] [PAD] <|endoftext|>",
    "",
]


def test_offline_bpe_has_the_configured_size_and_special_tokens(bpe):
    assert len(bpe) == 4096
    ids = {bpe.eos_token_id, bpe.mask_token_id, bpe.pad_token_id}
    assert len(ids) == 3 and all(0 <= i < 4096 for i in ids)
    assert (bpe.eos_token, bpe.mask_token, bpe.pad_token) == (EOS, MASK, PAD)
    assert (bpe_cache_dir(4096) / "tokenizer.json").is_file()


@pytest.mark.slow
def test_round_trip_on_the_whole_corpus(bpe):
    files = shakespeare_files()
    texts = [p.read_text(encoding="utf-8") for p in files]
    assert len(texts) == 42
    for text, ids in zip(texts, bpe.encode_batch(texts)):
        assert bpe.decode(ids) == text
    n_tokens = sum(len(ids) for ids in bpe.encode_batch(texts))
    assert 2.5 < sum(map(len, texts)) / n_tokens < 4.0  # a real BPE compresses Shakespeare ~3 chars/token


@pytest.mark.parametrize("text", NON_ASCII)
def test_round_trip_non_ascii_and_literal_specials(bpe, text):
    ids = bpe.encode(text)
    assert bpe.decode(ids) == text
    # A literal "<|endoftext|>" in a document is text, never a document boundary.
    assert not {bpe.eos_token_id, bpe.mask_token_id, bpe.pad_token_id} & set(ids)
    assert "".join(bpe.tokens(text)) == text


def test_token_boundaries_are_visible(bpe):
    assert bpe.tokens("To be, or not to be") == ["To", " be", ",", " or", " not", " to", " be"]
    assert bpe.show("be,\nnot") == "be|,|\\n|not"


def test_saved_with_a_run_and_reloaded_identically(bpe, tmp_path):
    folder = save_tokenizer(bpe, tmp_path / "run")
    assert folder == tmp_path / "run" / "tokenizer" and (folder / "tokenizer.json").is_file()
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    assert (cfg["eos_token"], cfg["mask_token"], cfg["pad_token"]) == (EOS, MASK, PAD)
    again = load_tokenizer(tmp_path / "run")
    text = NON_ASCII[1] + " To be, or not to be"
    assert again.encode(text) == bpe.encode(text) and len(again) == len(bpe)
    assert (again.eos_token_id, again.mask_token_id, again.pad_token_id) == (
        bpe.eos_token_id, bpe.mask_token_id, bpe.pad_token_id)
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast.from_pretrained(str(folder))
    assert (hf.mask_token_id, hf.pad_token_id, hf.eos_token_id, len(hf)) == (
        bpe.mask_token_id, bpe.pad_token_id, bpe.eos_token_id, 4096)
    assert hf.convert_tokens_to_ids(MASK) == bpe.mask_token_id


def test_small_vocab_bpe_on_given_texts():
    tok = train_bpe(300, texts=["hello world, hello there. " * 50, NON_ASCII[0]])
    assert 259 <= len(tok) <= 300
    for text in NON_ASCII:
        assert tok.decode(tok.encode(text)) == text
    with pytest.raises(SunfishError, match="bpe_vocab_size=100"):
        train_bpe(100, texts=["x"])


def test_hf_folder_gets_missing_special_tokens_added(tmp_path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(["plain text " * 40], trainers.BpeTrainer(
        vocab_size=280, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    n = backend.get_vocab_size()
    PreTrainedTokenizerFast(tokenizer_object=backend).save_pretrained(str(tmp_path / "bare"))  # no specials
    tok = get_tokenizer(str(tmp_path / "bare"))
    assert isinstance(tok, SunfishTokenizer) and len(tok) == n + 3
    assert sorted([tok.eos_token_id, tok.mask_token_id, tok.pad_token_id]) == [n, n + 1, n + 2]
    assert tok.decode(tok.encode(NON_ASCII[0])) == NON_ASCII[0]


def test_missing_tokenizer_is_a_one_line_error():
    with pytest.raises(SunfishError, match="no such folder") as err:
        get_tokenizer("./no/such/tokenizer")
    assert "\n" not in str(err.value)
    try:
        tok = get_tokenizer("gpt2")  # offline: works only if the HF cache already has it
    except SunfishError as e:
        assert "data.tokenizer='gpt2'" in str(e) and "bpe" in str(e) and "\n" not in str(e)
    else:
        assert len(tok) == 50259 and tok.eos_token_id == 50256
