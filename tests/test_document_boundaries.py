"""Issue 14.1: with cross_document_attention=False the diffusion denoiser may only see boundaries it can see.

Segment ids built from the clean x0 tell the masked denoiser where every EOS is, even a
masked one; the reported ELBO would then stop bounding -log p(x).
"""

import numpy as np
import pytest
import torch

from sunfish_lib.config import DiffusionConfig, ModelConfig, get_config
from sunfish_lib.data.packing import segment_ids
from sunfish_lib.diffusion import MaskedDiffusion
from sunfish_lib.diffusion.masked import visible_segments
from sunfish_lib.errors import ConfigError
from sunfish_lib.model import Backbone

EOS, WORD, MASK = 1, 7, 31


def _batch(x0: torch.Tensor) -> dict:
    real = np.ones(tuple(x0.shape), dtype=bool)
    return {"input_ids": x0, "segment_ids": torch.from_numpy(segment_ids(x0.numpy(), real, EOS))}


def _pair():
    """Two rows identical after masking: position 3 hides an EOS in one and a word in the other."""
    a = torch.tensor([[5, 6, 8, EOS, 9, 10, 11, 12]])
    b = a.clone()
    b[0, 3] = WORD
    masked = torch.zeros_like(a, dtype=torch.bool)
    masked[0, [3, 5]] = True
    return a, b, masked


@pytest.mark.parametrize("shift", [False, True])
def test_masked_logits_do_not_depend_on_the_hidden_token(shift):
    torch.manual_seed(0)
    model = Backbone(ModelConfig(vocab_size=32, n_layers=2, n_heads=2, d_model=16, max_seq_len=16).resolve("masked"))
    obj = MaskedDiffusion(DiffusionConfig(objective="masked", shift_logits=shift), mask_token_id=MASK)
    a, b, masked = _pair()
    z = torch.where(masked, torch.full_like(a, MASK), a)
    t = torch.tensor([0.5])
    la = obj.masked_logits(model, z, t, _batch(a), masked)  # (2, V)
    lb = obj.masked_logits(model, z, t, _batch(b), masked)
    assert la.shape == (2, 32)
    torch.testing.assert_close(la, lb, rtol=0, atol=0)
    # and the per-token loss at the other masked position (same target) is identical too
    na = obj.masked_nll(model, z, t, _batch(a), masked)
    nb = obj.masked_nll(model, z, t, _batch(b), masked)
    assert na[1].item() == nb[1].item() and na[0].item() != nb[0].item()


def test_visible_eos_still_separates_documents():
    a, _, masked = _pair()
    seg = _batch(a)["segment_ids"]
    assert visible_segments(seg, torch.zeros_like(masked)).tolist() == [[0, 0, 0, 0, 1, 1, 1, 1]]
    assert visible_segments(seg, masked).tolist() == [[0] * 8]  # the masked EOS is no boundary
    am = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0]])
    assert visible_segments(seg, torch.zeros_like(masked), am).tolist() == [[0, 0, 0, 0, 1, 1, -1, -1]]


def test_elbo_at_fixed_masks_differs_only_by_the_hidden_tokens_own_term():
    """The evaluator's path (`loss_at`): same z, same t -> the ELBOs differ only in the hidden token's term."""
    torch.manual_seed(1)
    model = Backbone(ModelConfig(vocab_size=32, n_layers=2, n_heads=2, d_model=16, max_seq_len=16).resolve("masked"))
    obj = MaskedDiffusion(DiffusionConfig(objective="masked"), mask_token_id=MASK)
    a, b, masked = _pair()
    t = torch.tensor([0.4])
    z = torch.where(masked, torch.full_like(a, MASK), a)
    outs = []
    for x in (a, b):
        batch = _batch(x)
        obj.mask = lambda x0, t, valid, generator=None, _m=masked: (torch.where(_m, MASK, x0), _m)
        outs.append(obj.loss_at(model, batch, t)["elbo_per_seq"])
        del obj.mask
    la = obj.masked_logits(model, z, t, _batch(a), masked).log_softmax(-1)
    own = (la[0, WORD] - la[0, EOS]) * obj.schedule.weight(t)[0] / a.shape[1]
    assert (outs[0] - outs[1]).item() == pytest.approx(own.item(), rel=1e-4)


def test_continuous_refuses_block_diagonal_attention():
    with pytest.raises(ConfigError, match="data.cross_document_attention=False"):
        get_config("tiny", objective="continuous", cross_document_attention=False)
    for objective, sampler in (("masked", "random"), ("ar", "ar")):
        assert not get_config("tiny", objective=objective, sampler=sampler,
                              cross_document_attention=False).data.cross_document_attention
