"""Estimator: exact parameter counts, FLOPs vs a measured count, memory model, verdicts, errors, CLI."""

import json
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from sunfish_lib.config import PRESETS, ModelConfig
from sunfish_lib.errors import ConfigError
from sunfish_lib.sizing.counts import built_params, checkpoint_bytes, flops_breakdown, flops_per_token, matmul_params, num_params, param_counts
from sunfish_lib.sizing.estimate import advise, config_for, estimate_memory, make_setup, needed_bytes, param_table, report, verdicts
from sunfish_lib.sizing.memory import GiB, activations, autocast_copies, block_activations
from sunfish_lib.model import Backbone
from tests.helpers import run_cli

OBJECTIVES = ("continuous", "masked", "ar")
VARIANTS = {
    "default": {},
    "embed64_bias_untied": {"embed_dim": 64, "bias": True, "tie_embeddings": False},
    "ff_time_freq": {"d_ff": 96, "time_freq_dim": 32, "max_seq_len": 128, "seq_len": 64},
}
if hasattr(ModelConfig, "self_cond_input"):
    VARIANTS["self_conditioning"] = {"self_conditioning": True}


# -- parameters -------------------------------------------------------------------------

CASES = [(p, o, v) for p in PRESETS for o in OBJECTIVES for v in VARIANTS
         if v != "self_conditioning" or o == "continuous"]  # self-conditioning is a continuous option


@pytest.mark.parametrize("preset, objective, variant", CASES, ids=["-".join(c) for c in CASES])
def test_param_count_equals_built_model(preset, objective, variant):
    overrides = dict(VARIANTS[variant])
    if preset != "tiny" and "seq_len" in overrides:
        overrides.update(max_seq_len=2048, seq_len=1024)
    cfg = config_for(preset, objective, overrides)
    with torch.device("meta"):
        model = Backbone.from_config(cfg)
    assert num_params(cfg) == sum(p.numel() for p in model.parameters()) == built_params(cfg)


def test_param_components_by_hand():
    m = ModelConfig(vocab_size=100, n_layers=2, n_heads=2, d_model=8, max_seq_len=16, time_conditioning=True,
                    time_freq_dim=4, causal=False)
    c = param_counts(m)
    assert c["token_embedding"] == 800 and c["position_embedding"] == 128
    assert c["attention"] == 2 * (8 * 24 + 8 * 8) and c["mlp"] == 2 * (8 * 32 + 32 * 8)
    assert c["block_norms"] == 2 * 2 * 8 and c["adaln_tables"] == 2 * 32 and c["final_norm"] == 8
    assert c["time_mlp"] == 4 * 8 + 8 * 8 and c["adaln_shared"] == 8 * 32 and c["lm_head"] == 0
    untied = param_counts(replace(m, tie_embeddings=False))
    assert untied["lm_head"] == 100 * 8
    table = param_table(m)
    assert table[-1] == {"component": "total", "params": num_params(m), "share": "100.0%"}
    assert all(r["params"] > 0 for r in table)  # components that do not exist are left out


def test_1p4b_matches_the_preset_shape():
    cfg = config_for("1.4B", "masked")
    m = cfg.resolved_model
    assert (m.n_layers, m.n_heads, m.d_model, cfg.data.seq_len) == (24, 16, 2048, 2048)
    # RoPE (the preset default) has no position table: 2048 x 2048 fewer than learned positions
    assert num_params(cfg) == built_params(cfg) == 1_315_276_800 - 2048 * 2048
    learned = config_for("1.4B", "masked", {"pos_encoding": "learned"})
    assert num_params(learned) == built_params(learned) == 1_315_276_800


# -- FLOPs ------------------------------------------------------------------------------

def _measured_flops(cfg, B, device="cpu"):
    """FlopCounterMode over forward + cross-entropy + backward, SDPA forced to the math kernel.

    The math kernel runs QK^T and AV as bmm (counted: 2 forward, 4 backward). Flash /
    memory-efficient backward also recomputes QK^T, which FlopCounterMode counts as a
    5th bmm; PaLM's model-FLOPs formula leaves that recomputation out, and so do we.
    """
    T = cfg.data.seq_len
    with torch.device(device):
        model = Backbone.from_config(cfg)
        tokens = torch.randint(0, cfg.model.vocab_size, (B, T))
        t = torch.rand(B) if cfg.resolved_model.time_conditioning else None
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        logits = model(tokens, t=t)
        F.cross_entropy(logits.flatten(0, 1), tokens.flatten()).backward()
    return counter.get_total_flops()


