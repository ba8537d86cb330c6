"""Issue 14.7: sampling and clamping round with the rule training's rounding CE learns (euclidean by default)."""

import pytest
import torch

from sunfish_lib.config import DiffusionConfig, ModelConfig, get_config
from sunfish_lib.diffusion import ContinuousDiffusion
from sunfish_lib.errors import SunfishError
from sunfish_lib.model import Backbone
from sunfish_lib.sampling import ContinuousSampler
from sunfish_lib.diffusion.rounding import nearest_tokens, resolve_metric, snap_to_embeddings


def _sampler(embed_norm: bool, sample_cfg=None) -> ContinuousSampler:
    torch.manual_seed(0)
    model = Backbone(ModelConfig(vocab_size=40, n_layers=1, n_heads=2, d_model=16, embed_dim=8, max_seq_len=16,
                                 time_conditioning=True, time_freq_dim=16).resolve("masked"))
    obj = ContinuousDiffusion(DiffusionConfig(num_timesteps=50, embed_norm=embed_norm))
    if sample_cfg is not None:
        return ContinuousSampler.from_config(model, obj, sample_cfg)
    return ContinuousSampler(model, obj, steps=5, clamp=True)


def test_default_rounding_is_what_the_rounding_ce_trains():
    assert get_config("tiny").sample.rounding == "auto"
    s = _sampler(False, get_config("tiny", steps=5).sample)
    assert s.rounding == "euclidean" and _sampler(False).rounding == "euclidean"
    table = s.objective.embedding_table(s.model)  # (V, e), norms differ
    g = torch.Generator().manual_seed(1)
    x = 3 * torch.randn(500, table.shape[1], generator=g)
    ce_rule = ContinuousDiffusion.rounding_logits(x, table).argmax(-1)
    ids, _ = nearest_tokens(x, table, s.rounding)
    assert torch.equal(ids, ce_rule)
    assert not torch.equal(nearest_tokens(x, table, "cosine")[0], ce_rule)  # the old default disagreed
    assert torch.equal(snap_to_embeddings(x, table, s.rounding), table[ce_rule])


def test_cosine_only_with_normalised_embeddings_where_the_rules_agree():
    s = _sampler(True)
    assert s.rounding == "cosine"
    table = s.objective.embedding_table(s.model)
    x = torch.randn(300, table.shape[1], generator=torch.Generator().manual_seed(2))
    assert torch.equal(nearest_tokens(x, table, "cosine")[0], nearest_tokens(x, table, "euclidean")[0])
    assert resolve_metric("cosine", False) == "cosine" and resolve_metric("euclidean", True) == "euclidean"
    with pytest.raises(SunfishError, match="sample.rounding='l1'"):
        resolve_metric("l1", False)
