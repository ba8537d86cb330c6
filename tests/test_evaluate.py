import math

import pytest
import torch

from sunfish_lib.config import DiffusionConfig, ModelConfig
from sunfish_lib.diffusion import Autoregressive, MaskedDiffusion
from sunfish_lib.eval.evaluate import evaluate_likelihood
from sunfish_lib.model import Backbone
from tests.test_objectives import MASK, ToyConditional, _closed_form_elbo, _dirichlet


def test_ar_exact_nll_and_units():
    """The AR row of the table scores every token after its EOS-as-BOS; bytes are those of the scored tokens."""
    torch.manual_seed(0)
    m = Backbone(ModelConfig(vocab_size=30, n_layers=1, n_heads=2, d_model=16, max_seq_len=16,
                             causal=True, time_conditioning=False).resolve("masked"))
    batches = [{"input_ids": torch.randint(0, 29, (4, 9))} for _ in range(3)]
    ar = Autoregressive(bos_token_id=29)
    res = evaluate_likelihood(m, ar, batches, token_bytes=[2] * 30)
    with torch.no_grad():
        manual = torch.cat([ar.loss(m, b)["nll_per_seq"] for b in batches]).mean().item()
    assert res.kind == "exact NLL" and res.tokens == 3 * 4 * 9 and res.sequences == 12
    assert res.nats_per_token == pytest.approx(manual, rel=1e-6)
    assert res.perplexity == pytest.approx(math.exp(manual))
    assert res.bits_per_byte == pytest.approx(manual * 108 / math.log(2) / (3 * 4 * 9 * 2))
    assert res.stderr > 0


def test_masked_elbo_estimate_within_error_of_closed_form():
    joint = _dirichlet(torch.Generator().manual_seed(5))
    model = ToyConditional(joint, ignore_context=True)  # an imperfect model: bound strictly above the NLL
    obj = MaskedDiffusion(DiffusionConfig(objective="masked", t_min=1e-6), mask_token_id=MASK)
    x = model.all_x[:6]  # six sequences
    closed = torch.tensor([_closed_form_elbo(model, xi) for xi in x]).mean().item()
    nll = (-torch.log(joint[:6]) / 3).mean().item()
    res = evaluate_likelihood(model, obj, [{"input_ids": x}], t_samples=4000,
                              generator=torch.Generator().manual_seed(0))
    assert res.kind == "ELBO upper bound" and res.t_samples == 4000
    # the MC error over t is tiny at 4000 draws; the reported SE also covers spread across sequences
    assert abs(res.nats_per_token - closed) < 0.02
    assert res.nats_per_token > nll


@pytest.mark.slow
def test_evaluate_run_cli_on_trained_runs(tmp_path, capsys):
    import json

    from sunfish_lib.cli import main
    from sunfish_lib.train.trainer import train
    from tests.train_helpers import small_config

    for objective in ("ar", "masked"):
        train(small_config(objective), tmp_path / objective, progress=False)
        assert main(["evaluate", str(tmp_path / objective), "--batches", "2", "--t-samples", "2", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["kind"] == {"ar": "exact NLL", "masked": "ELBO upper bound"}[objective]
        assert out["sequences"] == 8 and 3 < out["nats_per_token"] < 12
        assert out["bits_per_byte"] > 0 and out["perplexity"] == pytest.approx(math.exp(out["nats_per_token"]))
    assert main(["evaluate", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
