"""Which attention kernel runs, and how a document/padding mask reaches it.

A row that restricts nothing gets no mask at all (SDPA keeps its flash / memory-efficient
kernels; causal models use `is_causal`). A document mask (packed rows with
`data.cross_document_attention=False`) or a padding mask goes either

- to FlexAttention (Dong et al. 2024, "Flex Attention") as a `BlockMask`: the mask is a
  predicate `mask_mod(b, h, q, kv)`, evaluated per 128 x 128 tile, and tiles outside every
  document are skipped, so the cost falls with the documents' lengths; or
- to SDPA as a dense boolean (B, 1, T, T) mask, the fallback (which disables flash attention).

`Backbone.attention_kernel` picks: "auto" (FlexAttention on CUDA, SDPA elsewhere), "flex" or
"sdpa". Both compute the same function: True = may attend, and a query that may see nothing
(a padding row) attends to itself instead of producing NaN.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

KERNELS = ("auto", "flex", "sdpa")


def use_flex(kernel: str, device: torch.device, dropout: float) -> bool:
    """FlexAttention for this pass? (it has no dropout: a pass with dropout uses SDPA)."""
    if kernel not in KERNELS:
        raise ValueError(f"attention_kernel={kernel!r}; choose one of {', '.join(KERNELS)}")
    if dropout > 0:
        return False
    return kernel == "flex" or (kernel == "auto" and torch.device(device).type == "cuda")


def dense_mask(segment_ids, attention_mask, causal: bool, T: int, device) -> torch.Tensor:
    """Boolean (B, 1, T, T) SDPA mask, True = may attend."""
    mask = torch.ones(1, 1, T, T, dtype=torch.bool, device=device)
    if segment_ids is not None:
        mask = mask & (segment_ids[:, None, :, None] == segment_ids[:, None, None, :])
    if attention_mask is not None:
        mask = mask & attention_mask.bool()[:, None, None, :]
    if causal:
        mask = mask & torch.ones(T, T, dtype=torch.bool, device=device).tril()
    return mask | torch.eye(T, dtype=torch.bool, device=device)


def block_mask(segment_ids, attention_mask, causal: bool, T: int, device):
    """The same predicate as `dense_mask`, as a FlexAttention BlockMask (B, 1 head broadcast, T, T)."""
    B = (segment_ids if segment_ids is not None else attention_mask).shape[0]
    keep = attention_mask.bool() if attention_mask is not None else None

    def mask_mod(b, h, q, kv):
        ok = q == kv  # a query always sees itself (padding rows: no NaN)
        allowed = torch.ones_like(ok)
        if segment_ids is not None:
            allowed = allowed & (segment_ids[b, q] == segment_ids[b, kv])
        if keep is not None:
            allowed = allowed & keep[b, kv]
        if causal:
            allowed = allowed & (kv <= q)
        return ok | allowed

    return create_block_mask(mask_mod, B, None, T, T, device=device)


@functools.cache
def _compiled_flex():
    """flex_attention compiled once (on CUDA it is only fused, and fast, when compiled)."""
    return torch.compile(flex_attention, dynamic=False)


def is_block_mask(mask) -> bool:
    return mask is not None and type(mask).__name__ == "BlockMask"


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask, causal: bool, dropout_p: float,
           enable_gqa: bool) -> torch.Tensor:
    """Attention output (B, nh, T, hs) for q (B, nh, T, hs), k/v (B, n_kv, T_k, hs); mask: None, dense or BlockMask."""
    if is_block_mask(mask):
        if q.is_cuda:
            return _compiled_flex()(q, k, v, block_mask=mask, enable_gqa=enable_gqa)
        return flex_attention(q, k, v, block_mask=mask, enable_gqa=enable_gqa)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p,
                                          is_causal=causal and mask is None, enable_gqa=enable_gqa)
