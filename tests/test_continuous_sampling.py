"""Continuous diffusion on a small random backbone: objective, self-conditioning, samplers, infilling, errors."""

import math

import pytest
import torch

from sunfish_lib.diffusion.continuous import PLAIN_RECIPE, score_interpolation
from sunfish_lib.config import ConfigError, DiffusionConfig, ModelConfig, get_config
from sunfish_lib.diffusion import ContinuousDiffusion, build_objective
from sunfish_lib.diffusion.analysis import loss_by_t
from sunfish_lib.diffusion.continuous_bound import bound_terms
from sunfish_lib.diffusion.schedules import NoiseSchedule
from sunfish_lib.errors import SunfishError
from sunfish_lib.eval.evaluate import evaluate_likelihood
from sunfish_lib.model import Backbone
from sunfish_lib.sampling import ContinuousSampler, Trajectory, expand_masks, mask_spans, template_ids
from sunfish_lib.sampling import continuous as continuous_sampling
from sunfish_lib.sampling.noise import RowNoise

V, MASK, PAD = 40, 1, 2


def _model(self_cond=False, emb=8, **kw):
    torch.manual_seed(0)
    cfg = ModelConfig(vocab_size=V, n_layers=1, n_heads=2, d_model=16, embed_dim=emb, max_seq_len=32,
                      time_conditioning=True, causal=False, self_cond_input=self_cond, time_freq_dim=16, **kw)
    return Backbone(cfg.resolve("continuous"))


PLAIN = PLAIN_RECIPE
"""The plain Diffusion-LM recipe these mechanics tests were written for (the default is CDCD's since #26)."""


def _objective(**kw):
    return ContinuousDiffusion(DiffusionConfig(num_timesteps=kw.pop("T", 100), **{**PLAIN, **kw}))


# -- objective --------------------------------------------------------------------------

@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_build_objective_and_loss_terms(loss):
    """mse (Diffusion-LM): MSE + rounding CE + prior; ce (CDCD, the default, with its normalised embeddings): the token
    cross-entropy + prior."""
    cfg = get_config("tiny", {"num_timesteps": 100, "n_layers": 1, "d_model": 32, "n_heads": 2,
                              "continuous_loss": loss, "embed_norm": loss == "ce", "time_warping": False})
    obj = build_objective(cfg)
    assert isinstance(obj, ContinuousDiffusion) and obj.name == "continuous"
    model = Backbone.from_config(cfg)
    ids = torch.randint(3, 200, (8, 12))
    out = obj.loss(model, {"input_ids": ids}, torch.Generator().manual_seed(0))
    terms = out["rounding_ce"] + out["prior"] + (out["mse"] if loss == "mse" else 0)
    assert out["loss"].item() == pytest.approx(terms.item(), rel=1e-5)
    assert out["t"].shape == (8,) and out["mse_per_seq"].shape == (8,)
    # stratified t: two rows per quarter of (0, 1], so all four buckets are reported
    assert sorted(k for k in out if k.startswith("mse/")) == ["mse/t0.00-0.25", "mse/t0.25-0.50",
                                                              "mse/t0.50-0.75", "mse/t0.75-1.00"]
    assert (out["t"] * 4).floor().long().bincount().tolist() == [2, 2, 2, 2]
    assert 0 < out["prior"].item() < 1e-3  # alpha_bar_T of sqrt is ~0: the prior KL is small but present
    if loss == "ce":  # score interpolation: x0_hat is the expectation of the embedding under the token logits
        table = obj.embedding_table(model)
        x_t = torch.randn(2, 5, table.shape[1])
        k = torch.tensor([10, 90])
        out_vec, x0_hat, logits = obj.forward(model, x_t, k, table)
        assert torch.allclose(x0_hat, logits.softmax(-1) @ table, atol=1e-5) and torch.equal(out_vec, x0_hat)
        assert torch.allclose(table.norm(dim=-1), torch.full((table.shape[0],), table.shape[1] ** 0.5))
    out["loss"].backward()
    assert model.tok_emb.weight.grad.abs().sum() > 0  # embeddings learn jointly (end to end)


