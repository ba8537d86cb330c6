"""Issue 14.5/14.6: MFU counts the FLOPs a step executes, against the peak of the arithmetic that runs."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from sunfish_lib.diffusion import build_objective
from sunfish_lib.diffusion.continuous import CDCD_RECIPE, PLAIN_RECIPE
from sunfish_lib.sizing.counts import executed_flops_per_token, expected_mask_fraction, flops_per_token
from sunfish_lib.sizing.estimate import config_for
from sunfish_lib.model import Backbone
from sunfish_lib.train.callbacks import ThroughputMonitor, gpu_peak_flops

SHAPE = {"n_layers": 2, "d_model": 64, "n_heads": 4, "vocab_size": 512, "bpe_vocab_size": 300}


def _count(fn) -> int:
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn().backward()
    return counter.get_total_flops()


def test_mfu_counts_the_masked_head_only_at_masked_positions():
    B, T = 8, 250
    cfg = config_for("tiny", "masked", {**SHAPE, "seq_len": T, "micro_batch_size": B})
    model = Backbone.from_config(cfg)
    obj = build_objective(cfg, mask_token_id=511)
    x0 = torch.randint(0, 511, (B, T))
    frac = expected_mask_fraction(cfg)
    masked = torch.zeros(B * T, dtype=torch.bool)
    masked[torch.randperm(B * T)[: round(frac * B * T)]] = True  # exactly the expected fraction: 1001 of 2000
    masked = masked.view(B, T)
    z = torch.where(masked, 511, x0)
    measured = _count(lambda: obj.masked_nll(model, z, torch.full((B,), 0.5), {"input_ids": x0}, masked).mean())
    monitor = ThroughputMonitor(cfg).flops_per_token  # what perf/mfu multiplies tokens/s by
    assert monitor * B * T == pytest.approx(measured, rel=1e-9)
    assert flops_per_token(cfg, T) / monitor > 1.05  # the nominal count (head everywhere) overstated the work


RECIPES = {"plain": PLAIN_RECIPE, "cdcd": CDCD_RECIPE,
           "cdcd-untied": {**CDCD_RECIPE, "tie_embeddings": False},  # lm_head makes the logits; out_proj idles
           "ce-no-sc": {**CDCD_RECIPE, "self_conditioning": False, "own_evidence": False}}


@pytest.mark.parametrize("recipe", RECIPES)
def test_mfu_counts_each_continuous_recipes_executed_work(recipe):
    """The estimate equals torch's FLOP count of one training loss + backward, with and without self-conditioning:
    CDCD's logits, its forward-only x0_hat = softmax @ table, own evidence and the gradient-free first pass."""
    B, T = 4, 32
    per_token = {}
    for self_cond in (False, True):
        cfg = config_for("tiny", "continuous", {**SHAPE, "seq_len": T, "micro_batch_size": B, "embed_dim": 16,
                                                **RECIPES[recipe], "self_conditioning": self_cond})
        torch.manual_seed(0)
        model = Backbone.from_config(cfg).train()
        obj = build_objective(cfg)
        batch = {"input_ids": torch.randint(0, 500, (B, T))}
        measured = _count(lambda: obj.loss(model, batch, torch.Generator().manual_seed(0))["loss"])
        per_token[self_cond] = ThroughputMonitor(cfg).flops_per_token
        assert per_token[self_cond] * B * T == pytest.approx(measured, rel=1e-9)
    assert per_token[True] / per_token[False] > 1.2  # the extra forward is a third of a step's work, or more


def test_cdcd_counts_its_readouts_beyond_plain():
    """At embed_dim 16, V 512 (tied), CDCD with own evidence runs 2 V e (x0_hat) + 6 V e (evidence) more per token
    than plain on the main pass, and its first pass adds the logits, x0_hat and evidence forwards (3 x 2 V e)."""
    over = {**SHAPE, "seq_len": 32, "micro_batch_size": 4, "embed_dim": 16, "self_conditioning": False}
    Ve = 512 * 16
    plain = executed_flops_per_token(config_for("tiny", "continuous", {**over, **PLAIN_RECIPE, "self_conditioning": False}))
    cdcd = executed_flops_per_token(config_for("tiny", "continuous", {**over, **CDCD_RECIPE, "self_conditioning": False}))
    assert cdcd - plain == 8 * Ve
    sc = {**over, "self_conditioning": True}
    gap = (executed_flops_per_token(config_for("tiny", "continuous", {**sc, **CDCD_RECIPE}))
           - executed_flops_per_token(config_for("tiny", "continuous", {**PLAIN_RECIPE, **sc})))
    assert gap == 8 * Ve + 6 * Ve


def test_fp32_runs_are_measured_against_the_fp32_peak_unless_tf32_is_on():
    assert gpu_peak_flops("NVIDIA H200", "32-true", "highest") == (67e12, "datasheet H200 fp32 (TF32 off)")
    assert gpu_peak_flops("NVIDIA H200", "32-true", "high")[0] == 989e12 / 2
    assert gpu_peak_flops("NVIDIA A100-SXM4-80GB", "bf16-mixed", "highest")[0] == 312e12
    assert torch.get_float32_matmul_precision() == "highest"  # nothing in Sunfish turns TF32 on
