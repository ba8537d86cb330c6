"""Document masks through FlexAttention's block mask and through SDPA's dense mask give the same logits (#17)."""

from __future__ import annotations

import pytest
import torch

from sunfish_lib.model.attention import is_block_mask, use_flex
from sunfish_lib.model import Backbone
from tests.train_helpers import small_config


def _packed_batch(V: int, B: int = 3, T: int = 160):
    """Rows packed with documents of uneven lengths (segment ids), the last row right-padded; T > one 128 tile."""
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, V, (B, T), generator=g)
    cuts = [[0, 37, 90, 151], [0, 128], [0, 5, 64]]
    segment_ids = torch.zeros(B, T, dtype=torch.long)
    for b, starts in enumerate(cuts):
        for i, s in enumerate(starts):
            segment_ids[b, s:] = i
    attention_mask = torch.ones(B, T, dtype=torch.long)
    attention_mask[2, 120:] = 0
    attention_mask[1, :3] = 0  # left padding too: keys masked in the middle of a causal row's view
    return tokens, segment_ids, attention_mask


@pytest.mark.parametrize("objective", ["masked", "ar"])
def test_flex_block_mask_and_dense_sdpa_mask_give_the_same_logits(objective):
    cfg = small_config(objective, seq_len=256, n_kv_heads=1)  # grouped-query attention on the way
    model = Backbone(cfg.resolved_model).eval()
    tokens, seg, pad = _packed_batch(cfg.model.vocab_size)
    out = {}
    with torch.no_grad():  # FlexAttention has no backward on CPUs (bench/gpu_check.py runs it with one on CUDA)
        for kernel in ("flex", "sdpa"):
            model.attention_kernel = kernel
            mask = model._attn_mask(seg, pad, tokens.shape[1], tokens.device)
            assert is_block_mask(mask) == (kernel == "flex")
            out[kernel] = model(tokens, segment_ids=seg, attention_mask=pad)
        assert torch.allclose(out["flex"], out["sdpa"], atol=2e-5, rtol=1e-4)
        # and the masks matter: without them the logits differ
        model.attention_kernel = "sdpa"
        assert not torch.allclose(model(tokens), out["sdpa"], atol=1e-3)


def test_kernel_choice_auto_flex_on_cuda_sdpa_elsewhere_and_under_dropout():
    assert use_flex("auto", torch.device("cuda"), 0.0) and not use_flex("auto", torch.device("cpu"), 0.0)
    assert use_flex("flex", torch.device("cpu"), 0.0) and not use_flex("flex", torch.device("cuda"), 0.1)
    assert not use_flex("sdpa", torch.device("cuda"), 0.0)
    with pytest.raises(ValueError, match="attention_kernel='xla'; choose one of auto, flex, sdpa"):
        use_flex("xla", torch.device("cpu"), 0.0)
    model = Backbone(small_config("masked").resolved_model)
    tokens, seg, pad = _packed_batch(model.cfg.vocab_size, T=32)
    assert not is_block_mask(model._attn_mask(seg, pad, 32, tokens.device))  # auto on a CPU: dense
