"""Tiny random Hugging Face causal LMs, saved with `save_pretrained` (no download).

What `sunfish convert` is exercised on when the hub is out of reach: tests, notebook 08
and the conversion bench build a 2-layer GPT-2, Llama (optionally with Llama-3.1 RoPE
scaling), Qwen2, Qwen3 or Mistral of the real
classes (`transformers` config + `AutoModelForCausalLM.from_config`) and save it, with a
tokenizer, into a folder that converts exactly like a downloaded checkpoint would.
Every parameter is drawn at random (biases and norm gains included), so a weight-mapping
error cannot hide behind zero biases or unit gains.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import (AutoModelForCausalLM, AutoTokenizer, GemmaConfig, GPT2Config, LlamaConfig, MistralConfig,
                          Qwen2Config, Qwen3Config)

from sunfish_lib.hf.hub import quiet_transformers

FAMILIES = ("gpt2", "llama", "qwen2", "qwen3", "mistral", "gemma")


def tiny_hf_config(family: str, vocab_size: int, *, n_layers: int = 2, d_model: int = 64, n_heads: int = 4,
                   n_kv_heads: int | None = None, tied: bool = True, max_len: int = 64, rope_theta: float = 500.0,
                   head_dim: int | None = None, rope_type: str = "default"):
    """A small transformers config of `family`; n_kv_heads < n_heads gives grouped-query attention.

    head_dim: per-head width apart from d_model / n_heads (Qwen3-style); rope_type "llama3":
    Llama-3.1 scaling with the original context at max_len, so the tiny model's frequencies
    fall in all three bands (kept, smoothed, slowed by the factor 4).
    """
    if family not in FAMILIES:
        raise ValueError(f"family={family!r}: choose one of {', '.join(FAMILIES)}")
    common = dict(vocab_size=vocab_size, tie_word_embeddings=tied, bos_token_id=0, eos_token_id=0)
    if family == "gpt2":
        return GPT2Config(n_layer=n_layers, n_head=n_heads, n_embd=d_model, n_positions=max_len, **common)
    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config, "qwen3": Qwen3Config, "mistral": MistralConfig,
           "gemma": GemmaConfig}[family]
    extra: dict[str, Any] = {"sliding_window": max_len * 3 // 4} if family == "mistral" else {}
    if family == "gemma":
        extra["head_dim"] = head_dim or d_model // n_heads  # GemmaConfig's own default is 256
    elif head_dim is not None:
        extra["head_dim"] = head_dim
    rope: dict[str, Any] = {"rope_type": rope_type, "rope_theta": rope_theta}
    if rope_type == "llama3":
        rope.update(factor=4.0, low_freq_factor=1.0, high_freq_factor=4.0, original_max_position_embeddings=max_len)
    return cls(num_hidden_layers=n_layers, num_attention_heads=n_heads, num_key_value_heads=n_kv_heads or n_heads,
               hidden_size=d_model, intermediate_size=3 * d_model // 2, max_position_embeddings=max_len,
               rms_norm_eps=1e-5, rope_parameters=rope, **extra, **common)


def randomize(model: torch.nn.Module, seed: int = 0, std: float = 0.15) -> None:
    """Matrices and biases ~ N(0, std^2), norm gains ~ 1 + N(0, 0.3^2) (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and ("norm" in name or ".ln" in name):
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(std * torch.randn(p.shape, generator=g))


def save_random_hf_parent(folder: str | Path, family: str, tokenizer, *, extra_rows: int = 0, seed: int = 0,
                          std: float = 0.15, **shape):
    """Build, randomize and `save_pretrained` a tiny causal LM plus its tokenizer into folder; returns the model.

    tokenizer: a tokenizer folder, or an object with `save_pretrained(dir)` or `save(dir)` (a
    `SunfishTokenizer`); the embedding gets len(tokenizer) + extra_rows rows (Qwen-style padding).
    `shape` goes to `tiny_hf_config` (n_layers, d_model, n_heads, n_kv_heads, tied, max_len, rope_theta,
    head_dim, rope_type).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(tokenizer, (str, Path)):
        for f in Path(tokenizer).iterdir():
            if f.is_file():
                shutil.copy(f, folder / f.name)
    elif hasattr(tokenizer, "save_pretrained"):
        tokenizer.save_pretrained(str(folder))
    else:
        tokenizer.save(folder)
    vocab = len(AutoTokenizer.from_pretrained(str(folder))) + extra_rows
    torch.manual_seed(seed)
    with quiet_transformers():
        model = AutoModelForCausalLM.from_config(tiny_hf_config(family, vocab, **shape)).float().eval()
        randomize(model, seed, std)
        model.save_pretrained(str(folder))
    return model
