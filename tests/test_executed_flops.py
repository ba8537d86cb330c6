"""Issue 14.5/14.6: MFU counts the FLOPs a step executes, against the peak of the arithmetic that runs."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from sunfish_lib.diffusion import build_objective
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


def test_mfu_counts_self_conditionings_extra_forward():
    B, T = 4, 32
    for self_cond in (False, True):
        cfg = config_for("tiny", "continuous", {**SHAPE, "seq_len": T, "micro_batch_size": B,
                                                "self_conditioning": self_cond, "embed_dim": 16})
        torch.manual_seed(0)
        model = Backbone.from_config(cfg).train()
        obj = build_objective(cfg)
        batch = {"input_ids": torch.randint(0, 500, (B, T))}
        measured = _count(lambda: obj.loss(model, batch, torch.Generator().manual_seed(0))["loss"])
        assert ThroughputMonitor(cfg).flops_per_token * B * T == pytest.approx(measured, rel=1e-9)
        if self_cond:
            assert executed_flops_per_token(cfg, T) / flops_per_token(cfg, T) > 1.2


def test_fp32_runs_are_measured_against_the_fp32_peak_unless_tf32_is_on():
    assert gpu_peak_flops("NVIDIA H200", "32-true", "highest") == (67e12, "datasheet H200 fp32 (TF32 off)")
    assert gpu_peak_flops("NVIDIA H200", "32-true", "high")[0] == 989e12 / 2
    assert gpu_peak_flops("NVIDIA A100-SXM4-80GB", "bf16-mixed", "highest")[0] == 312e12
    assert torch.get_float32_matmul_precision() == "highest"  # nothing in Sunfish turns TF32 on