FLOP_CASES = [(o, v) for o in OBJECTIVES for v in ("default", "embed64_bias_untied", "self_conditioning")
              if v != "self_conditioning" or o == "continuous"]


@pytest.mark.parametrize("objective, variant", FLOP_CASES, ids=["-".join(c) for c in FLOP_CASES])
def test_flops_formula_equals_flop_counter(objective, variant):
    over = {"n_layers": 2, "d_model": 64, "n_heads": 4, "seq_len": 32, "micro_batch_size": 2, **VARIANTS[variant]}
    cfg = config_for("tiny", objective, over)
    B, T = 2, 32
    measured = _measured_flops(cfg, B)
    predicted = flops_per_token(cfg, T) * B * T
    # Every matmul FLOP is accounted for: the tolerance is only floating-point rounding.
    assert measured == pytest.approx(predicted, rel=1e-9)
    fb = flops_breakdown(cfg, T)
    m = cfg.resolved_model
    no_input_grad = 2 * m.embed_dim * 64 if m.self_cond_input else 0  # self_cond_proj's input needs no gradient
    assert fb["dense"] == 6 * matmul_params(cfg) - no_input_grad and fb["attention"] == 12 * 2 * T * 64
    assert (fb["time"] > 0) == (objective == "continuous")


def test_flops_on_meta_for_125m_shape():
    cfg = config_for("125M", "masked", {"seq_len": 256})
    assert _measured_flops(cfg, 1, device="meta") == pytest.approx(flops_per_token(cfg, 256) * 256, rel=1e-9)


def test_flops_attention_term_has_no_causal_discount():
    cfg = config_for("125M", "masked")
    a = flops_breakdown(cfg, 1024)["attention"]
    assert a == 6 * 2 * 12 * 1024 * 768
    assert flops_breakdown(cfg, 2048)["attention"] == 2 * a


# -- activations against the tensors autograd actually saves ---------------------------

@pytest.mark.parametrize("over", [{}, {"objective": "masked"}, {"dropout": 0.1}, {"embed_dim": 32, "bias": True},
                                  {"pos_encoding": "learned"}, {"pos_encoding": "learned", "dropout": 0.1}])
def test_activation_model_equals_saved_tensors(over):
    """Unique storages saved for backward (parameters excluded) == the estimator's activations + ids."""
    over = dict(over)
    objective = over.pop("objective", "continuous")
    cfg = config_for("tiny", objective, {"n_layers": 2, "d_model": 64, "n_heads": 4, "seq_len": 64,
                                         "micro_batch_size": 3, **over})
    model = Backbone.from_config(cfg).train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            saved[st.data_ptr()] = st.nbytes()
        return t

    B, T = 3, 64
    tokens = torch.randint(0, cfg.model.vocab_size, (B, T))
    t = torch.rand(B) if cfg.resolved_model.time_conditioning else None
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda x: x):
        model.logits(model.encode(tokens, t=t))
    s = make_setup(cfg, strategy="single", precision="32-true", device="cpu")
    # token ids (int64) kept by the token embedding lookup; positions too when they are learned (RoPE's go into
    # cos/sin tables, which need no gradient)
    ids = B * T * 8 + (T * 8 if cfg.model.pos_encoding == "learned" else 0)
    assert sum(saved.values()) == sum(activations(cfg.resolved_model, s).values()) + ids


# -- memory model -----------------------------------------------------------------------

def _mem(cfg, **kw):
    kw = {"precision": "bf16-mixed", "micro_batch": 2, "seq_len": 1024, **kw}
    return estimate_memory(cfg, make_setup(cfg, **kw))


@pytest.fixture(scope="module")
def cfg350():
    return config_for("350M", "masked")