@pytest.mark.parametrize("prediction", ["eps", "v", "x0"])
def test_loss_target_matches_parameterisation(prediction):
    """A model that outputs exactly the target has zero MSE (checks noise, target and input plumbing)."""
    model, obj = _model(), _objective(prediction=prediction)
    ids = torch.randint(3, V, (4, 6))
    k = torch.tensor([0, 30, 60, 99])

    def oracle(self_, m, x_t, k_, table, **kw):  # x_t -> exact target given the known x0
        ab = self_.schedule.coef("alpha_bar", k_, x_t)
        x0 = self_.x0_of(m, ids, table)
        eps = (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()
        return {"x0": x0, "eps": eps, "v": ab.sqrt() * eps - (1 - ab).sqrt() * x0}[prediction]

    obj.model_output = oracle.__get__(obj)
    out = obj.loss_at(model, {"input_ids": ids}, obj.schedule.model_time(k), torch.Generator().manual_seed(1))
    assert out["mse"].item() < 1e-8
    assert out["rounding_acc"].item() == 1.0  # the exact x0 rounds to the right tokens


def test_step_of_inverts_model_time_and_takes_a_time_to_its_nearest_step():
    for T in (1, 7, 100, 1000, 4000):
        sched = NoiseSchedule("sqrt", T)
        k = torch.arange(T)
        assert torch.equal(sched.step_of(sched.model_time(k)), k)  # float32 times
        assert torch.equal(sched.step_of((k.double() + 1) / T), k)  # float64 times
    sched = NoiseSchedule("sqrt", 100)
    t = torch.tensor([0.0, 1e-9, 0.004, 0.006, 0.104, 0.106, 1.0, 1.5])
    assert sched.step_of(t).tolist() == [0, 0, 0, 0, 9, 10, 99, 99]


def test_loss_at_a_time_is_the_loss_at_its_step_and_loss_is_loss_at_its_drawn_times():
    """loss_at(t = (k + 1) / T) is bit-identical to the per-step path it replaced, and training's loss
    is loss_at at the stratified steps it draws from the same generator."""
    model, obj = _model(), _objective()
    model.eval()  # no dropout: both paths see the same network
    batch = {"input_ids": torch.randint(3, V, (4, 6))}
    k = torch.tensor([0, 30, 60, 99])
    with torch.no_grad():
        by_step = obj._loss_at_step(model, batch, k, torch.Generator().manual_seed(1))
        by_time = obj.loss_at(model, batch, obj.schedule.model_time(k), torch.Generator().manual_seed(1))
        trained = obj.loss(model, batch, torch.Generator().manual_seed(5))
        g = torch.Generator().manual_seed(5)
        drawn = obj.sample_steps(4, "cpu", g)
        again = obj.loss_at(model, batch, obj.schedule.model_time(drawn), g)
    for a, b in ((by_step, by_time), (trained, again)):
        assert sorted(a) == sorted(b)
        assert all(torch.equal(a[key], b[key]) for key in a), [key for key in a if not torch.equal(a[key], b[key])]
    assert torch.equal(by_time["t"], obj.schedule.model_time(k))


def test_loss_by_t_takes_each_t_to_its_step():
    model, obj = _model(), _objective()
    batch = {"input_ids": torch.randint(3, V, (2, 6))}
    res = loss_by_t(obj, model, [batch], [0.104, 0.5], seed=3)
    assert res["t"] == [0.1, 0.5]
    model.eval()
    with torch.no_grad():
        want = obj._loss_at_step(model, batch, torch.full((2,), 9), torch.Generator().manual_seed(3))
    assert res["mse"][0] == want["mse"].item() and res["rounding_ce"][0] == want["rounding_ce"].item()


def test_padding_is_ignored():
    model, obj = _model(), _objective()
    ids = torch.randint(3, V, (2, 8))
    am = torch.ones(2, 8, dtype=torch.long)
    am[:, 6:] = 0
    other = ids.clone()
    other[:, 6:] = 5
    t = torch.tensor([0.11, 0.51])  # steps 10 and 50 of T = 100
    a = obj.loss_at(model, {"input_ids": ids, "attention_mask": am}, t, torch.Generator().manual_seed(2))
    b = obj.loss_at(model, {"input_ids": other, "attention_mask": am}, t, torch.Generator().manual_seed(2))
    assert a["loss"].item() == pytest.approx(b["loss"].item(), rel=1e-6)


def test_embed_norm_rows_have_norm_sqrt_e():
    model, obj = _model(), _objective(embed_norm=True)
    norms = obj.embedding_table(model).norm(dim=-1)
    assert torch.allclose(norms, torch.full_like(norms, math.sqrt(8)), atol=1e-5)
    raw = _objective().embedding_table(model)
    assert raw.pow(2).mean().sqrt().item() == pytest.approx(1.0, rel=0.1)  # EMB / init_std ~ N(0, 1)


def test_input_is_unit_variance_at_every_t():
    model, obj = _model(emb=64), _objective(T=1000)
    table = obj.embedding_table(model)
    ids = torch.randint(0, V, (1, 4000))
    x0 = obj.x0_of(model, ids, table)
    for k in (0, 300, 999):
        kk = torch.tensor([k])
        x_t = obj.schedule.q_sample(x0, kk, torch.randn(x0.shape))
        assert (x_t * obj.input_scale(kk, table, x_t)).var().item() == pytest.approx(1.0, rel=0.05)


# -- self-conditioning ---------------------------------------------------------------------

def test_self_conditioning_option():
    cfg = get_config("tiny", {"self_conditioning": True})
    assert cfg.resolved_model.self_cond_input is True
    assert get_config("tiny").resolved_model.self_cond_input is True  # the default recipe (CDCD) self-conditions
    assert get_config("tiny", self_conditioning=False).resolved_model.self_cond_input is False
    assert get_config("tiny", objective="masked", sampler="random", self_conditioning=True).resolved_model.self_cond_input is False
    with pytest.raises(ConfigError, match="model.self_cond_input=False"):
        get_config("tiny", {"self_conditioning": True, "self_cond_input": False})
    plain, sc = _model(), _model(self_cond=True)
    assert sc.num_params() - plain.num_params() == 8 * 16  # one Linear embed_dim -> d_model, no bias
    assert sc.self_cond_proj.weight.abs().sum().item() == 0.0  # zero-init: a no-op at init
    x, t = torch.randn(2, 5, 8), torch.rand(2)
    sc.load_state_dict({**plain.state_dict(), "self_cond_proj.weight": sc.self_cond_proj.weight}, strict=True)
    assert torch.allclose(sc.encode(vectors=x, t=t, self_cond=torch.randn(2, 5, 8)), plain.encode(vectors=x, t=t))
    with pytest.raises(ValueError, match="self_cond_input"):
        plain.encode(vectors=x, t=t, self_cond=x)


def test_self_conditioning_trains_the_projection():
    model, obj = _model(self_cond=True), _objective(self_conditioning=True)
    model.self_cond_proj.weight.data.normal_(0, 0.1)
    out = obj.loss(model, {"input_ids": torch.randint(3, V, (8, 6))}, torch.Generator().manual_seed(3))
    out["loss"].backward()
    assert model.self_cond_proj.weight.grad.abs().sum().item() > 0


# -- sampling -------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,steps,clamp", [("ddim", 10, False), ("ddpm", 25, False), ("ddim", 7, True)])
def test_infilling_keeps_every_prompt_token(kind, steps, clamp):
    model, obj = _model(), _objective()
    g = torch.Generator().manual_seed(4)
    prompt = torch.randint(3, V, (3, 20), generator=g)
    x = mask_spans(prompt, [2, 11], 4, MASK)
    x[2, 17:] = MASK
    sampler = ContinuousSampler(model, obj, kind=kind, steps=steps, clamp=clamp, mask_id=MASK, exclude_ids=[PAD])
    out = sampler.generate(x, noise=RowNoise(4))
    known = x != MASK
    assert torch.equal(out[known], prompt[known])
    assert not ((out == MASK) | (out == PAD)).any()  # never emits excluded ids
    assert sampler.forward_passes == steps


def test_held_positions_follow_the_forward_marginal():
    """Known positions are reset to a fresh draw of q(x_s | x_0) after every step (and to x_0 at the end)."""
    model, obj = _model(), _objective()
    sampler = ContinuousSampler(model, obj, steps=5, mask_id=MASK)
    x0 = torch.full((1, 20000, 8), 2.0)
    known = torch.ones(1, 20000, dtype=torch.bool)
    held = sampler._hold(torch.zeros_like(x0), x0, known, 40, RowNoise(5))
    ab = obj.schedule.alpha_bar[40].item()
    assert held.mean().item() == pytest.approx(2 * math.sqrt(ab), abs=0.01)
    assert held.var().item() == pytest.approx(1 - ab, rel=0.02)
    assert torch.equal(sampler._hold(torch.zeros_like(x0), x0, known, -1, None), x0)


def test_unconditional_deterministic_and_trajectory(monkeypatch):
    model, obj = _model(), _objective()
    sampler = ContinuousSampler(model, obj, kind="ddim", steps=6, eta=0.0, mask_id=MASK)
    calls = []
    real = continuous_sampling.nearest_tokens
    monkeypatch.setattr(continuous_sampling, "nearest_tokens", lambda *a, **k: calls.append(1) or real(*a, **k))
    a = sampler.sample(2, 9, noise=RowNoise(6))
    assert len(calls) == 1  # trajectory off: only the final rounding, nothing per step
    b = sampler.sample(2, 9, noise=RowNoise(6))
    assert a.shape == (2, 9) and torch.equal(a, b)
    traj = Trajectory(sampler="ddim")
    c = sampler.sample(2, 9, noise=RowNoise(6), trajectory=traj)
    assert torch.equal(a, c) and len(traj) == 6 and traj.fields() == ["distance", "entropy", "tokens"]
    assert traj.stack("tokens").shape == (6, 2, 9) and traj.stack("distance").shape == (6, 2, 9)
    assert traj.times == sorted(traj.times, reverse=True) and traj.times[0] == 1.0
    # at the last step pred_x0 is the final sample: its rounding is the output
    assert torch.equal(traj.stack("tokens")[-1], a)


def test_clamping_snaps_every_prediction_to_an_embedding():
    model, obj = _model(), _objective()
    traj = Trajectory()
    ContinuousSampler(model, obj, steps=5, clamp=True, rounding="euclidean").sample(
        2, 6, noise=RowNoise(7), trajectory=traj)
    assert traj.stack("distance").abs().max().item() < 1e-5
    traj2 = Trajectory()
    ContinuousSampler(model, obj, steps=5, clamp=False).sample(2, 6, noise=RowNoise(7),
                                                               trajectory=traj2)
    assert traj2.stack("distance").min().item() > 1e-3


def test_self_conditioned_sampling_feeds_previous_estimate():
    model, obj = _model(self_cond=True), _objective(self_conditioning=True)
    seen = []
    real = model.encode
    model.encode = lambda *a, **k: seen.append(k.get("self_cond")) or real(*a, **k)
    ContinuousSampler(model, obj, steps=3).sample(1, 4, noise=RowNoise(8))
    assert seen[0] is None and all(s is not None and s.shape == (1, 4, 8) for s in seen[1:]) and len(seen) == 3


def test_temperature_tempers_the_score_interpolation():
    """x0_hat = softmax(logits / temperature) @ table: 1 is CDCD's expectation, 0 the argmax token's embedding, and
    the expectation moves toward it as the temperature falls."""
    g = torch.Generator().manual_seed(0)
    logits, table = torch.randn(3, 5, V, generator=g) * 2, torch.randn(V, 8, generator=g)
    assert torch.allclose(score_interpolation(logits, table), logits.softmax(-1) @ table, atol=1e-6)
    top = table[logits.argmax(-1)]
    assert torch.equal(score_interpolation(logits, table, 0.0), top)
    gaps = [(score_interpolation(logits, table, t) - top).pow(2).sum(-1) for t in (2.0, 1.0, 0.5, 0.2, 1e-3)]
    means = [float(d.mean()) for d in gaps]
    assert means == sorted(means, reverse=True) and means[0] > 1.0 and gaps[-1].max() < 1e-3


def test_sampling_temperature_reaches_the_chain_of_a_ce_model_only():
    model, obj = _model(), _objective(continuous_loss="ce")
    table = obj.embedding_table(model).detach()
    x, k = torch.randn(2, 8, table.shape[1]), torch.tensor([50, 90])
    _, x0 = obj.predict(model, x, k, table, temperature=0.0)
    assert torch.cdist(x0.view(-1, table.shape[1]), table).min(1).values.max() < 1e-5  # every x0_hat a table row
    default, argmax = (ContinuousSampler(model, obj, steps=6, **kw).sample(2, 8, noise=RowNoise(3))
                       for kw in ({}, {"temperature": 0.0}))
    assert torch.equal(default, ContinuousSampler(model, obj, steps=6, temperature=1.0).sample(2, 8, noise=RowNoise(3)))
    assert not torch.equal(default, argmax)
    with pytest.raises(SunfishError, match=r"sample.temperature=0.7 tempers .* leave it at 1") as e:
        ContinuousSampler(model, _objective(), temperature=0.7)  # mse: x0 predicted, no p(w | x_t)
    assert "\n" not in str(e.value)


# -- errors -----------------------------------------------------------------------------------

def test_bad_input_errors_are_one_line():
    model, obj = _model(), _objective(T=100)
    cases = [
        (lambda: ContinuousSampler(model, obj, steps=0), "sample.steps=0 must be > 0"),
        (lambda: ContinuousSampler(model, obj, kind="ddim", steps=101), "exceeds diffusion.num_timesteps=100"),
        (lambda: ContinuousSampler(model, obj, kind="ddpm", steps=200), "exceeds diffusion.num_timesteps=100"),
        (lambda: ContinuousSampler(model, obj, kind="euler"), "choose one of ddpm, ddim"),
        (lambda: ContinuousSampler(model, obj, eta=-1.0), "sample.eta=-1.0 must be >= 0"),
        (lambda: ContinuousSampler(model, obj, rounding="manhattan"), "cosine, euclidean"),
        (lambda: NoiseSchedule("quadratic", 10), "diffusion.schedule='quadratic' is not allowed"),
        (lambda: ContinuousSampler(model, obj, mask_id=MASK).generate(torch.randint(3, V, (1, 5))), "without [MASK]"),
        (lambda: ContinuousSampler(model, obj).generate(torch.full((1, 5), MASK)), "needs the tokenizer's [MASK] id"),
        (lambda: expand_masks([5, MASK, 6], MASK, 0), "sample.mask_length=0 must be an integer >= 1"),
        (lambda: expand_masks([5, 6], MASK, 3), "no [MASK]"),
        (lambda: expand_masks([5, MASK, 6], MASK, 40, max_len=32), "past the sequence limit 32"),
        (lambda: mask_spans(torch.zeros(1, 10, dtype=torch.long), [8], 4, MASK), "runs past the sequence of 10"),
        (lambda: ContinuousSampler(model, obj).sample(0, 5), "num_samples=0"),
    ]
    for fn, msg in cases:
        with pytest.raises(SunfishError) as e:
            fn()
        assert msg in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="diffusion.schedule='quadratic' is not allowed"):
        get_config("tiny", schedule="quadratic")
    with pytest.raises(ConfigError, match="sample.steps=2000 exceeds diffusion.num_timesteps=1000"):
        get_config("tiny", steps=2000)


