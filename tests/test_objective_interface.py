"""Objectives share one interface and are built through one registry; the backbone is built resolved."""

import inspect

import pytest
import torch

from sunfish_lib.config import OBJECTIVES, ModelConfig, get_config
from sunfish_lib.diffusion import OBJECTIVE_CLASSES, DiffusionObjective, build_objective, objective_class
from sunfish_lib.errors import ConfigError
from sunfish_lib.eval.evaluate import evaluate_likelihood
from sunfish_lib.model import Backbone

SHAPE = {"n_layers": 1, "d_model": 32, "n_heads": 2, "seq_len": 16, "max_seq_len": 16, "length": 16, "vocab_size": 320,
         "bpe_vocab_size": 300}


def test_registry_covers_every_objective_and_each_class_states_its_samplers_and_backbone():
    assert sorted(OBJECTIVE_CLASSES) == sorted(OBJECTIVES)
    for name, cls in OBJECTIVE_CLASSES.items():
        assert cls.name == name and objective_class(name) is cls
    assert {cls.kind for cls in OBJECTIVE_CLASSES.values()} == {
        "exact NLL", "ELBO upper bound"}
    with pytest.raises(ConfigError, match="diffusion.objective='bert' is not allowed; choose one of continuous"):
        objective_class("bert")


def test_objectives_own_their_sampling_and_scoring_facts():
    """What callers used to read off the objective's name: steps, scoring, key padding."""
    from sunfish_lib.sampling.autoregressive import ARSampler
    from sunfish_lib.sampling.continuous import ContinuousSampler
    from sunfish_lib.sampling.masked import MaskedSampler

    iterative = {n: c.iterative for n, c in OBJECTIVE_CLASSES.items()}
    assert iterative == {"continuous": True, "masked": True, "ar": False, "block": True}
    likelihood = {n: c.likelihood for n, c in OBJECTIVE_CLASSES.items()}
    assert likelihood == {"continuous": True, "masked": True, "ar": True, "block": True}
    assert all(hasattr(c, "continuation_score") == c.likelihood for c in OBJECTIVE_CLASSES.values())
    assert objective_class("masked").sampling_steps(64, 16) == 16  # a step unmasks >= 1 of 16 tokens
    assert objective_class("masked").sampling_steps(8, 16) == 8
    assert objective_class("continuous").sampling_steps(64, 16) == 64
    assert (MaskedSampler.key_padding, ContinuousSampler.key_padding, ARSampler.key_padding) == (True, False, False)


def test_the_diffusion_objectives_share_loss_at_and_ar_has_none():
    """One `loss_at(model, batch, t, generator)`: t (B,) in (0, 1] for both diffusion objectives."""
    params = {name: list(inspect.signature(cls.loss_at).parameters) for name, cls in OBJECTIVE_CLASSES.items()
              if hasattr(cls, "loss_at")}
    assert params == {"masked": ["self", "model", "batch", "t", "generator"],
                      "continuous": ["self", "model", "batch", "t", "generator"],
                      "block": ["self", "model", "batch", "t", "generator"]}
    assert [n for n in DiffusionObjective.__dict__ if not n.startswith("_")] == ["loss_at"]


def test_from_config_builds_what_the_objective_needs_and_a_bare_unresolved_config_is_refused():
    cont = Backbone.from_config(get_config("tiny", {**SHAPE, "objective": "continuous", "self_conditioning": True}))
    assert cont.time_emb is not None and cont.self_cond_proj is not None and not cont.cfg.causal
    ar = Backbone.from_config(get_config("tiny", {**SHAPE, "objective": "ar"}))
    assert ar.cfg.causal and ar.time_emb is None
    with pytest.raises(ValueError, match=r"model.d_ff is None \(an unresolved ModelConfig\); build with Backbone"):
        Backbone(ModelConfig(vocab_size=64, n_layers=1, n_heads=2, d_model=32, max_seq_len=16))


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_evaluate_reports_what_the_objective_computes(objective):
    """evaluate_likelihood only aggregates: its mean is the token-weighted mean of `sequence_nats`."""
    cfg = get_config("tiny", {**SHAPE, "objective": objective})
    torch.manual_seed(0)
    model = Backbone.from_config(cfg).eval()
    obj = build_objective(cfg, mask_token_id=1, eos_token_id=0)
    batch = {"input_ids": torch.randint(3, 64, (3, 16)), "attention_mask": torch.ones(3, 16, dtype=torch.long)}
    batch["attention_mask"][2, 10:] = 0
    res = evaluate_likelihood(model, obj, [batch], t_samples=4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        per_seq = obj.sequence_nats(model, batch, 4, torch.Generator().manual_seed(0))
    w = obj.scored(batch).sum(1).double()
    assert per_seq.shape == (3,) and res.kind == obj.kind and res.t_samples == obj.t_draws(4)
    assert res.nats_per_token == pytest.approx(float((per_seq * w).sum() / w.sum()), rel=1e-9)
    assert res.tokens == int(w.sum()) == 16 + 16 + 10  # every real token, the same set for all three