def test_states_follow_mixed_precision_adamw_and_the_total_is_the_largest_phase(cfg350):
    """bf16-mixed AdamW keeps fp32 weights and grads (4 bytes a parameter each) and two fp32 moments (8);
    FSDP over 4 GPUs holds a quarter of each. The total is the peak phase, whichever it is."""
    n = num_params(cfg350)
    single, fsdp = _mem(cfg350), _mem(cfg350, strategy="fsdp", n_gpus=4)
    assert (single.weights, single.grads, single.optimizer) == (4 * n, 4 * n, 8 * n)
    assert (fsdp.weights, fsdp.grads, fsdp.optimizer) == pytest.approx((n, n, 2 * n), rel=1e-6)
    for kw in [{}, {"activation_checkpointing": True}, {"strategy": "fsdp", "n_gpus": 4}, {"micro_batch": 1}]:
        m = _mem(cfg350, **kw)
        assert m.total == max(m.phases.values()) == m.phases[m.peak_phase]
    assert _mem(cfg350, activation_checkpointing=True).total < single.total


def test_fsdp_divides_states_ddp_does_not(cfg350):
    P = num_params(cfg350)
    single, ddp, fsdp = _mem(cfg350), _mem(cfg350, strategy="ddp", n_gpus=4), _mem(cfg350, strategy="fsdp", n_gpus=4)
    assert single.weights == ddp.weights == P * 4 and single.optimizer == ddp.optimizer == P * 8
    assert fsdp.weights == -(-P // 4) * 4 and fsdp.optimizer == -(-P // 4) * 8
    assert fsdp.detail["grads"] == -(-P // 4) * 4 and ddp.detail["grads"] == P * 4
    assert ddp.detail["ddp_grad_buckets"] == P * 4 and "fsdp_unsharded_params" in fsdp.detail
    assert fsdp.activations == single.activations  # every rank runs a full micro-batch


def test_checkpointing_keeps_only_block_inputs(cfg350):
    m = cfg350.resolved_model
    full, ckpt = _mem(cfg350), _mem(cfg350, activation_checkpointing=True)
    n = 2 * 1024
    head = sum(v for k, v in ckpt.detail.items() if k.startswith("head_"))
    assert ckpt.detail["block_inputs"] == m.n_layers * n * m.d_model * 4  # fp32 residual stream
    assert ckpt.activations == m.n_layers * n * m.d_model * 4 + head < full.activations / 5


def test_autocast_copies_leave_with_checkpointing(cfg350):
    """Checkpointed blocks save no casts: after forward only the tied output projection's bf16 cast remains."""
    m = cfg350.resolved_model
    s = make_setup(cfg350, precision="bf16-mixed", micro_batch=2, seq_len=1024)
    full, ckpt = autocast_copies(m, s, matmul_params(m)), autocast_copies(m, replace(s, activation_checkpointing=True),
                                                                        matmul_params(m))
    assert full == {"forward": 2 * matmul_params(m), "backward": 2 * matmul_params(m)}
    assert ckpt == {"forward": 2 * matmul_params(m), "backward": 2 * m.vocab_size * m.d_model}


def test_cpu_offload_moves_states_to_host(cfg350):
    P = num_params(cfg350)
    on, off = _mem(cfg350, strategy="fsdp", n_gpus=2, cpu_offload=True), _mem(cfg350, strategy="fsdp", n_gpus=2)
    assert on.weights == on.grads == on.optimizer == 0
    assert on.host == -(-P // 2) * (4 + 4 + 8) and off.host == 0
    assert on.total < off.total


def test_precisions_bytes_per_param(cfg350):
    P = num_params(cfg350)
    fp32, mixed, true = (_mem(cfg350, precision=p) for p in ("32-true", "bf16-mixed", "bf16-true"))
    assert fp32.weights == mixed.weights == 2 * true.weights == 4 * P
    assert fp32.optimizer == mixed.optimizer == 2 * true.optimizer == 8 * P
    assert mixed.detail["autocast_weight_copies"] == 2 * matmul_params(cfg350) and fp32.detail["autocast_weight_copies"] == 0
    # bf16-true halves every saved tensor of a block; bf16-mixed keeps LayerNorm inputs in fp32
    s32, s16 = (make_setup(cfg350, precision=p, micro_batch=2, seq_len=1024) for p in ("32-true", "bf16-true"))
    b32, b16 = block_activations(cfg350.resolved_model, s32), block_activations(cfg350.resolved_model, s16)
    assert b32["mlp_hidden"] == 2 * b16["mlp_hidden"] and b32["qkv"] == 2 * b16["qkv"]
    assert fp32.activations > mixed.activations > true.activations


def test_korthikanti_16bit_count_without_masks_and_scores(cfg350):
    """bf16-true, f = 4d, no dropout: 32 d bytes per token per layer (+ LN stats and log-sum-exp)."""
    m = replace(cfg350.resolved_model, pos_encoding="learned")  # Korthikanti et al. count GPT-style blocks
    s = make_setup(cfg350, precision="bf16-true", micro_batch=1, seq_len=1024)
    per_token = sum(block_activations(m, s).values()) / 1024
    assert per_token == 32 * m.d_model + 2 * 8 + 4 * m.n_heads
    # RoPE (the preset default): the flash kernel also keeps the rotated q and k, 2 d more 16-bit values
    rope = sum(block_activations(cfg350.resolved_model, s).values()) / 1024
    assert cfg350.resolved_model.pos_encoding == "rope" and rope == per_token + 2 * m.d_model * 2


def test_math_kernel_keeps_scores_and_activations_scale_with_batch(cfg350):
    m = cfg350.resolved_model
    flash = make_setup(cfg350, precision="bf16-true", micro_batch=2, seq_len=1024)
    math = replace(flash, attention="math")
    diff = sum(block_activations(m, math).values()) - sum(block_activations(m, flash).values())
    # + the T x T scores, - the log-sum-exp, - the rotated q and k (math keeps its scaled copies, counted under qkv)
    assert m.pos_encoding == "rope"
    assert diff == 2 * m.n_heads * 1024 * 1024 * 2 - 2 * 1024 * m.n_heads * 4 - 2 * 1024 * 2 * m.d_model * 2
    a1, a2 = (activations(m, replace(flash, micro_batch=b)) for b in (1, 2))
    rope_tables = a1["head_rope_tables"]  # (T, head_dim) cos/sin, shared by the batch
    assert rope_tables == a2["head_rope_tables"] > 0 and sum(a2.values()) - rope_tables == 2 * (sum(a1.values()) - rope_tables)


def test_gradient_accumulation_keeps_grads_resident():
    cfg = config_for("125M", "masked")  # global batch 128: micro-batch 4 accumulates 32
    s = make_setup(cfg, micro_batch=4, seq_len=1024, precision="bf16-mixed")
    acc, one = estimate_memory(cfg, s), estimate_memory(cfg, replace(s, accumulate=1))
    assert acc.phases["backward"] - one.phases["backward"] == num_params(cfg) * 4


def test_masked_loss_rows_bound():
    cfg = config_for("125M", "masked")
    c = config_for("125M", "continuous")
    s = make_setup(cfg, micro_batch=8, seq_len=1024, precision="32-true")
    masked = estimate_memory(cfg, s).detail["loss_forward"]
    assert masked == pytest.approx(8 * 1024 * (0.5 + 0.5 / 8) * 50304 * 8, rel=1e-3)
    assert estimate_memory(c, make_setup(c, micro_batch=8, seq_len=1024, precision="32-true")).detail[
        "loss_forward"] > masked


def test_checkpoint_sizes():
    cfg = config_for("125M", "masked")
    P = num_params(cfg)
    assert checkpoint_bytes(cfg, "bf16-mixed") == {"weights": 4 * P, "with_optimizer": 12 * P}
    assert checkpoint_bytes(cfg, "bf16-true") == {"weights": 2 * P, "with_optimizer": 6 * P}


# -- verdicts and report ----------------------------------------------------------------

def test_verdicts_single_vs_sharded():
    total = 30 * GiB
    single = verdicts(total, "single", [48, 20])
    assert [v["fits"] for v in single] == [True, False]
    ddp = verdicts(total, "ddp", [48, 20])  # each card judged alone; the 20 GiB card bounds the run
    need = needed_bytes(total) / GiB
    assert [v["fits"] for v in ddp] == [True, False] and [v["bounds_run"] for v in ddp] == [False, True]
    assert [v["headroom_gb"] for v in ddp] == [round(48 - need, 2), round(20 - need, 2)]
    assert report("125M", strategy="ddp", gpu_mem_gb=[48, 0.5])["fits"] is False  # the run: every card must fit
    assert [v["fits"] for v in verdicts(total, "fsdp", [48, 40])] == [True, True]
    assert needed_bytes(total) == int(total * 1.05) + GiB // 2


def test_report_keys_and_fits():
    rep = report("125M", strategy="fsdp", gpu_mem_gb="24,24", micro_batch=1)
    for key in ("params", "flops_per_token", "memory", "checkpoint", "verdicts", "fits", "phases"):
        assert key in rep
    assert rep["settings"]["n_gpus"] == 2 and rep["fits"] is True
    assert set(rep["memory"]) == {"weights", "grads", "optimizer", "activations", "temporaries", "total"}
    assert rep["memory"]["total"] == max(rep["phases"].values())
    json.dumps(rep)  # JSON-able


def test_advise_1p4b_on_48_plus_20():
    adv = advise(config_for("1.4B"), [48, 20])
    rows = {r["strategy"]: r for r in adv["strategies"]}
    assert rows["single"]["bound_gb"] == 48 and rows["ddp"]["bound_gb"] == rows["fsdp"]["bound_gb"] == 20
    for r in rows.values():
        rep = report(config_for("1.4B"), strategy=r["strategy"], n_gpus=r["n_gpus"], precision="bf16-mixed",
                     gpu_mem_gb=[r["bound_gb"]])
        assert r["needed_gb_as_configured"] == rep["verdicts"][0]["needed_gb"]
        if r["change"]:
            assert r["needed_gb"] <= r["bound_gb"]
    # DDP replicates 16 bytes per parameter in bf16-mixed: more than the 20 GB card holds
    assert not rows["ddp"]["fits_as_configured"]
    assert len(adv["summary"]) == 3


def test_advise_when_nothing_fits():
    adv = advise(config_for("1.4B"), [2, 2])
    assert all(r["change"] is None and "does not fit" in r["line"] for r in adv["strategies"])


@pytest.mark.parametrize("kw, field", [
    ({"strategy": "zero3"}, "strategy="), ({"precision": "fp8"}, "precision="), ({"micro_batch": 0}, "micro_batch="),
    ({"seq_len": 4096}, "seq_len="), ({"strategy": "ddp", "cpu_offload": True}, "cpu_offload="),
    ({"strategy": "single", "n_gpus": 2}, "n_gpus="), ({"gpu_mem_gb": "48,x"}, "gpus="),
    ({"gpu_mem_gb": [48, 20, 20], "strategy": "fsdp", "n_gpus": 2}, "gpus="),
])
def test_bad_inputs_name_the_field(kw, field):
    with pytest.raises(ConfigError) as e:
        report("1.4B", **kw)
    assert str(e.value).startswith(field) and "\n" not in str(e.value)


def test_bad_preset_and_objective():
    with pytest.raises(ConfigError, match="^preset="):
        config_for("7B")
    with pytest.raises(ConfigError, match="^objective="):
        config_for("tiny", "flow")


# -- CLI --------------------------------------------------------------------------------

def test_cli_estimate_json_reports_the_built_model():
    r = run_cli("estimate", "--preset", "1.4B", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["params"] == built_params(config_for("1.4B"))
    assert out["memory"]["total"] == max(out["phases"].values())
    assert out["flops_per_token"] == flops_per_token(config_for("1.4B"), 2048)


def test_cli_estimate_table_and_errors():
    from sunfish_lib.cli import main

    assert main(["estimate", "--preset", "tiny", "--gpus", "8,4", "--objective", "masked",
                 "--set", "model.n_layers=2"]) == 0
    r = run_cli("estimate", "--preset", "1.4B", "--strategy", "zero3")
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "error: strategy='zero3' is not allowed; choose one of auto, single, ddp, fsdp"]
