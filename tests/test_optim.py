import math

import pytest

from sunfish_lib.config import get_config
from sunfish_lib.model import Backbone
from sunfish_lib.train.optim import build_optimizer, build_scheduler, categorize, format_groups, lr_factor, param_groups


def test_categories_cover_every_parameter():
    for objective, sampler in (("continuous", "ddim"), ("masked", "random"), ("ar", "ar")):
        cfg = get_config("tiny", {"objective": objective, "sampler": sampler, "embed_dim": 64, "tie_embeddings": False})
        m = Backbone.from_config(cfg)
        cats = {categorize(n)[0] for n, _ in m.named_parameters()}
        assert cats <= {"attn", "mlp", "embed", "norm", "time"}
    assert categorize("blocks.3.attn.qkv.weight") == ("attn", 3)
    assert categorize("blocks.0.mod_table") == ("time", 0)
    assert categorize("ln_f.weight") == ("norm", None)
    with pytest.raises(ValueError, match="no learning-rate category"):
        categorize("mystery.weight")


def test_layerwise_lr_and_weight_decay_rules():
    cfg = get_config("tiny", {"lr": 1e-3, "lr_mult_attn": 2.0, "lr_mult_mlp": 0.5, "lr_mult_embed": 0.1,
                              "lr_depth_decay": 0.5, "weight_decay": 0.1})
    m = Backbone.from_config(cfg)
    groups, info = param_groups(m, cfg.train, cfg.model.n_layers)
    by_name = {n: g for g in groups for n in g["names"]}
    L = cfg.model.n_layers
    assert by_name["blocks.3.attn.qkv.weight"]["lr"] == pytest.approx(1e-3 * 2.0)  # last block: depth factor 1
    assert by_name["blocks.0.attn.qkv.weight"]["lr"] == pytest.approx(1e-3 * 2.0 * 0.5 ** (L - 1))
    assert by_name["blocks.1.mlp.fc1.weight"]["lr"] == pytest.approx(1e-3 * 0.5 * 0.5 ** (L - 2))
    assert by_name["tok_emb.weight"]["lr"] == pytest.approx(1e-4)
    assert by_name["tok_emb.weight"]["weight_decay"] == 0.0
    assert by_name["blocks.0.ln1.weight"]["weight_decay"] == 0.0
    assert by_name["blocks.0.mod_table"]["weight_decay"] == 0.0
    assert by_name["blocks.0.attn.qkv.weight"]["weight_decay"] == 0.1
    assert by_name["time_mod.weight"]["weight_decay"] == 0.1
    assert sum(g.n_params for g in info) == m.num_params()
    table = format_groups(info, cfg.train.lr)
    assert "attn[0] +wd" in table and f"{m.num_params():,}" in table


def test_lr_schedule_warmup_cosine_linear():
    cfg = get_config("tiny", {"max_steps": 1000, "warmup_steps": 100, "min_lr_ratio": 0.1}).train
    assert lr_factor(0, cfg) == pytest.approx(0.01)
    assert lr_factor(99, cfg) == pytest.approx(1.0)
    assert lr_factor(100, cfg) == pytest.approx(1.0)
    assert lr_factor(550, cfg) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(1000, cfg) == pytest.approx(0.1)
    lin = get_config("tiny", {"max_steps": 1000, "warmup_steps": 0, "decay": "linear", "min_lr_ratio": 0.0}).train
    assert lr_factor(250, lin) == pytest.approx(0.75)
    const = get_config("tiny", {"decay": "constant", "warmup_steps": 10}).train
    assert lr_factor(500, const) == 1.0


def test_optimizer_and_scheduler_step_lrs():
    cfg = get_config("tiny", {"lr": 1e-3, "lr_mult_mlp": 0.5, "warmup_steps": 10, "max_steps": 100})
    m = Backbone.from_config(cfg)
    opt = build_optimizer(m, cfg.train, cfg.model.n_layers)
    sched = build_scheduler(opt, cfg.train)
    mlp = next(g for g in opt.param_groups if g["group_name"].startswith("mlp"))
    assert mlp["lr"] == pytest.approx(1e-3 * 0.5 * 0.1)  # step 0 of warmup
    for _ in range(10):
        opt.step()
        sched.step()
    assert mlp["lr"] == pytest.approx(1e-3 * 0.5)
    assert opt.defaults.get("foreach") or opt.defaults.get("fused")
