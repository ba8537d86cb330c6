"""Tiny random Hugging Face causal LMs saved with `save_pretrained` (no download), for conversion tests."""

from __future__ import annotations

from pathlib import Path

import torch

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


def _randomize(model: torch.nn.Module, seed: int, std: float) -> None:
    """Every parameter random, biases and norm gains included: a mapping error cannot hide behind zeros or ones."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and ("norm" in name or "ln" in name):
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(std * torch.randn(p.shape, generator=g))


def hf_config(family: str, vocab: int, *, n_kv_heads: int | None = None, tied: bool = True, d: int = 64):
    """A 2-layer, 4-head config of the family (gpt2, llama, qwen2, mistral); n_kv_heads < 4 is GQA."""
    from transformers import GPT2Config, LlamaConfig, MistralConfig, Qwen2Config

    common = dict(vocab_size=vocab, tie_word_embeddings=tied, bos_token_id=0, eos_token_id=0)
    if family == "gpt2":
        return GPT2Config(n_layer=2, n_head=4, n_embd=d, n_positions=64, **common)
    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config, "mistral": MistralConfig}[family]
    extra = {"sliding_window": 48} if family == "mistral" else {}
    return cls(num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=n_kv_heads or 4, hidden_size=d,
               intermediate_size=96, max_position_embeddings=64, rms_norm_eps=1e-5,
               rope_parameters={"rope_type": "default", "rope_theta": 500.0}, **extra, **common)


def save_hf_model(folder: Path, family: str, tokenizer_folder: Path, *, extra_rows: int = 0, seed: int = 0,
                  std: float = 0.15, **kw):
    """Build, randomize and `save_pretrained` a tiny causal LM (+ the tokenizer) into folder; returns the model."""
    import shutil

    from transformers import AutoModelForCausalLM, AutoTokenizer

    vocab = len(AutoTokenizer.from_pretrained(str(tokenizer_folder))) + extra_rows
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(hf_config(family, vocab, **kw)).float().eval()
    _randomize(model, seed, std)
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()
    model.save_pretrained(str(folder))
    for f in Path(tokenizer_folder).iterdir():
        shutil.copy(f, Path(folder) / f.name)
    return model
