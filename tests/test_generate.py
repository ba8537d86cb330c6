"""The one generation entry point (`session.sample`): every objective, uncond and infill, errors; periodic samples in training."""

import pytest
import torch

from sunfish_lib.config import DEFAULT_SAMPLERS
from sunfish_lib.errors import SunfishError
from sunfish_lib.model import Backbone
from sunfish_lib.sampling.generate import initial_ids
from sunfish_lib.sampling.session import Loaded, sample, training_samples
from sunfish_lib.train.trainer import train
from tests.train_helpers import small_config


def _model(cfg):
    torch.manual_seed(0)
    return Backbone.from_config(cfg).eval()


@pytest.mark.parametrize("objective,sampler", [("masked", "low_confidence"), ("masked", "ancestral"),
                                               ("continuous", "ddim"), ("ar", "ar")])
def test_uncond_and_prefix_every_objective(tok, objective, sampler):
    cfg = small_config(objective, sampler=sampler, steps=4)
    model = _model(cfg)
    g = sample(Loaded(model, cfg, tok), mode="uncond", prompt="ROMEO:", num_samples=2, length=6, seed=1, record=True)
    prefix = tok.encode("ROMEO:")
    assert g.ids.shape == (2, len(prefix) + 6)
    assert (g.ids != tok.mask_token_id).all()
    assert g.ids[:, :len(prefix)].tolist() == [prefix, prefix]
    assert len(g.texts) == 2 and all(t.startswith("ROMEO:") for t in g.texts)
    assert len(g.trajectory) >= 1 and g.forward_passes >= 1
    again = sample(Loaded(model, cfg, tok), mode="uncond", prompt="ROMEO:", num_samples=2, length=6, seed=1)
    assert torch.equal(again.ids, g.ids)  # same seed, same samples


@pytest.mark.parametrize("objective", ["masked", "continuous"])
def test_infill_keeps_prompt(tok, objective):
    cfg = small_config(objective, steps=4)
    model = _model(cfg)
    g = sample(Loaded(model, cfg, tok), mode="infill", prompt="To be [MASK] not to be", mask_length=3, num_samples=2)
    keep = g.start != tok.mask_token_id
    assert (g.start == tok.mask_token_id).sum(1).tolist() == [3, 3]
    assert torch.equal(g.ids[keep], g.start[keep]) and (g.ids != tok.mask_token_id).all()


def test_generation_errors(tok):
    cfg = small_config("masked")
    model = _model(cfg)
    with pytest.raises(SunfishError, match="infill mode needs a prompt with \\[MASK\\]"):
        sample(Loaded(model, cfg, tok), mode="infill", prompt="no mask here")
    with pytest.raises(SunfishError, match="sampler='ddim' does not fit objective 'masked'"):
        sample(Loaded(model, cfg, tok), sampler="ddim")
    with pytest.raises(SunfishError, match="past the model's limit 256"):
        sample(Loaded(model, cfg, tok), prompt="ROMEO: " * 20, length=250)
    with pytest.raises(SunfishError, match="mode='sideways' is not allowed"):
        initial_ids(tok, mode="sideways", length=3, mask_length=1, num_samples=1, max_len=10)
    ar = small_config("ar")
    with pytest.raises(SunfishError, match="only continues a prefix"):
        sample(Loaded(_model(ar), ar, tok), mode="infill", prompt="a [MASK] b", mask_length=2)


def test_periodic_samples_written_during_training(tmp_path):
    cfg = small_config("masked", sample_every=3, steps=4)
    with pytest.raises(SunfishError, match="train.sample_every=3 needs a sample function"):
        train(cfg, tmp_path / "no-fn", progress=False)  # training sits below sampling: the caller brings it
    train(cfg, tmp_path, progress=False, sample_fn=training_samples)
    files = sorted((tmp_path / "samples").glob("step_*.txt"))
    assert [f.name for f in files] == ["step_000003.txt", "step_000006.txt"]
    text = files[-1].read_text()
    assert text.startswith(f"step 6, sampler {DEFAULT_SAMPLERS['masked']}") and text.count("--- sample") == 2