def test_infill_templates():
    assert expand_masks([5, MASK, 6, MASK], MASK, 2).tolist() == [[5, MASK, MASK, 6, MASK, MASK]]
    assert mask_spans(torch.arange(10)[None], [0, 6], 3, 99).tolist() == [[99, 99, 99, 3, 4, 5, 99, 99, 99, 9]]

    class Tok:
        mask_token, mask_token_id = "[MASK]", MASK

        def encode(self, text):
            return [10 + len(w) for w in text.split()]

    assert template_ids(Tok(), "to be [MASK] not", 3).tolist() == [[12, 12, MASK, MASK, MASK, 13]]


# -- evaluation -------------------------------------------------------------------------------

def test_evaluate_reports_the_variational_bound():
    """The table's continuous figure is the chain's bound (`continuous_bound`), labelled an upper bound."""
    model, obj = _model(), _objective(T=100)
    batches = [{"input_ids": torch.randint(3, V, (4, 6))} for _ in range(2)]
    res = evaluate_likelihood(model, obj, batches, t_samples=4, generator=torch.Generator().manual_seed(9))
    assert res.kind == "ELBO upper bound" and res.is_likelihood and res.t_samples == 4
    g = torch.Generator().manual_seed(9)
    model.eval()
    manual = torch.cat([bound_terms(obj, model, b, 4, g)["bound"] for b in batches]).mean().item()
    assert res.nats_per_token == pytest.approx(manual, rel=1e-6)
    assert res.nats_per_token > 0 and res.stderr > 0
